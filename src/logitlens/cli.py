"""The ``logitlens`` command.

    logitlens run "The Eiffel Tower is in the city of" --target " Paris"
    logitlens run --prompts-file prompts.txt --positions=-1 --json out.json
    logitlens compare --model default --model ./my-finetune "The capital of France is" --html cmp.html
    echo "Hello" | logitlens run --prompts-file -

Bad input exits with status 2 and one line on stderr saying what was wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import warnings
from pathlib import Path

from .cli_attribute import add_attribute_parser, cmd_attribute
from .cli_corpus import add_eval_parser, add_stream_args, check_stream_args, cmd_eval, run_streamed
from .cli_train import add_train_parser, cmd_train
from .errors import LogitLensError

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, our exit status
        raise LogitLensError(message)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("logitlens")
    except PackageNotFoundError:  # running from a source tree
        from . import __version__

        return __version__


def _positions(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give comma-separated integers such as -1 or 0,3,-1, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("it is empty: give integers such as -1")
    return values


def _add_model_args(p: argparse.ArgumentParser) -> None:
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


def _add_lens_args(p: argparse.ArgumentParser, per_model: bool = False) -> None:
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


def _add_prompt_args(p: argparse.ArgumentParser) -> None:
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
        type=_positions,
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
    p.add_argument("--html", type=Path, help="write a self-contained HTML report")
    p.add_argument("--png", type=Path, help="write a static heatmap image of the first prompt")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="logitlens", description="The logit lens: what every layer predicts.")
    parser.add_argument("--version", action="version", version=f"logitlens {_package_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="run the lens on prompts and show the result")
    run.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text (several allowed)")
    run.add_argument("--model", default="default", help="'default' (SmolLM2-135M), a HF id or a local path")
    run.add_argument(
        "--prompts-file",
        help="one prompt per line, or 'prompt<TAB>answer' lines, or JSON Lines "
        '({"prompt": ..., "answer": ...}); \'-\' reads standard input',
    )
    run.add_argument(
        "--answer",
        help="the answer to PROMPT (e.g. ' Paris'): every token of it is scored, teacher-forced",
    )
    run.add_argument(
        "--concept",
        action="append",
        default=[],
        metavar="[NAME=]WORDS",
        help="track a concept: comma-separated words such as 'Paris,Parigi' or 'en=mountain'; the summed "
        "mass of the first token of each word's variants (leading space, capital); repeat for several",
    )
    run.add_argument("--json", type=Path, help="save the result as JSON (logitlens.LensResult.load reads it)")
    run.add_argument("--quiet", action="store_true", help="do not print the tables")
    run.add_argument(
        "--remote",
        nargs="?",
        const=True,
        default=False,
        choices=["local"],
        metavar="local",
        help="run the whole lens on NDIF through nnsight (API key: NDIF_API_KEY or `nnsight login`); "
        "'--remote local' simulates the request here. Only the statistics come back; no weights load here",
    )
    _add_prompt_args(run)
    _add_model_args(run)
    _add_lens_args(run)
    add_stream_args(run)  # --out F.parquet|.jsonl, --resume, --no-progress

    cmp = sub.add_parser("compare", help="run two or more models on one prompt and put them side by side")
    cmp.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text (several allowed)")
    cmp.add_argument("--prompts-file", help="as for `run`: prompts, 'prompt<TAB>answer' lines or JSON Lines")
    cmp.add_argument(
        "--json",
        type=Path,
        help="save every model's result: F.json becomes F-<model>.json (or .parquet), one file per model",
    )
    cmp.add_argument(
        "--model", action="append", required=True, help="a model ('default', HF id or path); repeat"
    )
    cmp.add_argument("--quiet", action="store_true", help="do not print the tables")
    _add_prompt_args(cmp)
    _add_model_args(cmp)
    _add_lens_args(cmp, per_model=True)
    add_eval_parser(sub)
    add_attribute_parser(sub)
    add_train_parser(sub)
    return parser


def _read_prompts(args) -> list[str]:
    """The prompts of the command line and ``--prompts-file`` (their answers: ``_read_inputs``)."""
    return _read_inputs(args)[0]


def _read_inputs(args) -> tuple[list[str], list[str | None] | None]:
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
        for p, a in _parse_prompts_file(text, args.prompts_file):
            prompts.append(p)
            answers.append(a)
    if not prompts:
        raise LogitLensError("no prompt given: pass PROMPT text, or --prompts-file FILE (or - for stdin)")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise LogitLensError(f"prompt {i + 1} is empty: give some text")
    return prompts, (answers if any(a is not None for a in answers) else None)


def _parse_prompts_file(text: str, name: str) -> list[tuple[str, str | None]]:
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


def _parse_concepts(raw: list[str]) -> list[tuple[str | None, list[str]]]:
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


def _make_concepts(lens, specs: list[tuple[str | None, list[str]]]) -> list:
    """The concepts of ``--concept`` with the loaded model's tokenizer; one line on stderr each."""
    from .concepts import concept

    out = []
    for name, words in specs:
        c = concept(lens, words, name=name)
        print(f"logitlens: {c.line()}", file=sys.stderr)
        out.append(c)
    return out


