"""The ``logitlens train-lens`` command: train a tuned lens on a corpus (``logitlens.tasks.training``).

    logitlens train-lens --model default --data sample --out lenses/smollm2 --steps 40 --seq-len 128 \\
        --batch-tokens 1024
    logitlens train-lens --model default --data sample --out lenses/smollm2 ... --resume   # after a Ctrl-C

Bad input raises ``LogitLensError`` (one line, exit status 2), checked before the model is loaded where it
can be.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from logitlens.cli.common import EXIT_INTERRUPTED, add_model_option, load, main_rank
from logitlens.errors import LogitLensError

__all__ = ["add_parser", "run"]

_DTYPES = ("float32", "bfloat16", "fp32", "bf16")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train-lens`` to the ``logitlens`` sub-commands; returns its parser."""
    from logitlens.tasks import training as t

    p = subparsers.add_parser(
        "train-lens",
        help="train a tuned lens (one affine translator per row) for a model on a corpus",
        description="Train a tuned lens (Belrose et al. 2023): one affine translator per row, fitted to "
        "minimise KL(final || row) averaged over every row but the output row, on packed sequences of the "
        "corpus's train split; the model stays frozen. The recipe's defaults are those of the tuned-lens "
        "package (tuned_lens/scripts/train_loop.py and ingredients.py): SGD with Nesterov momentum 0.9, "
        "lr 1.0 (given to PyTorch as lr x (1 - momentum)), weight decay 1e-3, no warm-up and a linear decay "
        "to 0, gradient clipping at norm 1, zero-initialised translators, 250 steps of 2^18 tokens in "
        "sequences of 2048, seed 42. A CPU needs far smaller values: on 2 CPU cores, --steps 20 --seq-len 128 --batch-tokens 256 trains "
        "SmolLM2-135M in about 8 minutes (10 tokens/s). The lens is written "
        "into --out as config.json + translators.safetensors (TunedLens.save), with a checkpoint every "
        "--checkpoint-every steps until it is done.",
    )
    add_model_option(p)
    _add_data_args(p)
    _add_recipe_args(p, t)
    _add_run_args(p, t)
    p.set_defaults(backend="hooks")
    return p


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """The corpus and the output folder."""
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="'sample' (built in), text files (a file is one document), .jsonl, .csv, .parquet, or a "
        "datasets save_to_disk folder; training reads the train split",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the lens and checkpoints"
    )
    p.add_argument("--lines", action="store_true", help="each line of a text file is one document")
    p.add_argument(
        "--field", default="text", help="the text field of JSONL / column of CSV, Parquet (default text)"
    )


def _add_recipe_args(p: argparse.ArgumentParser, t) -> None:
    """The training recipe (defaults: the tuned-lens package's, from ``logitlens.tasks.training``)."""
    p.add_argument(
        "--steps", type=int, default=t.STEPS, help=f"optimiser steps (default {t.STEPS}, the package's)"
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help=f"tokens per packed sequence (default {t.SEQ_LEN}, the package's, or the model's context if shorter)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=t.BATCH_TOKENS,
        help=f"tokens per step, rounded down to whole sequences (default {t.BATCH_TOKENS:,} = 2^18, the package's)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=t.LR,
        help=f"learning rate (default {t.LR}, the paper's; PyTorch's SGD gets lr x (1 - momentum 0.9))",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=t.WARMUP_STEPS,
        help=f"linear warm-up steps before the linear decay (default {t.WARMUP_STEPS}, the package's for SGD)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=t.WEIGHT_DECAY,
        help=f"L2 weight decay of the translators (default {t.WEIGHT_DECAY:g}, the package's)",
    )
    p.add_argument(
        "--seed", type=int, default=t.SEED, help=f"seed of the data order (default {t.SEED}, the package's)"
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=t.SPLIT_SEED,
        help=f"seed of the train/validation split (default {t.SPLIT_SEED}: the one `logitlens eval --seed` "
        "uses by default, so eval's validation split is never trained on)",
    )


