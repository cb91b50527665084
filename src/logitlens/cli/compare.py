"""``logitlens compare``: two or more models (or lenses) on the same prompts, side by side on relative depth.

logitlens compare --model default --model ./my-finetune "The capital of France is" --html cmp.html
logitlens compare --model default --model default --tuned-lens - --tuned-lens ./lens "Paris is in"
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from logitlens.cli.common import (
    add_lens_args,
    add_model_args,
    add_model_option,
    add_prompt_args,
    check_common,
    check_outputs,
    load,
    parse_targets,
    read_inputs,
    sigint_deferred,
    write_outputs,
)
from logitlens.errors import LogitLensError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``compare`` to the ``logitlens`` sub-commands; returns its parser."""
    p = subparsers.add_parser(
        "compare", help="run two or more models on one prompt and put them side by side"
    )
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text (several allowed)")
    p.add_argument("--prompts-file", help="as for `run`: prompts, 'prompt<TAB>answer' lines or JSON Lines")
    p.add_argument(
        "--json",
        type=Path,
        help="save every model's result: F.json becomes F-<model>.json (or .parquet), one file per model",
    )
    add_model_option(p, several="repeat: two or more", required=True)
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    add_prompt_args(p)
    add_model_args(p)
    add_lens_args(p, per_model=True)
    return p


def run(args) -> int:
    """``logitlens compare``: every model on the same prompts, side by side on relative depth."""
    check_outputs(args)
    prompts, answers = read_inputs(args)
    targets = parse_targets(args.target)
    check_common(args)
    if len(args.model) < 2:
        raise LogitLensError("compare needs at least two models: repeat --model")
    tuned = _compare_tuned(args)  # per --model: a TunedLens or None (every folder read before any model)
    results, names = [], []
    loaded: dict = {}  # a model named again (e.g. with another lens) is loaded once
    for m, name in enumerate(args.model):
        lens = load(name, args, tuned[m]) if name not in loaded else _rewrap(loaded[name], tuned[m], args)
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

        from logitlens.views.tables import compare_depth_table
        from logitlens.views.terminal import check_window, render

        for res in results:
            check_window(res, args.window, args.window_start)
        console = Console()
        window = {"window": args.window, "window_start": args.window_start, "verbose": args.verbose}
        for i in range(len(prompts)):
            for name, res in zip(names, results, strict=True):
                console.rule(f"[bold]{name}" + (f" · prompt {i + 1}" if len(prompts) > 1 else ""))
                console.print(render(res, i, **window))
            console.print(compare_depth_table(names, results, i))
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
    with sigint_deferred():
        from logitlens.engine.tuned import TunedLens
    return [None if t == "-" else TunedLens.load(t) for t in given]


def _rewrap(base, tuned, args):
    """A LogitLens over ``base``'s already-loaded model, decoding through ``tuned`` (checked against it)."""
    from logitlens.engine.lens import LogitLens

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
    the first prompt; "wrote F" as each is written, and a late failure does not stop the others."""
    from logitlens.views.model import distinct_names
    from logitlens.views.png import write_compare_png
    from logitlens.views.report import write_compare_html

    writers = []
    if args.json:
        for name, res in zip(distinct_names(results, names), results, strict=True):
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
            path = args.json.with_name(f"{args.json.stem}-{slug}{args.json.suffix}")
            writers.append(("--json", lambda res=res, path=path: res.save(path)))
    if args.html:
        every = list(range(results[0].n_prompts))
        writers.append(("--html", lambda: write_compare_html(results, names, args.html, every)))
    if args.png:
        writers.append(("--png", lambda: write_compare_png(results, names, args.png)))
    write_outputs(writers)
