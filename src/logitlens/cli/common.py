"""What every ``logitlens`` command shares: option groups, the model loader, prompt/target/answer/concept
parsing, the output checks, JSON encoding, exit codes and the Ctrl-C guard.

Each command is a module of this package with ``add_parser(subparsers)`` and ``run(args) -> int``; it
imports from here and nowhere else in ``logitlens.cli`` (the import-linter contract checks it).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from logitlens.errors import LogitLensError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "IMAGE_SUFFIXES",
    "Parser",
    "add_lens_args",
    "add_model_args",
    "add_model_option",
    "add_prompt_args",
    "check_common",
    "OUTPUTS",
    "check_outputs",
    "json_ready",
    "load",
    "main_rank",
    "make_concepts",
    "parse_max_memory",
    "rank_placement",
    "one_line_warning",
    "parse_concepts",
    "parse_prompts_file",
    "parse_targets",
    "preflight",
    "parse_positions",
    "quiet_transformers",
    "read_inputs",
    "read_prompts",
    "sigint_deferred",
    "write_outputs",
]

EXIT_BAD_INPUT = 2


EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``LogitLensError``, exit status 2) and a "did you mean" for a
    mistyped option or command."""

    def error(self, message: str):
        raise LogitLensError(message + _suggestion(self, message))


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of ``parser`` and of its sub-commands' parsers."""
    out: list[str] = []
    for action in parser._actions:
        out += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _option_strings(sub)
    return sorted(set(out))


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """ "; did you mean --top-k?" for an unknown option or an invalid choice close to a known one."""
    import difflib
    import re

    if message.startswith("unrecognized arguments:"):
        known = _option_strings(parser)
        for word in message.split(":", 1)[1].split():
            if not word.startswith("-"):
                continue
            name = word.split("=", 1)[0]
            dashed = "--" + name.lstrip("-").replace("_", "-")
            close = [dashed] if dashed in known else difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                return f"; did you mean {close[0]}?"
        return ""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found:
        choices = re.findall(r"'([^']*)'", found.group(2)) or [c.strip() for c in found.group(2).split(",")]
        close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.5)
        if close:
            return f"; did you mean {close[0]}?"
    return ""


def parse_positions(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give comma-separated integers such as -1 or 0,3,-1, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("it is empty: give integers such as -1")
    return values


def add_model_option(
    p: argparse.ArgumentParser, *, several: str | None = None, required: bool = False
) -> None:
    """``--model``: one model (default: the embedded default model), or, with ``several`` (the help's
    reason to repeat it), one per use of the option."""
    what = "'default' (SmolLM2-135M), a HF id or a local path"
    if several is None:
        p.add_argument("--model", default="default", help=what)
    else:
        p.add_argument("--model", action="append", default=[], required=required, help=f"{what}; {several}")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16", "fp32", "bf16", "fp16", "auto"],
        help="weights dtype (statistics are fp32 either way)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps or auto (default: cpu)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own Python code to run")
    p.add_argument(
        "--device-map",
        choices=["auto", "balanced", "balanced_low_0", "sequential"],
        help="spread a big model over the GPUs, then CPU, then disk (accelerate); rows meet on the unembedding's device",
    )
    p.add_argument(
        "--max-memory", help="with --device-map: per-device limits, e.g. '0=20GiB,1=20GiB,cpu=60GiB'"
    )
    p.add_argument("--offload-folder", help="with --device-map: where weights offloaded to disk go")
    p.add_argument(
        "--quantize",
        choices=["int8", "bnb-8bit", "bnb-4bit"],
        help="load quantised weights: int8 (torchao weight-only, CPU or GPU), bnb-8bit / bnb-4bit (bitsandbytes, CUDA)",
    )
    p.add_argument(
        "--backend",
        default="hooks",
        choices=["hooks", "nnsight"],
        help="how rows are read: forward hooks (default) or nnsight traces (pip install 'logitlens[remote]')",
    )


def add_lens_args(p: argparse.ArgumentParser, per_model: bool = False) -> None:
    """--tuned-lens DIR (one per --model with ``per_model``, '-' for the logit lens) and --no-lens-check."""
    p.add_argument(
        "--tuned-lens",
        action="append" if per_model else "store",
        metavar="DIR",
        help="one per --model, in order: a tuned lens folder, or - for the plain logit lens"
        if per_model
        else "decode through the tuned lens in DIR (config.json + translators.safetensors, or the "
        "tuned-lens package's params.pt)",
    )
    p.add_argument(
        "--no-lens-check",
        action="store_true",
        help="use a tuned lens whose unembedding hash differs from the model's (blocks and d_model are "
        "always checked)",
    )


