"""The corpus workloads on the default model (SmolLM2-135M, 31 rows): ``eval`` throughput against the floor,
and the peak memory of streamed runs of many prompts against few.

eval: 64 sequences x 256 tokens packed from the built-in sample corpus (``--data sample --split all``).
- logitlens: ``logitlens.evaluate`` on those token ids (every row x position decoded and reduced to
  cross-entropy, KL to final, entropy, agreement, accuracy; running per-row sums), no progress bar;
- the floor: the same batches through the model's decoder stack once (``output_hidden_states``), then ONE
  product of every row's hidden states with the unembedding, in chunks of the size logitlens decodes at
  a time into one reused buffer; nothing else (no norm, no softmax, no statistics).
Both run in this process, alternating; tokens/s of each and the ratio floor / logitlens (target <= 1.2x).

stream: a child process per size streams N prompts (12-token windows of the sample corpus, as token ids,
the last position of each decoded, top-5, batches of 8) to a Parquet file; its peak resident size is
wait4's ru_maxrss (children start before this process loads a model: Linux carries a parent's high-water
mark into a fork+exec'd child). Target: 2,000 prompts within 10% of 200.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_corpus.py [--sequences 64] [--seq-len 256]
        [--reps 1] [--stream 2000,200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import common  # noqa: E402  (benchmarks/ is the script's folder)

TARGET_RATIO = 1.2  # floor tokens/s / logitlens tokens/s
TARGET_MEMORY = 0.10  # relative difference of peak RSS, many prompts vs few
WINDOW = 12  # tokens per streamed prompt


def load():
    import logitlens

    return logitlens.LogitLens.from_pretrained(common.model_path())


def eval_ids(lens, sequences: int, seq_len: int):
    from logitlens.tasks.data import Corpus

    return Corpus.read("sample").split("all").sequences(lens.tokenizer, seq_len, max_sequences=sequences)


def floor(lens, ids, batch_size: int, parts: dict[str, float] | None = None) -> None:
    """One forward of the decoder stack + one product of every row with the unembedding (chunked).

    parts: seconds spent in the forward passes and in the products are added to it."""
    import torch

    from logitlens.engine.reduce import chunk_size

    model = lens.model
    stack = model.get_decoder() if hasattr(model, "get_decoder") else model
    weight = model.get_output_embeddings().weight  # (V, d)
    n_rows, vocab = lens.n_layers + 1, weight.shape[0]
    per = chunk_size(n_rows, vocab, lens.budget_bytes, False) * n_rows  # vectors per product, as logitlens
    buf = torch.empty((per, vocab))
    parts = {} if parts is None else parts
    with torch.inference_mode():
        for start in range(0, ids.shape[0], batch_size):
            batch = ids[start : start + batch_size]
            t0 = time.perf_counter()
            hs = stack(
                input_ids=batch, output_hidden_states=True, use_cache=False
            ).hidden_states  # R x (B, T, d)
            flat = torch.stack(hs, 2).reshape(-1, hs[0].shape[-1])  # (B*T*R, d)
            del hs
            t1 = time.perf_counter()
            for s in range(0, flat.shape[0], per):
                h = flat[s : s + per]
                torch.mm(h, weight.t(), out=buf[: h.shape[0]])
            parts["forward"] = parts.get("forward", 0.0) + t1 - t0
            parts["products"] = parts.get("products", 0.0) + time.perf_counter() - t1


def _timing(module, name: str, parts: dict[str, float], key: str):
    """Wrap ``module.name`` so that its seconds add up in ``parts[key]``; returns the undo function."""
    real = getattr(module, name)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            parts[key] = parts.get(key, 0.0) + time.perf_counter() - t0

    setattr(module, name, timed)
    return lambda: setattr(module, name, real)


def child_stream(n: int) -> None:
    """Stream ``n`` prompts to a temporary Parquet file; report this process's numbers."""
    from logitlens.tasks.data import Corpus
    from logitlens.tasks.stream import stream

    lens = load()
    ids = Corpus.read("sample").split("all").sequences(lens.tokenizer, WINDOW + 1, max_sequences=n)
    prompts = [row[1:] for row in ids.tolist()]  # WINDOW tokens each, without the BOS
    after_load = common.current_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.parquet")
        t0 = time.perf_counter()
        agg = stream(lens, prompts, path, progress=False, positions=[-1], top_k=5, batch_size=8)
        seconds = time.perf_counter() - t0
        size = os.path.getsize(path)
    common.emit(
        {
            "prompts": n,
            "lines": agg.attrs["lines"],
            "file_mb": size / 2**20,
            "seconds": seconds,
            "rss_after_load_mb": after_load,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=64, help="eval: sequences (default 64)")
    parser.add_argument("--seq-len", type=int, default=256, help="eval: tokens per sequence (default 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="eval: sequences per forward (default 16)")
    parser.add_argument("--reps", type=int, default=1, help="timed repetitions of each (default 1)")
    parser.add_argument("--stream", default="2000,200", help="prompt counts of the memory children")
    parser.add_argument("--child-stream", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_stream:
        child_stream(args.child_stream)
        return 0

    counts = [int(c) for c in args.stream.split(",") if c.strip()]
    memory = {
        n: common.run_child([sys.executable, __file__, "--child-stream", str(n)], timeout=3600)
        for n in counts
    }

    import torch

    from logitlens.tasks.evaluation import evaluate

    print(f"bench_corpus: {common.machine()} | {common.versions()} | torch threads {torch.get_num_threads()}")
    lens = load()
    ids = eval_ids(lens, args.sequences, args.seq_len)
    tokens = ids.numel()
    print(
        f"model {lens!r}; eval of {ids.shape[0]} sequences x {ids.shape[1]} tokens, batches of {args.batch_size}"
    )

    import importlib

    # the modules (``logitlens.evaluate`` the attribute may be the function of the same name)
    lens_module = importlib.import_module("logitlens.engine.lens")
    evaluate_module = importlib.import_module("logitlens.tasks.evaluation")

    split: dict[str, dict[str, float]] = {"logitlens eval": {}, "floor": {}}

    def run_lens():
        # where the time goes: decode + reduction (decode_stats), folding into the running sums (add_result)
        undo = [
            _timing(lens_module, "decode_stats", split["logitlens eval"], "decode + reduce"),
            _timing(evaluate_module, "add_result", split["logitlens eval"], "aggregate"),
        ]
        try:
            return evaluate(lens, ids, batch_size=args.batch_size, progress=False)
        finally:
            for u in undo:
                u()

    def run_floor():
        return floor(lens, ids, args.batch_size, split["floor"])

    times: dict[str, list[float]] = {"logitlens eval": [], "floor": []}
    common.init_probe()
    probes = []
    for rep in range(args.reps):
        order = [("logitlens eval", run_lens), ("floor", run_floor)]
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            times[name].append(common.timed(fn)[0])
        probes.append(common.probe_seconds())
    med = {k: common.median(v) for k, v in times.items()}
    tps = {k: tokens / v for k, v in med.items()}
    ratio = med["logitlens eval"] / med["floor"]
    met_speed = ratio <= TARGET_RATIO

    print()
    print(
        f"### eval, {ids.shape[0]} x {ids.shape[1]} tokens (median of {args.reps}, same process, alternating)"
    )
    print(
        common.table(
            ["tool", "median s", "tokens/s", "vs floor"],
            [[k, f"{med[k]:.1f}", f"{tps[k]:.1f}", f"{med[k] / med['floor']:.2f}x"] for k in times],
        )
    )
    print(f"load probe (fixed 256x576x49152 matmul): median {common.median(probes):.3f} s")
    for k, parts in split.items():
        total = sum(times[k])
        rest = total - sum(parts.values())
        bits = [f"{name} {sec:.1f} s ({sec / total:.0%})" for name, sec in parts.items()]
        print(
            f"{k}, all reps: {total:.1f} s = "
            + " + ".join([*bits, f"the rest {rest:.1f} s ({rest / total:.0%})"])
        )
    print(
        f"logitlens eval takes {ratio:.2f}x the floor's time: target <= {TARGET_RATIO}x {'MET' if met_speed else 'MISSED'}"
    )

    rows, peaks = [], {}
    if memory:
        print()
        print("### Peak resident memory of streamed runs (child ru_maxrss)")
        for n, mem in memory.items():
            if "error" in mem:
                rows.append([str(n), "FAILED", mem["error"], "", "", ""])
                continue
            peaks[n] = mem["peak_rss_mb"]
            rows.append(
                [
                    f"{n:,}",
                    f"{mem['peak_rss_mb']:.0f} MB",
                    f"{mem['vm_hwm_mb']:.0f} MB",
                    f"{mem['rss_after_load_mb']:.0f} MB",
                    f"{mem['seconds']:.1f}",
                    f"{mem['lines']:,} lines, {mem['file_mb']:.1f} MB",
                ]
            )
        print(common.table(["prompts", "peak RSS", "VmHWM", "RSS after load", "run s", "file"], rows))
    met_mem = False
    if len(peaks) >= 2:
        many, few = max(peaks), min(peaks)
        diff = (peaks[many] - peaks[few]) / peaks[few]
        met_mem = abs(diff) <= TARGET_MEMORY
        print(
            f"peak for {many:,} prompts vs {few:,}: {diff:+.1%}: target within {TARGET_MEMORY:.0%} "
            f"{'MET' if met_mem else 'MISSED'}"
        )

    common.OUT_DIR.mkdir(exist_ok=True)
    summary = {
        "machine": common.machine(),
        "versions": common.versions(),
        "eval": {"sequences": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "batch_size": args.batch_size},
        "times": times,
        "tokens_per_s": tps,
        "ratio": ratio,
        "split_s": split,
        "probe_median_s": common.median(probes),
        "memory": {str(k): v for k, v in memory.items()},
        "targets": {"ratio": met_speed, "memory": met_mem},
    }
    (common.OUT_DIR / "corpus.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {common.OUT_DIR / 'corpus.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
