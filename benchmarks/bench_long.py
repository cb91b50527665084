"""Peak resident memory of the full grid on ONE 8192-token input, default model, on the CPU.

The default model (SmolLM2-135M, 31 rows, vocabulary 49,152, context 8192) runs ``lens.run(ids)`` over
every row x position of one 8192-token input in a child process; the parent reads the child's peak
resident size (wait4's ru_maxrss, cross-checked with the child's VmHWM). When the target is missed (or
with --breakdown) a second child repeats the run step by step (forward + capture, the (M, R, d) copy, the chunked decode) with a sampler thread that
records the resident size, so a figure over the target says where the memory goes. The straight
recipe's stack for the same work (31 x 8192 x 49,152 fp32 = 50 GB) is computed, not measured.

    .venv/bin/python benchmarks/bench_long.py [--tokens 8192] [--breakdown]

Target: at most 3 GB peak.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import common  # noqa: E402  (benchmarks/ is the script's folder)

TOKENS = 8192
TARGET_PEAK_GB = 3.0


def load(tokens: int):
    """The default model's lens and one input of ``tokens`` ids (the document, cycled)."""
    import torch

    import logitlens

    lens = logitlens.LogitLens.from_pretrained(common.model_path())
    doc = lens.tokenizer(common.DOCUMENT)["input_ids"]
    ids = (doc * (tokens // len(doc) + 1))[:tokens]
    return lens, torch.tensor([ids])


class Sampler:
    """Resident size every ``every`` seconds in a thread; ``mark(name)`` closes a phase, ``peaks`` holds
    each phase's highest sample (MB)."""

    def __init__(self, every: float = 0.02):
        self.every = every
        self.current = 0.0
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.current = max(self.current, common.current_rss_mb())
            time.sleep(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def mark(self, name: str) -> None:
        self.peaks[name] = max(self.current, common.current_rss_mb())
        self.current = 0.0

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def child_run(tokens: int) -> None:
    """The headline: lens.run over the full grid, as a user calls it."""
    lens, ids = load(tokens)
    after_load = common.current_rss_mb()
    seconds, res = common.timed(lambda: lens.run(ids, top_k=common.TOP_K))
    assert res.top_ids.shape == (1, lens.n_layers + 1, tokens, common.TOP_K)
    attn = getattr(lens.model.config, "_attn_implementation", "?")
    common.emit({"tokens": tokens, "rss_after_load_mb": after_load, "seconds": seconds, "attention": attn})


def child_breakdown(tokens: int) -> None:
    """The same steps as LogitLens.iter_run, one at a time, each phase's resident peak sampled."""
    import torch

    from logitlens.engine.reduce import decode_stats

    lens, ids = load(tokens)
    rows = lens.rows()
    seq = ids[0].tolist()
    with Sampler() as s:
        s.mark("load")
        captured = lens.capture([seq], [list(range(tokens))], rows)  # (1, R, T, d)
        s.mark("forward + capture")
        flat = captured[0].transpose(0, 1).contiguous()  # (M, R, d)
        del captured
        s.mark("(M, R, d) copy")
        next_ids = torch.tensor(seq[1:] + [-1])
        st = decode_stats(
            flat,
            lens.decoder.logits,
            vocab_size=lens.decoder.vocab_size,
            top_k=common.TOP_K,
            next_ids=next_ids,
            budget_bytes=lens.budget_bytes,
        )
        s.mark("chunked decode + reduction")
    assert st["top_ids"].shape == (tokens, len(rows), common.TOP_K)
    captured_mb = tokens * len(rows) * lens.model.config.hidden_size * 4 / 2**20
    common.emit({"phases_mb": s.peaks, "captured_rows_mb": captured_mb})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument(
        "--breakdown", action="store_true", help="also measure each phase (always when missed)"
    )
    parser.add_argument("--child", choices=["run", "breakdown"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "run":
        child_run(args.tokens)
        return 0
    if args.child == "breakdown":
        child_breakdown(args.tokens)
        return 0
    common.model_path()  # convert the default model once, before any child
    print(f"### Peak resident memory, ONE {args.tokens}-token input, full grid ({common.machine()['cpu']})")
    run = common.run_child(
        [sys.executable, __file__, "--child", "run", "--tokens", str(args.tokens)], timeout=1800
    )
    if "error" in run:
        print(f"logitlens: FAILED ({run['error']}); peak {run['peak_rss_mb'] / 1024:.2f} GB")
        return 1
    peak_gb = run["peak_rss_mb"] / 1024
    met = peak_gb <= TARGET_PEAK_GB
    print(
        f"logitlens: peak {peak_gb:.2f} GB (VmHWM {run['vm_hwm_mb'] / 1024:.2f} GB), after load "
        f"{run['rss_after_load_mb'] / 1024:.2f} GB, run {run['seconds']:.1f} s, attention {run['attention']}"
    )
    rows, vocab = 31, 49152
    print(f"straight recipe: {rows * args.tokens * vocab * 4 / 1e9:.1f} GB for its stack alone (computed)")
    print(f"target <= {TARGET_PEAK_GB:g} GB: {'MET' if met else 'MISSED'}")
    if args.breakdown or not met:
        cmd = [sys.executable, __file__, "--child", "breakdown", "--tokens", str(args.tokens)]
        parts = common.run_child(cmd, timeout=1800)
        if "error" in parts:
            print(f"breakdown: FAILED ({parts['error']})")
        else:
            print(f"where it goes (resident peak of each phase; the captured rows alone are "
                  f"{parts['captured_rows_mb']:.0f} MB):")  # fmt: skip
            for name, mb in parts["phases_mb"].items():
                print(f"  {name:28s} {mb / 1024:6.2f} GB")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
