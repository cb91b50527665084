"""The ``logitlens attribute`` command: direct logit attribution of one token at one position.

    logitlens attribute "The Eiffel Tower is in the city of" --target " Paris" --png attribution.png
    logitlens attribute "The Eiffel Tower is in the city of" --target " Paris" --baseline " London" --csv a.csv

Bad input (an empty or multi-token target or baseline, a position outside the prompt, an output file the command
cannot write) raises ``LogitLensError``: one line, exit status 2; checks that need no model run before it
loads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from logitlens.cli.common import (
    add_model_args,
    add_model_option,
    check_outputs,
    json_ready,
    load,
    write_outputs,
)
from logitlens.errors import LogitLensError

__all__ = ["add_parser", "attribution_json", "run"]

_SUFFIXES = {  # option -> file name endings it writes
    "png": (".png", ".svg", ".pdf"),
    "html": (".html", ".htm"),
    "csv": (".csv",),
    "json": (".json",),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``attribute`` to the ``logitlens`` sub-commands; returns its parser."""

    p = subparsers.add_parser(
        "attribute",
        help="direct logit attribution: how much each block's attention and MLP add to one token's logit",
        description="Split the logit of TARGET (minus the mean logit, or minus a BASELINE token's logit) at "
        "one position into the contributions of the embeddings, each block's attention and MLP output, "
        "and the biases, through the final norm frozen at the output row's statistics (the standard "
        "linearisation): the lines sum to the output row's logit difference, before any soft-capping.",
    )
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="the prompt text")
    add_model_option(p)
    p.add_argument("--target", required=True, help="the token to explain, ONE token (e.g. ' Paris')")
    p.add_argument(
        "--baseline",
        default="mean",
        help="'mean' (the mean logit over the vocabulary, default) or a second token: explain "
        "logit[target] - logit[baseline]",
    )
    p.add_argument(
        "--position",
        type=int,
        default=-1,
        help="the position whose next-token logits are explained (default -1, the last; negative counts "
        "from the end)",
    )
    p.add_argument("--png", type=Path, help="write the bar chart as an image (.png, .svg or .pdf)")
    p.add_argument("--html", type=Path, help="write a self-contained HTML page (works offline)")
    p.add_argument("--csv", type=Path, help="write the components as CSV")
    p.add_argument("--json", type=Path, help="write the components and the run's numbers as JSON")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    add_model_args(p)
    p.set_defaults(memory_budget=512)  # what the shared model loader reads; attribution decodes one row
    return p


def _check_args(args) -> None:
    """Everything that needs no model: the prompt, target and baseline texts, the output files."""
    if args.prompt is None or not args.prompt.strip():
        raise LogitLensError("no prompt given: pass PROMPT text, e.g. 'The Eiffel Tower is in the city of'")
    if args.target == "":
        raise LogitLensError("--target is empty: give one token such as ' Paris' (mind the leading space)")
    if args.baseline == "":
        raise LogitLensError("--baseline is empty: give 'mean' or one token such as ' London'")
    check_outputs(args, tuple(_SUFFIXES.items()))


def run(args) -> int:
    """``logitlens attribute``: load the model, attribute, print the table, write the files."""
    _check_args(args)
    lens = load(args.model, args)
    df = lens.attribute(args.prompt, args.target, position=args.position, baseline=args.baseline)
    if not args.quiet:
        from logitlens.views.attribution import print_attribution

        print_attribution(df)
    _write_outputs(df, args)
    return 0


def attribution_json(df) -> str:
    """The JSON text of ``--json``: ``{"format", "version", "meta": df.attrs, "components": [...]}``."""
    doc = {
        "format": "logitlens.attribution",
        "version": 1,
        "meta": df.attrs,
        "components": df.astype(object).to_dict(orient="records"),
    }
    return json.dumps(json_ready(doc), ensure_ascii=False, allow_nan=False, indent=1)


def _write_outputs(df, args) -> None:
    """Each asked-for file, whole or not at all; "wrote F" on stderr as each one is written."""
    from logitlens.core.files import write_atomic
    from logitlens.views.attribution import write_attribution_html, write_attribution_png

    writers = []
    if args.csv:
        writers.append(
            ("--csv", lambda: write_atomic(args.csv, lambda tmp: df.to_csv(tmp, index=False), "the CSV file"))
        )
    if args.json:
        text = attribution_json(df)
        writers.append(
            (
                "--json",
                lambda: write_atomic(args.json, lambda t: t.write_text(text, encoding="utf-8"), "the JSON"),
            )
        )
    if args.png:
        writers.append(("--png", lambda: write_attribution_png(df, args.png)))
    if args.html:
        writers.append(("--html", lambda: write_attribution_html(df, args.html)))
    write_outputs(writers)