def _parse_targets(raw: list) -> list:
    out = []
    for t in raw:
        if not isinstance(t, str):  # a ready Target (a --concept), passed on as it is
            out.append(t)
            continue
        if t == "" or all(part == "" for part in t.split("|")):
            raise LogitLensError("--target is empty: give a word such as ' Paris' (mind the leading space)")
        out.append(tuple(p for p in t.split("|") if p) if "|" in t else t)
    return out


def _check_common(args) -> None:
    if args.top_k < 1:
        raise LogitLensError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise LogitLensError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.memory_budget < 1:
        raise LogitLensError(f"--memory-budget must be at least 1 (MB), got {args.memory_budget}")
    if args.window is not None and args.window < 1:
        raise LogitLensError(f"--window must be at least 1 (positions shown), got {args.window}")


def _load(model: str, args, tuned_lens=None):
    max_memory = _max_memory(getattr(args, "max_memory", None))  # a bad value fails before any loading
    if model != "default":  # before torch is imported: a bad name answers in a second
        from .sources import check_source

        check_source(model)
    # Imports only (seconds, whatever the model): a Ctrl-C inside torch's C++ start-up or the registrations
    # transformers makes on import would abort the process (SIGABRT) instead of raising KeyboardInterrupt.
    with _sigint_deferred():
        import torch  # noqa: F401

        _quiet_transformers()  # here, not in main: commands that load no model never import transformers
        with contextlib.suppress(ImportError):
            from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel  # noqa: F401
        from .lens import LogitLens

    return LogitLens.from_pretrained(
        model,
        dtype=args.dtype,
        device=args.device,
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
    )


def _max_memory(text: str | None) -> dict | None:
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


def _cmd_run(args) -> int:
    _check_outputs(args)
    prompts, answers = _read_inputs(args)
    targets = _parse_targets(args.target)
    concept_specs = _parse_concepts(args.concept)
    _check_common(args)
    check_stream_args(args)
    if args.remote and args.tuned_lens:
        raise LogitLensError("--tuned-lens decodes here: leave out --remote (remote runs use the logit lens)")
    if args.remote is True:  # before loading anything: a missing key or server fails at once
        from .remote import require_ndif

        require_ndif()
    lens = _load(args.model, args, args.tuned_lens)
    vocab = lens.decoder.vocab_size
    if args.top_k > vocab:
        raise LogitLensError(f"--top-k must be at most the vocabulary size {vocab}, got {args.top_k}")
    if concept_specs:
        concepts = _make_concepts(lens, concept_specs)
        targets += concepts
        args.target = [*args.target, *concepts]  # a streamed run (--out) takes its targets from here
    if args.out:
        return run_streamed(lens, prompts, args)
    res = _run_with_progress(
        lens,
        prompts,
        top_k=args.top_k,
        targets=targets,
        positions=args.positions,
        truncate=args.truncate,
        batch_size=args.batch_size,
        remote=args.remote,
        answers=answers,
        chat=args.chat,
        prepend_bos=args.bos,
    )
    if not args.quiet:
        from .views.terminal import print_result

        print_result(res, window=args.window, window_start=args.window_start)
    _write_outputs(res, args)
    return 0


