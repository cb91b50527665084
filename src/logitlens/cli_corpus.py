"""The corpus commands of ``logitlens``: ``eval``, and ``run --out`` (a streamed, resumable run).

    logitlens eval --model default --data sample --seq-len 256 --tokens 16384 --png eval.png --html eval.html
    logitlens eval --model default --model ./my-finetune --data corpus.jsonl --field body --csv eval.csv
    logitlens run --prompts-file facts.txt --positions=-1 --target " Paris" --out facts.parquet [--resume]

Wiring (in ``logitlens.cli``): ``add_eval_parser(subparsers)`` and ``cmd_eval(args)`` for ``eval``;
``add_stream_args(run_parser)`` adds ``--out``, ``--resume`` and ``--no-progress`` to ``run``, whose
command calls ``check_stream_args(args)`` before loading the model and ``run_streamed(lens, prompts,
args)`` instead of ``lens.run`` when ``args.out`` is set. Bad input raises ``LogitLensError`` (one line,
exit status 2 in ``main``), checked before any model is loaded where possible.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .data import SPLITS, Corpus
from .errors import LogitLensError
from .files import check_stream_output

__all__ = ["add_eval_parser", "add_stream_args", "check_stream_args", "cmd_eval", "run_streamed"]

EXIT_INTERRUPTED = 130
_OUTPUTS = ("json", "csv", "png", "html")


# ---- eval ---------------------------------------------------------------------------------------------
def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``eval`` to the ``logitlens`` sub-commands; returns its parser."""
    from .cli import _add_model_args

    p = subparsers.add_parser(
        "eval",
        help="per-row metrics of the lens over a corpus: cross-entropy, KL to final, accuracy ...",
        description="Decode every row at every position of a corpus and average, per row: cross-entropy "
        "against the actual next token (nats, bits per token), KL to the final row, entropy, top-1 "
        "agreement with the final row and top-1 accuracy, each with its standard error.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="'default' (SmolLM2-135M), a HF id or a local path; repeat to line several up on relative depth",
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="'sample' (built in), text files (a file is one document), .jsonl, .csv, .parquet, or a "
        "datasets save_to_disk folder",
    )
    p.add_argument("--lines", action="store_true", help="each line of a text file is one document")
    p.add_argument(
        "--field", default="text", help="the text field of JSONL / column of CSV, Parquet (default text)"
    )
    p.add_argument(
        "--lens",
        action="append",
        default=[],
        metavar="logit|DIR",
        help="'logit' (the logit lens; the default) or a tuned lens folder (`logitlens train-lens`); repeat "
        "to put several side by side, e.g. --lens logit --lens DIR, for every --model",
    )
    p.add_argument(
        "--tokens", type=int, default=None, help="evaluate about N tokens (default: the whole split)"
    )
    p.add_argument("--seq-len", type=int, default=512, help="tokens per packed sequence (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    p.add_argument(
        "--split", default="validation", choices=SPLITS, help="documents to use (default validation)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="sequences per forward pass (default ~4096 tokens)"
    )
    p.add_argument(
        "--memory-budget",
        type=int,
        default=512,
        metavar="MB",
        help="memory for decoding intermediates, MB (default 512)",
    )
    p.add_argument("--json", type=Path, help="write the table (and the run's settings) as JSON")
    p.add_argument("--csv", type=Path, help="write the table as CSV")
    p.add_argument("--png", type=Path, help="write a PNG of the metrics across rows")
    p.add_argument("--html", type=Path, help="write a self-contained HTML plot and table (works offline)")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_model_args(p)
    return p


def _check_folder(path: Path | None, flag: str) -> None:
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise LogitLensError(
            f"cannot write {flag} {path}: the folder '{folder}' does not exist; create it first"
        )
    if path.is_dir():
        raise LogitLensError(f"cannot write {flag} {path}: it is a folder; give a file name")


def _check_eval_args(args) -> None:
    for name, low in (("tokens", 1), ("seq_len", 2), ("batch_size", 1), ("memory_budget", 1)):
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise LogitLensError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    for name in _OUTPUTS:
        _check_folder(getattr(args, name, None), f"--{name}")
    if args.png is not None and args.png.suffix.lower() != ".png":
        raise LogitLensError(f"--png {args.png}: the file name must end in .png")


