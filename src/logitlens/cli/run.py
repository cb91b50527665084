"""``logitlens run``: the lens on prompts, shown in the terminal, written as JSON/Parquet, HTML or PNG, or
streamed batch by batch to a resumable Parquet/JSONL file (``--out``).

    logitlens run "The Eiffel Tower is in the city of" --target " Paris"
    logitlens run --prompts-file facts.txt --positions=-1 --target " Paris" --out facts.parquet [--resume]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from logitlens.cli.common import (
    EXIT_INTERRUPTED,
    add_lens_args,
    add_model_args,
    add_model_option,
    add_prompt_args,
    check_common,
    check_outputs,
    load,
    main_rank,
    make_concepts,
    parse_concepts,
    parse_targets,
    read_inputs,
    write_outputs,
)
from logitlens.errors import LogitLensError

__all__ = ["PROGRESS_AFTER_S", "add_parser", "add_stream_args", "check_stream_args", "run", "run_streamed"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``run`` to the ``logitlens`` sub-commands; returns its parser."""
    p = subparsers.add_parser("run", help="run the lens on prompts and show the result")
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text (several allowed)")
    add_model_option(p)
    p.add_argument(
        "--prompts-file",
        help="one prompt per line, or 'prompt<TAB>answer' lines, or JSON Lines "
        '({"prompt": ..., "answer": ...}); \'-\' reads standard input',
    )
    p.add_argument(
        "--answer",
        help="the answer to PROMPT (e.g. ' Paris'): every token of it is scored, teacher-forced",
    )
    p.add_argument(
        "--concept",
        action="append",
        default=[],
        metavar="[NAME=]WORDS",
        help="track a concept: comma-separated words such as 'Paris,Parigi' or 'en=mountain'; the summed "
        "mass of the first token of each word's variants (leading space, capital); repeat for several",
    )
    p.add_argument(
        "--json",
        type=Path,
        help="save the result: F.json (the versioned JSON schema) or F.parquet (the long table); "
        "logitlens.LensResult.load reads either",
    )
    p.add_argument(
        "--subblocks",
        action="store_true",
        help="add each block's after-attention row (i.attn) beside its output row (i)",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    p.add_argument(
        "--trajectory",
        type=Path,
        metavar="FILE",
        help="draw the targets, concepts and answer across rows (probability and rank at the last "
        "position): .png, .svg, .pdf, .jpg, or .html (interactive, with a log scale switch)",
    )
    p.add_argument(
        "--remote",
        nargs="?",
        const=True,
        default=False,
        choices=["local"],
        metavar="local",
        help="run the whole lens on NDIF through nnsight (API key: NDIF_API_KEY or `nnsight login`); "
        "'--remote local' simulates the request here. Only the statistics come back; no weights load here",
    )
    add_prompt_args(p)
    add_model_args(p)
    add_lens_args(p)
    add_stream_args(p)  # --out F.parquet|.jsonl, --resume, --no-progress
    return p


def run(args) -> int:
    """``logitlens run``: check everything that needs no model, load it, run, show and write."""
    check_outputs(args)
    prompts, answers = read_inputs(args)
    targets = parse_targets(args.target)
    concept_specs = parse_concepts(args.concept)
    check_common(args)
    check_stream_args(args)
    if args.out is None and _ranks() > 1:
        raise LogitLensError(
            "under torchrun, `logitlens run` shares the prompts over the ranks only when it streams them: "
            "add --out FILE.parquet (or run it as one process)"
        )
    if args.trajectory and not (targets or concept_specs or answers):
        raise LogitLensError(
            f"--trajectory {args.trajectory} draws targets, concepts and answers across rows: give "
            "--target WORD, --concept WORDS or --answer TEXT (or answers in --prompts-file)"
        )
    if args.remote and args.tuned_lens:
        raise LogitLensError("--tuned-lens decodes here: leave out --remote (remote runs use the logit lens)")
    if args.remote is True:  # before loading anything: a missing key or server fails at once
        from logitlens.model.ndif import require_ndif

        require_ndif()
    lens = load(args.model, args, args.tuned_lens, prompts=prompts)
    vocab = lens.decoder.vocab_size
    if args.top_k > vocab:
        raise LogitLensError(f"--top-k must be at most the vocabulary size {vocab}, got {args.top_k}")
    if concept_specs:
        concepts = make_concepts(lens, concept_specs)
        targets += concepts
        args.target = [*args.target, *concepts]  # a streamed run (--out) takes its targets from here
    options = run_options(args, targets, answers)
    if args.out:
        return run_streamed(lens, prompts, args, options)
    res = _run_with_progress(lens, prompts, remote=args.remote, **options)
    if not args.quiet:
        from logitlens.views.terminal import print_result

        print_result(res, window=args.window, window_start=args.window_start, verbose=args.verbose)
    _write_outputs(res, args)
    return 0


PROGRESS_AFTER_S = 2.0  # a run that takes longer shows a progress bar on stderr (a terminal only)


def _run_with_progress(lens, prompts, /, **kwargs):
    """``lens.run`` with a progress bar on stderr (prompts done, tokens/s, time left) once the run has
    taken ``PROGRESS_AFTER_S``; plain ``lens.run`` when stderr is not a terminal."""
    import inspect

    from logitlens.engine.result import LensResult
    from logitlens.tasks.progress import progress_bar

    accepted = inspect.signature(lens.iter_run).parameters
    if not sys.stderr.isatty() or any(k not in accepted for k in kwargs):
        return lens.run(prompts, **kwargs)
    start, tokens, parts = time.perf_counter(), 0, []
    with progress_bar(len(prompts), "prompts", delay=PROGRESS_AFTER_S, transient=True) as advance:
        for part in lens.iter_run(prompts, **kwargs):
            parts.append(part)
            tokens += sum(len(ids) for ids in part.input_ids)
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            advance(part.n_prompts, status=f"{rate:,.0f} tokens/s")
    res = parts[0] if len(parts) == 1 else LensResult.concat(parts)
    order = sorted(range(res.n_prompts), key=res.prompt_index.__getitem__)
    return res if order == list(range(res.n_prompts)) else res.select(order)


def run_options(args, targets: list | None = None, answers: list | None = None) -> dict:
    """The options of ``lens.run`` that change values, from the command line: one source for the terminal,
    --json/--html/--png and --out (whose run record keeps every one, so --resume notices a change)."""
    return {
        "top_k": args.top_k,
        "targets": parse_targets(args.target) if targets is None else targets,
        "positions": args.positions,
        "truncate": args.truncate,
        "batch_size": args.batch_size,
        "answers": answers,
        "chat": args.chat,
        "prepend_bos": args.bos,
        "include_subblocks": getattr(args, "subblocks", False),
    }


def _ranks() -> int:
    """How many ranks this launch has (1: a single process), as ``tasks.distributed`` reads torchrun's."""
    from logitlens.tasks import distributed

    return distributed.current().world_size


def _write_outputs(res, args) -> None:
    """Write each asked-for file, whole or not at all, saying "wrote X" as each one is written; one that
    fails late (a full disk) does not keep the others from being written."""
    from logitlens.views.png import write_png
    from logitlens.views.report import write_html

    writers = []
    if getattr(args, "json", None):
        writers.append(("--json", lambda: res.save(args.json)))
    if args.html:
        writers.append(("--html", lambda: write_html(res, args.html)))
    if args.png:
        writers.append(("--png", lambda: write_png(res, args.png)))
    if getattr(args, "trajectory", None):
        writers.append(("--trajectory", lambda: _write_trajectory(res, args.trajectory)))
    write_outputs(writers)


def _write_trajectory(res, path: Path) -> Path:
    """``--trajectory``: the page (.html) or the picture (probability on a log scale, where the early rows'
    1e-10 still shows) of the targets, concepts and answers across rows."""
    if path.suffix.lower() in (".html", ".htm"):
        from logitlens.views.report import write_trajectory_html

        return write_trajectory_html(res, path)
    from logitlens.views.trajectory import write_trajectory_png

    return write_trajectory_png(res, path, log_probs=True, answers=True)


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
    run_parser.add_argument(
        "--overwrite", action="store_true", help="replace a finished --out file (it is kept otherwise)"
    )
    run_parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def check_stream_args(args) -> None:
    """Refuse (one line) what ``--out`` cannot do, before any model is loaded."""
    out = getattr(args, "out", None)
    if out is None:
        if getattr(args, "resume", False):
            raise LogitLensError("--resume continues a streamed run: give --out FILE too")
        if getattr(args, "overwrite", False):
            raise LogitLensError("--overwrite replaces a streamed run's file: give --out FILE too")
        return
    from logitlens.core.files import check_stream_output

    out = check_stream_output(out)
    parts = out.with_name(out.name + ".parts")  # tasks.stream.parts_dir, without importing torch
    if parts.is_dir() and not args.resume:
        raise LogitLensError(
            f"{parts} holds an interrupted run: pass --resume to continue it, or delete that folder to start over"
        )
    if out.exists() and not parts.is_dir() and not (args.resume or getattr(args, "overwrite", False)):
        raise LogitLensError(
            f"--out {out} already exists: pass --overwrite to replace it, or --resume to keep it if it holds "
            "this run"
        )
    held = [f"--{name}" for name in ("json", "html", "png", "trajectory") if getattr(args, name, None)]
    if held:
        raise LogitLensError(
            f"--out streams the results to a file; {', '.join(held)} need the whole run in memory: drop them, "
            "or drop --out"
        )


def run_streamed(lens, prompts, args, options: dict | None = None) -> int:
    """``logitlens run ... --out F``: stream the run to F and print the per-row aggregate table.

    options: ``run_options(args, ...)`` (default: from ``args`` alone, without answers)."""
    from logitlens.tasks.stream import parts_dir, stream

    check_stream_args(args)
    try:
        df = stream(
            lens,
            prompts,
            args.out,
            resume=args.resume,
            overwrite=getattr(args, "overwrite", False),
            progress=not getattr(args, "no_progress", False),
            **(options if options is not None else run_options(args)),
        )
    except KeyboardInterrupt:
        if not main_rank():
            return EXIT_INTERRUPTED
        print(
            f"logitlens: interrupted; the finished batches are in {parts_dir(args.out)}: run the same command "
            "with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not main_rank():  # torchrun: rank 0 joined the parts, shows and says what it wrote
        return 0
    if not getattr(args, "quiet", False):
        from rich.console import Console

        from logitlens.views.tables import aggregate_table

        Console().print(aggregate_table(df, lens.name))
    done = f", {df.attrs['resumed']} of them from before" if df.attrs.get("resumed") else ""
    print(
        f"wrote {args.out} ({df.attrs.get('lines', 0):,} lines, {df.attrs.get('prompts')} prompts{done})",
        file=sys.stderr,
    )
    return 0