def _add_run_args(p: argparse.ArgumentParser, t) -> None:
    """Checkpoints, the held-out check, the device and the output on the terminal."""
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=t.CHECKPOINT_EVERY,
        metavar="N",
        help=f"write a checkpoint into --out every N steps (default {t.CHECKPOINT_EVERY})",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --out (same options)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a lens or checkpoint already in --out")
    p.add_argument(
        "--eval-tokens",
        type=int,
        default=None,
        metavar="N",
        help="at the end, per-row KL of the logit and tuned lens on N held-out tokens (default: as many as "
        f"were trained on, at most {t.EVAL_TOKENS}; 0: skip)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=_DTYPES,
        help="float32 (default), or bfloat16: bf16 weights and autocast of the forward pass and the decode "
        "(for a GPU; master weights, optimiser, log-softmax and KL stay fp32)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or mps (default: cpu)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own Python code to run")
    p.add_argument(
        "--memory-budget",
        type=int,
        default=512,
        metavar="MB",
        help="memory for the decode's intermediates, MB (default 512); sets tokens per chunk",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _check_args(args) -> None:
    """Everything that needs no model, before it loads."""
    from logitlens.tasks import training as t
    from logitlens.tasks.data import Corpus
    from logitlens.tasks.training import check_out

    for name, low in (
        ("steps", 1),
        ("seq_len", 2),
        ("batch_tokens", 1),
        ("checkpoint_every", 1),
        ("warmup_steps", 0),
        ("eval_tokens", 0),
        ("memory_budget", 1),
    ):
        value = getattr(args, name)
        if value is not None and value < low:
            raise LogitLensError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if not args.lr > 0:
        raise LogitLensError(f"--lr must be positive, got {args.lr}")
    if not args.weight_decay >= 0:
        raise LogitLensError(f"--weight-decay must be at least 0, got {args.weight_decay}")
    if args.seq_len is not None and args.batch_tokens < args.seq_len:
        raise LogitLensError(
            f"--batch-tokens {args.batch_tokens} is less than one sequence (--seq-len {args.seq_len}); "
            "raise --batch-tokens or lower --seq-len"
        )
    check_out(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.eval_tokens is None:  # the held-out check scales with the run: a one-step trial stays short
        args.eval_tokens = min(t.EVAL_TOKENS, args.steps * args.batch_tokens)
    Corpus.read(args.data, lines=args.lines, field=args.field).split("train", seed=args.split_seed)


def run(args) -> int:
    """``logitlens train-lens``: check the options, load the model, train, save, print a summary."""
    _check_args(args)
    args.dtype = {"fp32": "float32", "bf16": "bfloat16"}.get(args.dtype, args.dtype)
    lens = load(args.model, args)
    from logitlens.tasks.training import Interrupted, train_tuned_lens

    try:
        tuned = train_tuned_lens(
            lens,
            args.data,
            out=args.out,
            steps=args.steps,
            seq_len=args.seq_len,
            batch_tokens=args.batch_tokens,
            lr=args.lr,
            seed=args.seed,
            split_seed=args.split_seed,
            warmup_steps=args.warmup_steps,
            weight_decay=args.weight_decay,
            resume=args.resume,
            overwrite=args.overwrite,
            checkpoint_every=args.checkpoint_every,
            eval_tokens=args.eval_tokens,
            dtype=args.dtype,
            progress=not args.no_progress,
            lines=args.lines,
            field=args.field,
        )
    except Interrupted as exc:
        if not main_rank():
            return EXIT_INTERRUPTED
        where = (
            f"the checkpoint of step {exc.step} is in {exc.out}: run the same command with --resume to continue"
            if exc.step is not None
            else "no checkpoint was written yet: run the command again"
        )
        print(f"logitlens: interrupted; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not main_rank():  # torchrun: rank 0 saved the lens and says so
        return 0
    if not args.quiet:
        from rich.console import Console

        from logitlens.views.tables import lens_summary_table

        Console().print(lens_summary_table(tuned))
    size = sum(f.stat().st_size for f in Path(args.out).iterdir() if f.is_file())
    print(
        f"wrote {args.out} (config.json + translators.safetensors, {size / 2**20:.1f} MiB)", file=sys.stderr
    )
    return 0