PROGRESS_AFTER_S = 2.0  # a run that takes longer shows a progress bar on stderr (a terminal only)


def _run_with_progress(lens, prompts, /, **kwargs):
    """``lens.run`` with a rich progress bar on stderr (prompts done, tokens/s, time left) once the run has
    taken ``PROGRESS_AFTER_S``; plain ``lens.run`` when stderr is not a terminal."""
    import inspect
    import time

    accepted = inspect.signature(lens.iter_run).parameters
    if not sys.stderr.isatty() or any(k not in accepted for k in kwargs):
        return lens.run(prompts, **kwargs)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .result import LensResult

    start, tokens, parts = time.perf_counter(), 0, []
    bar = Progress(
        TextColumn("prompts"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = bar.add_task("run", total=len(prompts), rate="")
    try:
        for part in lens.iter_run(prompts, **kwargs):
            parts.append(part)
            tokens += sum(len(ids) for ids in part.input_ids)
            elapsed = time.perf_counter() - start
            bar.update(task, advance=part.n_prompts, rate=f"{tokens / max(elapsed, 1e-9):,.0f} tokens/s")
            if elapsed > PROGRESS_AFTER_S and not bar.live.is_started:
                bar.start()
    finally:
        bar.stop()
    res = parts[0] if len(parts) == 1 else LensResult.concat(parts)
    order = sorted(range(res.n_prompts), key=res.prompt_index.__getitem__)
    return res if order == list(range(res.n_prompts)) else res.select(order)


def _cmd_compare(args) -> int:
    _check_outputs(args)
    prompts, answers = _read_inputs(args)
    targets = _parse_targets(args.target)
    _check_common(args)
    if len(args.model) < 2:
        raise LogitLensError("compare needs at least two models: repeat --model")
    tuned = _compare_tuned(args)  # per --model: a TunedLens or None (every folder read before any model)
    results, names = [], []
    loaded: dict = {}  # a model named again (e.g. with another lens) is loaded once
    for m, name in enumerate(args.model):
        lens = _load(name, args, tuned[m]) if name not in loaded else _rewrap(loaded[name], tuned[m], args)
        loaded.pop(name, None)
        if name in args.model[m + 1 :]:
            loaded[name] = lens
        top_k = min(args.top_k, lens.decoder.vocab_size)
        results.append(
            lens.run(
                prompts,
                top_k=top_k,
                targets=targets,
                positions=args.positions,
                truncate=args.truncate,
                batch_size=args.batch_size,
                answers=answers,
                chat=args.chat,
                prepend_bos=args.bos,
            )
        )
        names.append(f"{lens.name} ({lens.lens.name})" if args.tuned_lens else lens.name)  # "M (tuned)"
    if not args.quiet:
        from rich.console import Console

        from .views.terminal import check_window, render

        for res in results:
            check_window(res, args.window, args.window_start)
        console = Console()
        window = {"window": args.window, "window_start": args.window_start}
        for i in range(len(prompts)):
            for name, res in zip(names, results, strict=True):
                console.rule(f"[bold]{name}" + (f" · prompt {i + 1}" if len(prompts) > 1 else ""))
                console.print(render(res, i, **window))
            console.print(_depth_table(names, results, i))
    _write_compare_outputs(results, names, args)
    return 0


def _compare_tuned(args) -> list:
    """Each --model's tuned lens (None: the logit lens): one --tuned-lens per --model, in order, '-' for
    none; every folder is read (and refused, in one line) before any model loads."""
    given = args.tuned_lens or []
    if given and len(given) != len(args.model):
        raise LogitLensError(
            f"got {len(given)} --tuned-lens for {len(args.model)} --model: give one per --model, in order, "
            "'-' for the plain logit lens (e.g. --model M --model M --tuned-lens - --tuned-lens DIR)"
        )
    if not any(t != "-" for t in given):
        return [None] * len(args.model)
    with _sigint_deferred():
        from .tuned import TunedLens
    return [None if t == "-" else TunedLens.load(t) for t in given]


def _rewrap(base, tuned, args):
    """A LogitLens over ``base``'s already-loaded model, decoding through ``tuned`` (checked against it)."""
    from .lens import LogitLens

    return LogitLens(
        base.model,
        base.tokenizer,
        name=base.name,
        budget_bytes=base.budget_bytes,
        backend=base.backend,
        tuned_lens=tuned,
        check_hash=not args.no_lens_check,
    )


def _write_compare_outputs(results, names, args) -> None:
    """One result file per model (F-<model>.json), one HTML page of every prompt, the side-by-side image of
    the first prompt; "wrote F" as each is written."""
    if args.json:
        from .views.model import distinct_names

        for name, res in zip(distinct_names(results, names), results, strict=True):
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
            path = args.json.with_name(f"{args.json.stem}-{slug}{args.json.suffix}")
            print(f"wrote {res.save(path)}", file=sys.stderr)
    if args.html:
        from .views.report import write_compare_html

        every = list(range(results[0].n_prompts))
        print(f"wrote {write_compare_html(results, names, args.html, every)}", file=sys.stderr)
    if args.png:
        from .views.png import write_compare_png

        print(f"wrote {write_compare_png(results, names, args.png)}", file=sys.stderr)


def _depth_table(names, results, prompt: int = 0):
    """Where each model settles on its answer, on a shared relative-depth scale 0..1 (from the row specs)."""
    from rich.table import Table

    from .views.model import prompt_summary

    table = Table(title="final top-1 and where it settles (relative depth 0 = embeddings, 1 = output)")
    for col in ("model", "rows", "final top-1", "p", "stays top-1 from", "relative depth"):
        table.add_column(col)
    for name, res in zip(names, results, strict=True):
        s = prompt_summary(res, prompt)
        table.add_row(
            name,
            str(res.n_rows),
            s.final_top1,
            f"{s.final_prob:.3f}",
            s.first_stable_label,
            f"{s.first_stable_depth:.2f}",
        )
    return table


_IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def _check_outputs(args) -> None:
    """Before any model is loaded: every output's suffix, folder and kind, so that a run never ends in a
    failed write. Also: --quiet with nothing to write would do nothing."""
    outputs = [
        ("--json", getattr(args, "json", None), (".json", ".parquet")),
        ("--html", getattr(args, "html", None), (".html", ".htm")),
        ("--png", getattr(args, "png", None), _IMAGE_SUFFIXES),
    ]
    for option, path, suffixes in outputs:
        if path is None:
            continue
        if path.is_dir():
            raise LogitLensError(f"{option} {path} is a directory: give a file name")
        if path.suffix.lower() not in suffixes:
            raise LogitLensError(
                f"{option} {path}: the file name must end in {', '.join(suffixes)} (the suffix picks the format)"
            )
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise LogitLensError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if getattr(args, "quiet", False) and not any(path for _, path, _ in outputs):
        warnings.warn(
            "--quiet with no --json, --html or --png: nothing will be shown or written", stacklevel=2
        )


def _write_outputs(res, args) -> None:
    """Write each asked-for file, whole or not at all, saying "wrote X" as each one is written."""
    if getattr(args, "json", None):
        print(f"wrote {res.save(args.json)}", file=sys.stderr)
    if args.html:
        from .views.report import write_html

        print(f"wrote {write_html(res, args.html)}", file=sys.stderr)
    if args.png:
        from .views.png import write_png

        print(f"wrote {write_png(res, args.png)}", file=sys.stderr)


@contextlib.contextmanager
def _sigint_deferred():
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


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"logitlens: warning: {message}", file=sys.stderr)


def _quiet_transformers() -> None:
    """The command prints its own output: no progress bars or info logs from transformers."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    from .loading import import_quantizers

    import_quantizers()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        with warnings.catch_warnings():
            warnings.simplefilter("default", UserWarning)
            warnings.showwarning = _one_line_warning
            commands = {
                "run": _cmd_run,
                "compare": _cmd_compare,
                "eval": cmd_eval,
                "attribute": cmd_attribute,
                "train-lens": cmd_train,
            }
            return commands[args.command](args)
    except LogitLensError as exc:
        print(f"logitlens: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("logitlens: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