def cmd_eval(args) -> int:
    """``logitlens eval``: read the corpus once, evaluate each model, print and write the table."""
    import pandas as pd

    from .cli import _load
    from .evaluation import evaluate

    _check_eval_args(args)
    models = list(args.model) or ["default"]
    corpus = Corpus.read(args.data, lines=args.lines, field=args.field)
    corpus.split(args.split, seed=args.seed)  # an empty split is refused before any model loads
    lenses = _eval_lenses(getattr(args, "lens", None) or ["logit"])  # tuned folders read before any model
    frames, seen = [], set()
    for i, name in enumerate(models):
        lens = _load(name, args)
        ctx = lens.context_length
        if ctx is not None and args.seq_len > ctx:
            raise LogitLensError(
                f"--seq-len {args.seq_len} is longer than the context of {lens.name} ({ctx} tokens); "
                f"choose at most {ctx}"
            )
        label = f"{lens.name} (#{i + 1})" if lens.name in seen else lens.name  # keep same-named runs apart
        seen.add(lens.name)
        for lens_label, tuned in lenses:
            if tuned is not None:
                tuned.check(lens)  # a tuned lens made for another model: one line
            df = evaluate(
                lens,
                corpus,
                tokens=args.tokens,
                seq_len=args.seq_len,
                batch_size=args.batch_size,
                split=args.split,
                seed=args.seed,
                progress=not args.no_progress,
                **({} if tuned is None else {"lens": tuned}),
            )
            df["model"], df["lens"] = label, lens_label
            df.attrs.update(lens=lens_label, lens_path=None if tuned is None else tuned.meta.get("source"))
            frames.append(df)
        del lens
    table = pd.concat(frames, ignore_index=True)
    table.attrs = {**frames[0].attrs, "runs": [f.attrs for f in frames]}
    if not args.quiet:
        from rich.console import Console

        console = Console()
        for df in frames:
            console.print(eval_table(df))
        if len(frames) > 1:
            console.print(depth_table(frames))
    _write_eval_outputs(table, args)
    return 0


def _eval_lenses(specs: list[str]) -> list[tuple[str, Any]]:
    """``--lens`` values -> (label, TunedLens or None for the logit lens), in order; every tuned folder is
    read here, before any model loads. Labels: "logit", "tuned" (one tuned lens) or "tuned (folder)"."""
    from .tuned import TunedLens

    tuned = [s for s in specs if s != "logit"]
    out: list[tuple[str, Any]] = []
    for spec in specs:
        if spec == "logit":
            out.append(("logit", None))
            continue
        try:
            lens = TunedLens.load(spec)
        except LogitLensError as exc:
            raise LogitLensError(f"--lens {spec}: {exc} (give 'logit' or a tuned lens folder)") from None
        label = "tuned" if len(tuned) == 1 else f"tuned ({Path(spec).name or spec})"
        while label in [o[0] for o in out]:
            label += "'"
        out.append((label, lens))
    return out


def _fmt(value: float, se: float | None = None, digits: int = 3) -> str:
    """``value ±se`` (the error dimmed) as rich markup; "-" for NaN."""
    if value is None or math.isnan(value):
        return "-"
    if se is None or math.isnan(se):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [dim]±{se:.{digits}f}[/dim]"


def eval_table(df):
    """A rich table of one model's ``evaluate`` frame, a line per row; fits 80 columns (errors are shown
    for bits/token and accuracy; every one is in ``--csv`` / ``--json``)."""
    from rich.markup import escape
    from rich.table import Table

    a = df.attrs
    title = (
        f"{df['model'].iloc[0]} · {a.get('lens')} lens · {a.get('data')} [{a.get('split')}] · "
        f"{a.get('tokens', 0):,} tokens ({a.get('sequences')} x {a.get('seq_len')}) · "
        f"{a.get('tokens_per_s', float('nan')):,.0f} tokens/s"
    )
    table = Table(
        title=escape(title),
        caption="mean over every position with a next token, ± standard error; KL, entropy in nats",
    )
    heads = ("row", "depth", "bits/token", "KL", "entropy", "= final", "= next token")
    for col in heads:
        table.add_column(col, justify="left" if col == "row" else "right", no_wrap=True)
    for _, r in df.iterrows():
        table.add_row(
            escape(str(r["row_name"])),
            f"{r['depth']:.2f}",
            _fmt(r["bits_per_token"], r["bits_per_token_se"]),
            _fmt(r["kl_to_final"]),
            _fmt(r["entropy"]),
            _fmt(r["agreement"]),
            _fmt(r["accuracy"], r["accuracy_se"]),
        )
    return table


