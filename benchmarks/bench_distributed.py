"""Data-parallel ``logitlens eval``: tokens/s with 1 rank and with N ranks (torchrun, one thread each on the
CPU, or one GPU each), the same sequences, and the ratio N ranks / 1 rank (ideal: N).

Each launch is ``python -m torch.distributed.run --nproc-per-node N`` of this script; each rank loads the
model (on its own device), evaluates its share of the packed sequences (``logitlens.evaluate``: every row x
position decoded and reduced; sums combined by one all-reduce) and rank 0 prints the run as JSON. The time
is the evaluation's (the slowest rank's), not the model loading. The tables of all launches must agree
(counts exactly, means within 1e-6 relative): the script checks it.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_distributed.py [--ranks 1,2] [--sequences 8]
        [--seq-len 64] [--model default] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def worker(args) -> None:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(1)
    from logitlens import LogitLens
    from logitlens.tasks import distributed
    from logitlens.tasks.data import Corpus
    from logitlens.tasks.evaluation import evaluate

    group = distributed.setup()
    lens = LogitLens.from_pretrained(args.model, device=distributed.local_device(args.device))
    corpus = Corpus.read("sample").split("all")
    kwargs = dict(seq_len=args.seq_len, tokens=args.sequences * args.seq_len, batch_size=args.batch_size)
    evaluate(lens, corpus, **kwargs, progress=False, split="all")  # warm-up (allocator, kernels)
    df = evaluate(lens, corpus, **kwargs, progress=False, split="all")
    if group.is_main:
        numbers = df.select_dtypes("number").drop(columns=["row", "layer", "depth"])
        print("RESULT " + json.dumps({
            "ranks": group.world_size, "tokens": df.attrs["tokens"], "seconds": df.attrs["seconds"],
            "tokens_per_s": df.attrs["tokens_per_s"], "table": numbers.to_dict(orient="list"),
        }), flush=True)  # fmt: skip
    distributed.teardown()


def launch(n: int, args) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port",
           str(29500 + n), __file__, "--worker", "--model", args.model, "--device", args.device,
           "--sequences", str(args.sequences), "--seq-len", str(args.seq_len), "--batch-size",
           str(args.batch_size)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1") if args.device == "cpu" else dict(os.environ)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{n} rank(s) failed:\n{done.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT ") :])
    out["wall_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ranks", default="1,2", help="rank counts to compare, the first is the baseline")
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=1, help="sequences per forward pass on one rank")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import numpy as np

    counts = [int(n) for n in args.ranks.split(",")]
    runs = [launch(n, args) for n in counts]
    base = runs[0]
    print(f"## eval, {args.model}, {args.sequences} x {args.seq_len} tokens, device {args.device}"
          f"{' (one thread per rank)' if args.device == 'cpu' else ' (one GPU per rank)'}")  # fmt: skip
    print("| ranks | eval s | tokens/s | vs 1 rank | launch wall s | largest relative difference |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        rel = 0.0
        for name, ref in base["table"].items():
            a, b = np.asarray(r["table"][name], dtype=float), np.asarray(ref, dtype=float)
            if name == "tokens":
                assert (a == b).all(), "token counts differ"
                continue
            rel = max(rel, float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))))
        assert rel <= 1e-6, f"{r['ranks']} ranks differ from 1 by {rel:.3g} (relative)"
        speed = r["tokens_per_s"] / base["tokens_per_s"]
        print(f"| {r['ranks']} | {r['seconds']:.2f} | {r['tokens_per_s']:,.1f} | {speed:.2f}x | {r['wall_s']:.1f} "
              f"| {rel:.2g} |")  # fmt: skip


if __name__ == "__main__":
    main()
