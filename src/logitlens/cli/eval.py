"""``logitlens eval``: per-row metrics of the lens over a corpus, for one or more models and lenses.

    logitlens eval --model default --data sample --seq-len 256 --tokens 16384 --png eval.png --html eval.html
    logitlens eval --model default --model ./my-finetune --data corpus.jsonl --field body --csv eval.csv

Bad input raises ``LogitLensError`` (one line, exit status 2), checked before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from logitlens.cli.common import (
    add_model_args,
    add_model_option,
    check_outputs,
    json_ready,
    load,
    main_rank,
    write_outputs,
)
from logitlens.errors import LogitLensError
from logitlens.tasks.data import SPLITS, Corpus

__all__ = ["add_parser", "run"]

_OUTPUTS = (("json", (".json",)), ("csv", (".csv",)), ("png", (".png",)), ("html", (".html", ".htm")))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``eval`` to the ``logitlens`` sub-commands; returns its parser."""
    p = subparsers.add_parser(
        "eval",
        help="per-row metrics of the lens over a corpus: cross-entropy, KL to final, accuracy ...",
        description="Decode every row at every position of a corpus and average, per row: cross-entropy "
        "against the actual next token (nats, bits per token), KL to the final row, entropy, top-1 "
        "agreement with the final row and top-1 accuracy, each with its standard error.",
    )
    add_model_option(p, several="repeat to line several up on relative depth")
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
    add_model_args(p)
    return p


def _check_eval_args(args) -> None:
    for name, low in (("tokens", 1), ("seq_len", 2), ("batch_size", 1), ("memory_budget", 1)):
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise LogitLensError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    check_outputs(args, _OUTPUTS)


def run(args) -> int:
    """``logitlens eval``: read the corpus once, evaluate each model, print and write the table."""
    import pandas as pd

    from logitlens.tasks.evaluation import evaluate

    _check_eval_args(args)
    models = list(args.model) or ["default"]
    corpus = Corpus.read(args.data, lines=args.lines, field=args.field)
    corpus.split(args.split, seed=args.seed)  # an empty split is refused before any model loads
    lenses = _eval_lenses(getattr(args, "lens", None) or ["logit"])  # tuned folders read before any model
    frames, seen = [], set()
    for i, name in enumerate(models):
        lens = load(name, args)
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
    if not main_rank():  # torchrun: every rank holds the table, rank 0 shows and writes it
        return 0
    if not args.quiet:
        from rich.console import Console

        from logitlens.views.tables import eval_depth_table, eval_table

        console = Console()
        for df in frames:
            console.print(eval_table(df))
        if len(frames) > 1:
            console.print(eval_depth_table(frames))
    _write_eval_outputs(table, args)
    return 0


def _eval_lenses(specs: list[str]) -> list[tuple[str, Any]]:
    """``--lens`` values -> (label, TunedLens or None for the logit lens), in order; every tuned folder is
    read here, before any model loads. Labels: "logit", "tuned" (one tuned lens) or "tuned (folder)"."""
    from logitlens.engine.tuned import TunedLens

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


def _write_eval_outputs(table, args) -> None:
    """Every asked-for file, each whole or not at all (atomic); a late failure does not stop the others."""
    from logitlens.core.files import write_atomic
    from logitlens.views.evaluation import write_eval_html, write_eval_png

    doc = {
        "format": "logitlens.eval",
        "version": 1,
        "runs": table.attrs.get("runs", []),
        "rows": table.to_dict(orient="records"),
    }
    writers = []
    if args.json:
        text = json.dumps(json_ready(doc), ensure_ascii=False, allow_nan=False, indent=1)
        writers.append(("--json", lambda: write_atomic(args.json, lambda t: t.write_text(text), "the JSON")))
    if args.csv:
        writers.append(
            ("--csv", lambda: write_atomic(args.csv, lambda t: table.to_csv(t, index=False), "the CSV file"))
        )
    if args.png:
        writers.append(("--png", lambda: write_eval_png(table, args.png)))
    if args.html:
        writers.append(("--html", lambda: write_eval_html(table, args.html)))
    write_outputs(writers)