def add_prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", type=int, default=10, help="tokens kept per cell (default 10)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        help="a token to track (its first token is used); repeat for several; "
        "'a|b' sums the mass of several tokens",
    )
    p.add_argument(
        "--positions",
        type=parse_positions,
        default=None,
        help="decode only these positions, e.g. --positions=-1 (negative counts from the end)",
    )
    p.add_argument(
        "--truncate", action="store_true", help="keep the last tokens of a prompt longer than the context"
    )
    p.add_argument(
        "--chat",
        action="store_true",
        help="wrap each prompt in the tokenizer's chat template (instruct models); the lens reads the "
        "assistant's first position",
    )
    p.add_argument(
        "--bos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--bos adds a leading BOS token, --no-bos removes it (default: as the tokenizer does)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    p.add_argument(
        "--memory-budget",
        type=int,
        default=512,
        metavar="MB",
        help="memory for decoding intermediates, MB (default 512); larger is faster up to a point",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="N",
        help="the terminal grid shows N positions (default: as many as fit the width)",
    )
    p.add_argument(
        "--window-start",
        type=int,
        default=None,
        metavar="K",
        help="the terminal grid starts at position K (negative counts from the end; default: it shows the "
        "last positions)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print every top-k rank kept at the last position (default: the ranks that fit one table)",
    )
    p.add_argument("--html", type=Path, help="write a self-contained HTML report")
    p.add_argument("--png", type=Path, help="write a static heatmap image of the first prompt")


def read_prompts(args) -> list[str]:
    """The prompts of the command line and ``--prompts-file`` (their answers: ``read_inputs``)."""
    return read_inputs(args)[0]


def read_inputs(args) -> tuple[list[str], list[str | None] | None]:
    """The prompts of the command line and ``--prompts-file``, and their answers (None: no answers given).

    A prompts file holds one prompt per line, or ``prompt<TAB>answer`` lines, or JSON Lines
    (``{"prompt": ..., "answer": ...}``, the answer optional).
    """
    prompts: list[str] = list(args.prompts)
    answers: list[str | None] = [None] * len(prompts)
    answer = getattr(args, "answer", None)
    if answer is not None:
        if len(prompts) != 1 or getattr(args, "prompts_file", None):
            raise LogitLensError(
                "--answer goes with one PROMPT; for several, give --prompts-file with 'prompt<TAB>answer' "
                "lines or JSON Lines"
            )
        answers = [answer]
    if getattr(args, "prompts_file", None):
        try:
            if args.prompts_file == "-":
                text = sys.stdin.read()
            else:
                text = Path(args.prompts_file).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise LogitLensError(
                f"cannot read prompts file '{args.prompts_file}': it is not UTF-8 text"
            ) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise LogitLensError(f"cannot read prompts file '{args.prompts_file}': {reason}") from None
        for p, a in parse_prompts_file(text, args.prompts_file):
            prompts.append(p)
            answers.append(a)
    if not prompts:
        raise LogitLensError("no prompt given: pass PROMPT text, or --prompts-file FILE (or - for stdin)")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise LogitLensError(f"prompt {i + 1} is empty: give some text")
    return prompts, (answers if any(a is not None for a in answers) else None)


def parse_prompts_file(text: str, name: str) -> list[tuple[str, str | None]]:
    """(prompt, answer or None) per non-empty line: JSON Lines, ``prompt<TAB>answer`` or plain text."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if lines and lines[0][1].lstrip().startswith("{"):
        import json

        out: list[tuple[str, str | None]] = []
        for n, line in lines:
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LogitLensError(f"{name} line {n} is not valid JSON: {exc.msg}") from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise LogitLensError(f'{name} line {n}: give an object with a "prompt" string')
            answer = item.get("answer")
            if answer is not None and not isinstance(answer, str):
                raise LogitLensError(f'{name} line {n}: "answer" must be a string')
            out.append((item["prompt"], answer))
        return out
    if any("\t" in line for _, line in lines):
        out = []
        for n, line in lines:
            prompt, tab, answer = line.partition("\t")
            if not tab or answer == "":
                raise LogitLensError(f"{name} line {n}: give 'prompt<TAB>answer' on every line")
            out.append((prompt, answer))
        return out
    return [(line, None) for _, line in lines]


def parse_concepts(raw: list[str]) -> list[tuple[str | None, list[str]]]:
    """``--concept [NAME=]WORD,WORD,...`` -> (name or None, words) each, before any model is loaded."""
    out = []
    for text in raw:
        head, eq, tail = text.partition("=")
        name, words_text = (head.strip(), tail) if eq and "," not in head else (None, text)
        words = [w.strip() for w in words_text.split(",") if w.strip()]
        if name == "" or not words:
            raise LogitLensError(
                f"--concept {text!r} has no {'name before =' if name == '' else 'words'}: give comma-separated "
                "words such as 'Paris,Parigi' or 'en=mountain'"
            )
        out.append((name, words))
    return out


def make_concepts(lens, specs: list[tuple[str | None, list[str]]]) -> list:
    """The concepts of ``--concept`` with the loaded model's tokenizer; one line on stderr each."""
    from logitlens.tasks.concepts import concept

    out = []
    for name, words in specs:
        c = concept(lens, words, name=name)
        print(f"logitlens: {c.line()}", file=sys.stderr)
        out.append(c)
    return out


