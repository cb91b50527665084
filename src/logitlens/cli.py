"""The ``logitlens`` command.

    logitlens run "The Eiffel Tower is in the city of" --target " Paris"
    logitlens run --prompts-file prompts.txt --positions=-1 --json out.json
    logitlens compare --model default --model ./my-finetune "The capital of France is" --html cmp.html
    echo "Hello" | logitlens run --prompts-file -

Bad input exits with status 2 and one line on stderr saying what was wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .errors import LogitLensError

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, our exit status
        raise LogitLensError(message)


def _positions(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--positions takes comma-separated integers such as -1 or 0,3,-1, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("--positions is empty: give integers such as -1")
    return values


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16", "auto"],
        help="weights dtype (statistics are fp32 either way)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps or auto (default: cpu)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own Python code to run")


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
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    p.add_argument(
        "--memory-budget",
        type=int,
        default=512,
        metavar="MB",
        help="memory for decoding intermediates, MB (default 512); larger is faster up to a point",
    )
    p.add_argument("--html", type=Path, help="write a self-contained HTML report")
    p.add_argument("--png", type=Path, help="write a static heatmap image of the first prompt")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="logitlens", description="The logit lens: what every layer predicts.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="run the lens on prompts and show the result")
    run.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text (several allowed)")
    run.add_argument("--model", default="default", help="'default' (SmolLM2-135M), a HF id or a local path")
    run.add_argument("--prompts-file", help="one prompt per line; '-' reads standard input")
    run.add_argument("--json", type=Path, help="save the result as JSON (logitlens.LensResult.load reads it)")
    run.add_argument("--quiet", action="store_true", help="do not print the tables")
    _add_prompt_args(run)
    _add_model_args(run)

    cmp = sub.add_parser("compare", help="run two or more models on one prompt and put them side by side")
    cmp.add_argument("prompt", metavar="PROMPT", help="the prompt text")
    cmp.add_argument(
        "--model", action="append", required=True, help="a model ('default', HF id or path); repeat"
    )
    cmp.add_argument("--quiet", action="store_true", help="do not print the tables")
    _add_prompt_args(cmp)
    _add_model_args(cmp)
    return parser


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        try:
            if args.prompts_file == "-":
                text = sys.stdin.read()
            else:
                text = Path(args.prompts_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise LogitLensError(f"cannot read prompts file '{args.prompts_file}': {reason}") from None
        prompts += [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise LogitLensError("no prompt given: pass PROMPT text, or --prompts-file FILE (or - for stdin)")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise LogitLensError(f"prompt {i + 1} is empty: give some text")
    return prompts


def _parse_targets(raw: list[str]) -> list:
    out = []
    for t in raw:
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


def _load(model: str, args):
    from .lens import LogitLens

    return LogitLens.from_pretrained(
        model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        budget_bytes=args.memory_budget * 2**20,
    )


def _cmd_run(args) -> int:
    prompts = _read_prompts(args)
    targets = _parse_targets(args.target)
    _check_common(args)
    lens = _load(args.model, args)
    vocab = lens.decoder.vocab_size
    if args.top_k > vocab:
        raise LogitLensError(f"--top-k must be at most the vocabulary size {vocab}, got {args.top_k}")
    res = lens.run(
        prompts,
        top_k=args.top_k,
        targets=targets,
        positions=args.positions,
        truncate=args.truncate,
        batch_size=args.batch_size,
    )
    if not args.quiet:
        from .views.terminal import print_result

        print_result(res)
    _write_outputs(res, args)
    return 0


def _cmd_compare(args) -> int:
    prompts = _read_prompts(argparse.Namespace(prompts=[args.prompt], prompts_file=None))
    targets = _parse_targets(args.target)
    _check_common(args)
    if len(args.model) < 2:
        raise LogitLensError("compare needs at least two models: repeat --model")
    if args.png:
        raise LogitLensError("compare writes --html; --png draws one model (use `logitlens run --png`)")
    results, names = [], []
    for name in args.model:
        lens = _load(name, args)
        top_k = min(args.top_k, lens.decoder.vocab_size)
        results.append(
            lens.run(
                prompts,
                top_k=top_k,
                targets=targets,
                positions=args.positions,
                truncate=args.truncate,
                batch_size=args.batch_size,
            )
        )
        names.append(lens.name)
    if not args.quiet:
        from rich.console import Console

        from .views.terminal import render

        console = Console()
        for name, res in zip(names, results, strict=True):
            console.rule(f"[bold]{name}")
            console.print(render(res, 0))
        console.print(_depth_table(names, results))
    if args.html:
        from .views.report import write_compare_html

        print(f"wrote {write_compare_html(results, names, args.html)}", file=sys.stderr)
    return 0


def _depth_table(names, results):
    """Where each model settles on its answer, on a shared relative-depth scale 0..1 (from the row specs)."""
    from rich.table import Table

    from .views.model import prompt_summary

    table = Table(title="final top-1 and where it settles (relative depth 0 = embeddings, 1 = output)")
    for col in ("model", "rows", "final top-1", "p", "stays top-1 from row", "relative depth"):
        table.add_column(col)
    for name, res in zip(names, results, strict=True):
        s = prompt_summary(res, 0)
        table.add_row(
            name,
            str(res.n_rows),
            s.final_top1,
            f"{s.final_prob:.3f}",
            s.first_stable_row,
            f"{s.first_stable_depth:.2f}",
        )
    return table


def _write_outputs(res, args) -> None:
    written = []
    if getattr(args, "json", None):
        written.append(res.save(args.json))
    if args.html:
        from .views.report import write_html

        written.append(write_html(res, args.html))
    if args.png:
        from .views.png import write_png

        written.append(write_png(res, args.png))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


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
            _quiet_transformers()
            return {"run": _cmd_run, "compare": _cmd_compare}[args.command](args)
    except LogitLensError as exc:
        print(f"logitlens: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
