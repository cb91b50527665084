#!/usr/bin/env bash
# The GPU check (issue 10): run on one H100/H200 from the repository root, in under 8 minutes:
#
#     bash benchmarks/gpu_check.sh                 # the project venv's python
#     PY=/path/to/python bash benchmarks/gpu_check.sh
#
# 1. fp32 vs bf16 agreement, full grid: the default model (SmolLM2-135M) on the README prompts, and a
#    randomly initialised Llama-3.2-1B-shaped model (1.24 B parameters, built on the GPU: no download).
# 2. Full-grid throughput (every row x position: top-5, entropy, KL to final) in positions per second on
#    8 x 512 tokens of the default model, fp32: logitlens (hooks), logitlens's in-trace path (the code NDIF
#    runs, here as a local nnsight trace), the classic nnsight recipe (per row norm + lm_head + log-softmax,
#    .save(), stacked, then the statistics), and the floor (one forward pass + ONE product of every row x
#    position with the unembedding). Each output is checked against logitlens's before its time counts.
# 3. Peak GPU memory of each (torch.cuda.max_memory_allocated).
# Targets: logitlens >= 5x the recipe's throughput and within 1.5x of the floor.
#
# Needs nnsight for the recipe and the in-trace path (pip install 'logitlens[remote]'); without it those
# lines say "skipped". GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 runs the same code at toy sizes on a CPU
# (a smoke test of this script, not a measurement). Output: plain text on stdout, and
# .bench/gpu_check.json. Put the output in benchmarks/RESULTS.md with the card named.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
LIMIT="${GPU_CHECK_TIMEOUT:-470}"  # seconds: the whole check stays under 8 minutes

# nnsight compiles a traced block from its source file: the check runs from a file, not from stdin.
SCRIPT="$(mktemp "${TMPDIR:-/tmp}/gpu_check.XXXXXX.py")"
trap 'rm -f "$SCRIPT"' EXIT
cat >"$SCRIPT" <<'PYTHON'
import copy
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, "benchmarks")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

import common  # noqa: E402
from logitlens import LogitLens  # noqa: E402

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
SMALL = os.environ.get("GPU_CHECK_SMALL") == "1"
BATCH, TOKENS = (2, 32) if SMALL else (8, 512)
REPS = 2 if SMALL else 5
README_PROMPTS = [
    "The Eiffel Tower is in the city of",
    "The capital of Japan is the city of",
    "One, two, three, four, five, six, seven, eight, nine,",
    "Water boils at a temperature of one hundred degrees",
]
report: dict = {"device": DEVICE, "small": SMALL, "batch": BATCH, "tokens": TOKENS}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE.startswith("cuda") else float("nan")


def timed(fn, reps: int = REPS):
    """(median seconds over ``reps`` runs after one warm-up, the last output, peak GPU GB)."""
    fn()
    reset_peak()
    times, out = [], None
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out, peak_gb()


if DEVICE.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine (or GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1)")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    props = torch.cuda.get_device_properties(0)
    report["card"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
else:
    report["card"] = "cpu"
report["torch"] = torch.__version__
log(f"card: {report['card']}; torch {torch.__version__}; {BATCH} x {TOKENS} tokens")


# ---- 1. fp32 vs bf16 agreement ------------------------------------------------------------------------
def agreement(a, b) -> dict:
    """bf16 result b against fp32 result a, over every row x position."""
    top_a, top_b = a.top_ids[..., 0], b.top_ids[..., 0]
    valid = top_a >= 0
    last = a.top_ids[:, -1, :, 0] >= 0
    return {
        "top1_agree_all_rows": float((top_a == top_b)[valid].float().mean()),
        "top1_agree_output_row": float((top_a[:, -1] == top_b[:, -1])[last].float().mean()),
        "max_abs_diff_top1_prob": float((a.top_probs[..., 0] - b.top_probs[..., 0]).abs().nan_to_num().max()),
        "median_abs_diff_kl_to_final": float((a.kl_to_final - b.kl_to_final).abs()[valid].median()),
    }


def default_agreement() -> None:
    fp32 = LogitLens.from_pretrained("default", device=DEVICE)
    bf16 = LogitLens.from_pretrained("default", device=DEVICE, dtype="bfloat16")
    a, b = fp32.run(README_PROMPTS, top_k=5), bf16.run(README_PROMPTS, top_k=5)
    finals = [a.token(a.top_ids[i, -1, a.column_at(i, -1), 0]) for i in range(len(README_PROMPTS))]
    finals_b = [b.token(b.top_ids[i, -1, b.column_at(i, -1), 0]) for i in range(len(README_PROMPTS))]
    report["agreement_default"] = {**agreement(a, b), "final_top1_fp32": finals, "final_top1_bf16": finals_b}
    log(f"default model fp32 vs bf16: {report['agreement_default']}")
    del fp32, bf16


def llama_1b_agreement() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True)  # fmt: skip
    if SMALL:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True)  # fmt: skip
    config = LlamaConfig(**shape, max_position_embeddings=2048)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config).eval()  # fp32, initialised on the device
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (4, 64), generator=g)
    a = LogitLens(model, None, name="llama-1b-random").run(ids, top_k=5)
    half = LogitLens(model.to(torch.bfloat16), None, name="llama-1b-random-bf16")
    b = half.run(ids, top_k=5)
    report["agreement_llama_1b"] = {"params": n_params, **agreement(a, b)}
    log(f"random Llama ({n_params / 1e9:.2f} B) fp32 vs bf16: {report['agreement_llama_1b']}")
    del model, half