def parse_targets(raw: list) -> list:
    out = []
    for t in raw:
        if not isinstance(t, str):  # a ready Target (a --concept), passed on as it is
            out.append(t)
            continue
        if t == "" or all(part == "" for part in t.split("|")):
            raise LogitLensError("--target is empty: give a word such as ' Paris' (mind the leading space)")
        out.append(tuple(p for p in t.split("|") if p) if "|" in t else t)
    return out


def check_common(args) -> None:
    if args.top_k < 1:
        raise LogitLensError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise LogitLensError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.memory_budget < 1:
        raise LogitLensError(f"--memory-budget must be at least 1 (MB), got {args.memory_budget}")
    if args.window is not None and args.window < 1:
        raise LogitLensError(f"--window must be at least 1 (positions shown), got {args.window}")


def load(model: str, args, tuned_lens=None, prompts: list | None = None):
    """Load ``model`` with the command's loading options. With ``prompts``, what needs only the config and
    the tokenizer is refused before the weights load (``preflight``): --top-k past the vocabulary,
    --positions outside a prompt, a prompt longer than the context without --truncate."""
    if isinstance(tuned_lens, str) and tuned_lens != "-" and not Path(tuned_lens).is_dir():
        raise LogitLensError(
            f"--tuned-lens {tuned_lens}: the folder does not exist; give the folder train-lens wrote"
        )
    max_memory = parse_max_memory(getattr(args, "max_memory", None))  # a bad value fails before any loading
    if model != "default":  # before torch is imported: a bad name answers in a second
        from logitlens.model.sources import check_source

        check_source(model)
    # Imports only (seconds, whatever the model): a Ctrl-C inside torch's C++ start-up or the registrations
    # transformers makes on import would abort the process (SIGABRT) instead of raising KeyboardInterrupt.
    with sigint_deferred():
        import torch  # noqa: F401

        quiet_transformers()  # here, not in main: commands that load no model never import transformers
        from logitlens.model.loading import import_transformers

        import_transformers(getattr(args, "quantize", None))  # torchao only when --quantize asks for it
        with contextlib.suppress(ImportError):
            from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel  # noqa: F401
        from logitlens.engine.lens import LogitLens

    if model == "default":
        from logitlens.model import default_model

        if not default_model.is_converted():  # once per machine: our one line instead of four bars
            print(
                f"logitlens: converting the default model {default_model.DEFAULT_NAME} from its GGUF file "
                f"into {default_model.cache_dir()} (once; about a minute)",
                file=sys.stderr,
            )
            default_model.model_dir(quiet=True)
    device, max_memory = rank_placement(args.device, getattr(args, "device_map", None), max_memory)
    return LogitLens.from_pretrained(
        model,
        dtype=args.dtype,
        device=device,
        trust_remote_code=args.trust_remote_code,
        budget_bytes=args.memory_budget * 2**20,
        backend="nnsight" if getattr(args, "remote", False) else args.backend,
        load_weights=not getattr(args, "remote", False),  # remote runs: the weights stay on the server
        tuned_lens=tuned_lens,  # a folder or a TunedLens; None: the logit lens
        check_hash=not getattr(args, "no_lens_check", False),
        device_map=getattr(args, "device_map", None),
        max_memory=max_memory,
        offload_folder=getattr(args, "offload_folder", None),
        quantization=getattr(args, "quantize", None),
        preflight=None if prompts is None else preflight(args, prompts),
    )