def depth_table(frames, points: int = 11):
    """Several models side by side on relative depth 0, 0.1, ..., 1: each model's nearest row."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title="lined up on relative depth (0 = embeddings, 1 = last block)",
        caption="each model's nearest row: bits/token · top-1 = next token",
    )
    table.add_column("depth", justify="right")
    several = len({str(df["lens"].iloc[0]) for df in frames if "lens" in df.columns}) > 1
    for df in frames:
        head = str(df["model"].iloc[0]) + (f" ({df['lens'].iloc[0]} lens)" if several else "")
        table.add_column(escape(head), justify="right")
    for i in range(points):
        d = i / (points - 1)
        cells = [f"{d:.1f}"]
        for df in frames:
            r = df.iloc[int((df["depth"] - d).abs().to_numpy().argmin())]
            cells.append(f"{escape(str(r['row_name']))}: {r['bits_per_token']:.2f} · {r['accuracy']:.3f}")
        table.add_row(*cells)
    return table


def _json_ready(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _json_ready(value.item())
    return value


def _write_eval_outputs(table, args) -> None:
    from .evaluation import write_eval_html, write_eval_png

    written = []
    try:
        if args.json:
            doc = {
                "format": "logitlens.eval",
                "version": 1,
                "runs": table.attrs.get("runs", []),
                "rows": table.to_dict(orient="records"),
            }
            args.json.write_text(json.dumps(_json_ready(doc), ensure_ascii=False, allow_nan=False, indent=1))
            written.append(args.json)
        if args.csv:
            table.to_csv(args.csv, index=False)
            written.append(args.csv)
    except OSError as exc:
        raise LogitLensError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
    if args.png:
        written.append(write_eval_png(table, args.png))
    if args.html:
        written.append(write_eval_html(table, args.html))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


# ---- run --out ----------------------------------------------------------------------------------------
def add_stream_args(run_parser: argparse.ArgumentParser) -> None:
    """Add ``--out``, ``--resume`` and ``--no-progress`` to ``logitlens run``."""
    run_parser.add_argument(
        "--out",
        type=Path,
        help="stream the results to a .parquet or .jsonl file, batch by batch (memory stays flat)",
    )
    run_parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted --out run after its last complete batch (same prompts and options)",
    )
    run_parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def check_stream_args(args) -> None:
    """Refuse (one line) what ``--out`` cannot do, before any model is loaded."""
    out = getattr(args, "out", None)
    if out is None:
        if getattr(args, "resume", False):
            raise LogitLensError("--resume continues a streamed run: give --out FILE too")
        return
    check_stream_output(out)
    held = [f"--{name}" for name in ("json", "html", "png") if getattr(args, name, None)]
    if held:
        raise LogitLensError(
            f"--out streams the results to a file; {', '.join(held)} need the whole run in memory: drop them, "
            "or drop --out"
        )


def run_streamed(lens, prompts, args) -> int:
    """``logitlens run ... --out F``: stream the run to F and print the per-row aggregate table."""
    from .cli import _parse_targets
    from .stream import parts_dir, stream

    check_stream_args(args)
    try:
        df = stream(
            lens,
            prompts,
            args.out,
            resume=args.resume,
            progress=not getattr(args, "no_progress", False),
            top_k=args.top_k,
            targets=_parse_targets(args.target),
            positions=args.positions,
            truncate=args.truncate,
            batch_size=args.batch_size,
        )
    except KeyboardInterrupt:
        print(
            f"logitlens: interrupted; the finished batches are in {parts_dir(args.out)}: run the same command "
            "with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not getattr(args, "quiet", False):
        from rich.console import Console

        Console().print(aggregate_rich(df, lens.name))
    done = f", {df.attrs['resumed']} of them from before" if df.attrs.get("resumed") else ""
    print(
        f"wrote {args.out} ({df.attrs.get('lines', 0):,} lines, {df.attrs.get('prompts')} prompts{done})",
        file=sys.stderr,
    )
    return 0


def aggregate_rich(df, model: str = ""):
    """A rich table of ``stream``'s per-row aggregate (means; the standard errors are in the DataFrame)."""
    from rich.markup import escape
    from rich.table import Table

    targets = [c for c in df.columns if c.startswith("p(") and not c.endswith("_se")]
    title = f"{model} · per row, mean over {int(df['cells'].iloc[0]):,} cells".strip(" ·")
    table = Table(
        title=escape(title),
        caption="entropy, KL in nats; top1=final: top-1 is the final row's; bits/tok and top1=next: "
        "against the actual next token, where there is one",
    )
    for col in ("row", "entropy", "KL", "top1=final", "bits/tok", "top1=next", *targets):
        table.add_column(escape(col), justify="left" if col == "row" else "right", no_wrap=True)
    for _, r in df.iterrows():
        table.add_row(
            escape(str(r["row_name"])),
            _fmt(r["entropy"]),
            _fmt(r["kl_to_final"]),
            _fmt(r["agreement"]),
            _fmt(r["bits_per_token"]),
            _fmt(r["accuracy"]),
            *[_fmt(r[c], digits=4) for c in targets],
        )
    return table