default_agreement()
llama_1b_agreement()


# ---- 2 and 3. throughput and peak memory on BATCH x TOKENS, default model, fp32 -----------------------
lens = LogitLens.from_pretrained("default", device=DEVICE)
model, tok = lens.model, lens.tokenizer
doc = tok(common.DOCUMENT)["input_ids"]
rows = [(doc * (BATCH * TOKENS // len(doc) + 2))[i * 97 : i * 97 + TOKENS] for i in range(BATCH)]
ids = torch.tensor(rows)  # (B, T) distinct windows of the document, no padding
positions = BATCH * TOKENS
results: dict = {}


def run_logitlens():
    return lens.run(ids, top_k=common.TOP_K, batch_size=BATCH)


seconds, ref_res, peak = timed(run_logitlens)
ref = common.lens_outputs(ref_res, "full")
results["logitlens"] = {"seconds": seconds, "positions_per_s": positions / seconds, "peak_gpu_gb": peak}
log(f"logitlens: {positions / seconds:,.0f} positions/s ({seconds:.3f} s), peak {peak:.2f} GB")


def run_floor():
    with torch.inference_mode():
        hs = model.model(input_ids=ids.to(DEVICE), output_hidden_states=True, use_cache=False).hidden_states
        h = torch.stack(hs, 1)  # (N, R, T, d)
        return torch.mm(h.reshape(-1, h.shape[-1]), model.get_output_embeddings().weight.t())  # ONE product


seconds, _, peak = timed(run_floor)
results["floor"] = {"seconds": seconds, "positions_per_s": positions / seconds, "peak_gpu_gb": peak}
log(f"floor: {positions / seconds:,.0f} positions/s ({seconds:.3f} s), peak {peak:.2f} GB")

try:
    import nnsight
except ImportError:
    nnsight = None
    log("nnsight not installed: the recipe and the in-trace path are skipped (pip install 'logitlens[remote]')")

if nnsight is not None:
    from nnsight import LanguageModel

    recipe_model = LanguageModel(copy.deepcopy(model), tokenizer=tok)  # nnsight instruments what it wraps

    def run_recipe():
        saved = []
        with torch.inference_mode(), recipe_model.trace(
            {"input_ids": ids.to(DEVICE), "attention_mask": torch.ones_like(ids).to(DEVICE)}
        ):
            h = recipe_model.model.embed_tokens.output
            saved.append(torch.log_softmax(recipe_model.lm_head(recipe_model.model.norm(h)), -1).save())
            for layer in recipe_model.model.layers:
                h = layer.output
                h = h[0] if isinstance(h, tuple) else h
                saved.append(torch.log_softmax(recipe_model.lm_head(recipe_model.model.norm(h)), -1).save())
        logp = torch.stack(saved, 1)  # (N, R, T, V)
        del saved
        return {k: v.cpu() for k, v in common.stats_from_logp(logp, "full", []).items()}

    try:
        seconds, out, peak = timed(run_recipe, reps=max(1, REPS // 2))
        check = common.compare(ref, out)
        results["nnsight recipe"] = {"seconds": seconds, "positions_per_s": positions / seconds,
                                     "peak_gpu_gb": peak, "agrees": check["ok"], "check": check}  # fmt: skip
        log(f"nnsight recipe: {positions / seconds:,.0f} positions/s ({seconds:.3f} s), peak {peak:.2f} GB, "
            f"agrees with logitlens: {check['ok']} {check['problems'][:2]}")  # fmt: skip
    except torch.OutOfMemoryError as exc:
        results["nnsight recipe"] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
        log(f"nnsight recipe: OUT OF MEMORY ({str(exc).splitlines()[0]})")
    del recipe_model
    reset_peak()

    # The remote path's code (capture, decode, reduction, self-check inside one trace) as a local trace.
    in_trace = LogitLens(nnsight.TransformersModel(copy.deepcopy(model), tokenizer=tok), name="default-nnsight")
    backend = in_trace.backend
    cells = [(b, j) for b in range(BATCH) for j in range(TOKENS)]
    next_ids = torch.tensor([rows[b][j + 1] if j + 1 < TOKENS else -1 for b, j in cells])
    gather = torch.arange(TOKENS).expand(BATCH, TOKENS)
    mask = torch.ones_like(ids)

    def run_remote_path():
        return backend.remote_stats(ids, mask, gather, in_trace.rows(), cells, next_ids, [], common.TOP_K,
                                    in_trace.budget_bytes, None, False)  # fmt: skip

    try:
        seconds, st, peak = timed(run_remote_path, reps=max(1, REPS // 2))
        n_rows = len(in_trace.rows())
        out = {k: st[k].view(BATCH, TOKENS, n_rows, *st[k].shape[2:]).transpose(1, 2)
               for k in ("top_ids", "top_probs", "entropy", "kl_to_final")}  # fmt: skip
        check = common.compare(ref, out)
        results["in-trace (NDIF path)"] = {"seconds": seconds, "positions_per_s": positions / seconds,
                                           "peak_gpu_gb": peak, "agrees": check["ok"],
                                           "bytes_returned": backend.last_run.bytes_returned,
                                           "recipe_bytes": backend.last_run.recipe_bytes}  # fmt: skip
        log(f"in-trace (NDIF path): {positions / seconds:,.0f} positions/s ({seconds:.3f} s), peak "
            f"{peak:.2f} GB, agrees: {check['ok']}, returns {backend.last_run.bytes_returned:,} B vs the "
            f"recipe's {backend.last_run.recipe_bytes:,} B")  # fmt: skip
    except torch.OutOfMemoryError as exc:
        results["in-trace (NDIF path)"] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}

report["throughput"] = results


# ---- verdicts -----------------------------------------------------------------------------------------
def ratio(a: str, b: str) -> float | None:
    x, y = results.get(a, {}), results.get(b, {})
    if "positions_per_s" not in x or "positions_per_s" not in y:
        return None
    return x["positions_per_s"] / y["positions_per_s"]


print()
print(f"## GPU check: {report['card']}, torch {torch.__version__}, {BATCH} x {TOKENS} tokens, default model fp32")
print()
print("| tool | positions/s | s per run | peak GPU memory | agrees |")
print("|---|---:|---:|---:|---|")
for name, r in results.items():
    if "error" in r:
        print(f"| {name} | - | - | - | {r['error']} |")
        continue
    agrees = {True: "yes", False: "NO"}.get(r.get("agrees"), "(reference)" if name == "logitlens" else "-")
    print(f"| {name} | {r['positions_per_s']:,.0f} | {r['seconds']:.3f} | {r['peak_gpu_gb']:.2f} GB | {agrees} |")
print()
speedup, of_floor = ratio("logitlens", "nnsight recipe"), ratio("floor", "logitlens")
if speedup is not None:
    print(f"- logitlens / recipe: {speedup:.1f}x (target >= 5x): {'MET' if speedup >= 5 else 'MISSED'}")
if of_floor is not None:
    print(f"- floor / logitlens: {of_floor:.2f}x (target <= 1.5x): {'MET' if of_floor <= 1.5 else 'MISSED'}")
for key in ("agreement_default", "agreement_llama_1b"):
    a = report[key]
    print(f"- fp32 vs bf16, {key.removeprefix('agreement_')}: top-1 agrees on {a['top1_agree_all_rows']:.1%} of "
          f"cells ({a['top1_agree_output_row']:.1%} of output-row cells), max |dp(top-1)| "
          f"{a['max_abs_diff_top1_prob']:.3g}")  # fmt: skip
report["seconds"] = time.perf_counter() - T0
out = Path(".bench/gpu_check.json")
out.parent.mkdir(exist_ok=True)
out.write_text(json.dumps(report, indent=1, default=str))
print(f"- total {report['seconds']:.0f} s; JSON in {out}")
PYTHON
timeout --signal=INT --kill-after=10 "$LIMIT" "$PY" "$SCRIPT"

# 4. Data-parallel eval (issue 22): tokens/s of one rank against one rank per GPU (torchrun), same table.
NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
if [ "${NGPU:-0}" -ge 1 ]; then
  RANKS="1"; [ "$NGPU" -gt 1 ] && RANKS="1,$NGPU"
  timeout --signal=INT --kill-after=10 300 "$PY" benchmarks/bench_distributed.py --device cuda --ranks "$RANKS" \
    --sequences 64 --seq-len 512 --batch-size 8
else
  echo "bench_distributed: no CUDA device (skipped)"
fi

# 5. The tests that need a GPU, skipped on CPU machines: the GPU reduction, tuned lens and attribution
# equal the CPU ones (they kill the device-placement mutants that a CPU cannot tell apart).
timeout --signal=INT --kill-after=10 180 "$PY" -m pytest -q -p no:cacheprovider \
  tests/engine/test_reduce_mutants.py tests/engine/test_tuned_mutants.py tests/tasks/test_attribution_mutants.py -k gpu