def preflight(args, prompts: list):
    """``fn(config, tokenizer)`` refusing, before the weights load, what the prompts and options cannot do
    with this model: --top-k past its vocabulary, --positions outside a prompt, an over-long prompt."""

    def check(config, tokenizer) -> None:
        from logitlens.engine.inputs import PromptInputs, context_length, resolve_positions

        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        vocab = getattr(text, "vocab_size", None)
        top_k = getattr(args, "top_k", None)
        if vocab and top_k is not None and top_k > vocab:
            raise LogitLensError(f"--top-k must be at most the vocabulary size {vocab}, got {top_k}")
        prep = PromptInputs(tokenizer, vocab_size=vocab or 2**31, context_length=context_length(config))
        with warnings.catch_warnings():  # the run itself warns (truncation, repeated positions) once
            warnings.simplefilter("ignore")
            ids, _ = prep.encode(
                prompts, chat=getattr(args, "chat", False), prepend_bos=getattr(args, "bos", None)
            )
            ids = prep.check_ids(ids, getattr(args, "truncate", False))
            if getattr(args, "positions", None) is not None:
                resolve_positions(ids, args.positions)

    return check


def rank_placement(device: str | None, device_map, max_memory: dict | None) -> tuple[str | None, dict | None]:
    """Under torchrun: --device cuda (or auto) is this rank's GPU, ``cuda:LOCAL_RANK``; with --device-map,
    the map may use only this rank's share of its node's GPUs (the others get 0 bytes in max_memory).
    A single process: both as given."""
    from logitlens.tasks import distributed

    group = distributed.from_env()
    if not group.distributed:
        return device, max_memory
    if device_map is None:
        return distributed.local_device(device), max_memory
    import torch

    if not torch.cuda.is_available():
        return device, max_memory
    from accelerate.utils import get_max_memory

    limits = get_max_memory(dict(max_memory) if max_memory else None)
    share = distributed.node_gpus(group, torch.cuda.device_count())
    for gpu in range(torch.cuda.device_count()):
        if gpu not in share:
            limits[gpu] = 0
    return device, limits


def main_rank() -> bool:
    """True in a single process and on rank 0 of a torchrun launch: the process that prints and writes."""
    from logitlens.tasks import distributed

    return distributed.current().is_main


def parse_max_memory(text: str | None) -> dict | None:
    """'0=20GiB,cpu=60GiB' -> {0: "20GiB", "cpu": "60GiB"} (accelerate's max_memory)."""
    if text is None:
        return None
    out: dict = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key.strip() or not value.strip():
            raise LogitLensError(
                f"--max-memory {text!r}: expected DEVICE=SIZE pairs separated by commas, e.g. '0=20GiB,cpu=60GiB'"
            )
        key = key.strip()
        out[int(key) if key.isdigit() else key] = value.strip()
    return out


IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


# The output options of run and compare: (option, the suffixes it takes). Each picks its format by suffix.
OUTPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("json", (".json", ".parquet")),
    ("html", (".html", ".htm")),
    ("png", IMAGE_SUFFIXES),
    ("trajectory", (*IMAGE_SUFFIXES, ".html", ".htm")),
)


def check_outputs(args, outputs: tuple[tuple[str, tuple[str, ...]], ...] = OUTPUTS) -> None:
    """Before any model is loaded: every output can be written (suffix, folder, a probe file created and
    removed there), so that a run never ends in a failed write. --quiet with nothing to write is refused."""
    from logitlens.core.files import check_writable

    given = []
    for name, suffixes in outputs:
        path = getattr(args, name, None)
        if path is not None:
            check_writable(path, f"--{name}", suffixes)
            given.append(name)
    if getattr(args, "quiet", False) and not given and getattr(args, "out", None) is None:
        names = ", ".join(f"--{name}" for name, _ in outputs) + (" or --out" if hasattr(args, "out") else "")
        raise LogitLensError(
            f"--quiet with no output file would show and write nothing: give {names}, or drop --quiet"
        )


def write_outputs(writers: list[tuple[str, Callable[[], Path]]]) -> None:
    """Call each (option, writer) in order, saying "wrote F" for each file written; a late failure (a full
    disk) does not stop the others: every one is tried, then the first failure is raised, naming it."""
    failed: list[str] = []
    for option, write in writers:
        try:
            print(f"wrote {write()}", file=sys.stderr)
        except LogitLensError as exc:
            failed.append(f"{option}: {exc}")
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise LogitLensError(failed[0] + more)


@contextlib.contextmanager
def sigint_deferred():
    """Hold a Ctrl-C until the block ends, then raise it: KeyboardInterrupt raised inside a C extension's
    initialisation (torch's pybind11 modules) terminates the process instead of unwinding."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"logitlens: warning: {message}", file=sys.stderr)


def quiet_transformers() -> None:
    """The command prints its own output: no progress bars or info logs from transformers."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def json_ready(value):
    """``value`` with NaN/inf as None, tuples as lists and numpy scalars as Python numbers: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return json_ready(value.item())
    return value
