"""Shared pieces of the benchmarks: inputs, the recipes' statistics, output checks, timing, child processes.

Both benchmark scripts run every measured tool in a child process (``python SCRIPT --child ...``) that
prints one JSON line; the parent reads it and the child's peak resident size from ``os.wait4``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / ".bench"  # gitignored: JSON results and reference outputs
JSON_MARK = "BENCH_JSON "  # a child's result line starts with this

N_PROMPTS, PROMPT_TOKENS, DOC_TOKENS, LONG_TOKENS = 8, 10, 512, 2048
TOP_K = 5
PROB_TOL = 1e-4  # top-k and target probabilities must agree this closely (absolute)
# Entropy and KL (nats): |a - b| <= STAT_ATOL + STAT_RTOL * |a|. KL reaches ~200 nats at the early rows
# (logits up to ~180 in magnitude), where fp32 alone leaves ~1e-5 relative.
STAT_ATOL, STAT_RTOL = 1e-3, 1e-4

# Eight prompts, each cut to its first 10 tokens (no padding anywhere, so every tool sees the same batch).
PROMPTS = [
    "The Eiffel Tower is in the city of Paris, the capital of France",
    "The capital of Japan is the city of Tokyo, which is also its largest",
    "One, two, three, four, five, six, seven, eight, nine",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Water boils at a temperature of one hundred degrees Celsius at sea level",
    "The quick brown fox jumps over the lazy dog and runs into the forest",
    "In 1492, Columbus sailed across the Atlantic Ocean and reached the islands",
    "My favourite colour is blue because the sky and the sea are both blue",
]
# Tracked tokens for the target workload (their first token each).
TARGETS = [" Paris", " Tokyo", " the", " blue"]

# An original expository text; cycled to make the 512- and 2048-token documents.
DOCUMENT = """\
Lighthouses were once the most important machines on any coast. Before satellites and radio, a ship that
approached land at night had only the stars, a compass, a chart and the hope of a light. The first lights
were open fires on hills or towers, fed with wood or coal by keepers who climbed the stairs many times a
night. A fire is a poor lamp: most of its light escapes upward or sideways, and rain or wind can put it out
just when it is needed most.

In the eighteenth century engineers began to use oil lamps with polished metal reflectors behind them. A
curved mirror gathers the light that would have gone backwards and sends it out toward the sea in a
narrow beam. The beam can be seen from much farther away, and a lamp that burns oil is easier to keep
steady than a fire. Keepers trimmed the wicks, cleaned the soot from the glass and wound the clockwork
that turned the lamps, so that each light flashed with its own pattern. Sailors learned the patterns and
could tell one lighthouse from another by counting the seconds between flashes.

The great change came in the 1820s, when the French physicist Augustin Fresnel designed a lens made of
many rings of glass prisms. A solid lens large enough to focus a lighthouse lamp would have been far too
heavy and thick, and it would have absorbed much of the light. Fresnel's rings bend the light in the same
way as a thick lens but use only a fraction of the glass. The best of these lenses were taller than a
person and could send a beam more than twenty miles out to sea. They were made by hand, polished for
months, and shipped around the world in wooden crates.

Life at a lighthouse was quiet but demanding. Keepers and their families often lived on rocks or islands
far from any town. Supplies arrived by boat when the weather allowed, and storms could cut a station off
for weeks. The keeper wrote in a logbook every night: the time the lamp was lit, the state of the sky,
the ships that passed and any fog that forced them to sound the horn. Many keepers rescued sailors from
wrecks, rowing small boats into heavy seas.

Today almost every lighthouse is automatic. Electric lamps switch on at dusk, sensors measure fog, and
the stations are checked by technicians who visit a few times a year. Ships rely on satellite navigation,
yet the lights still shine, because a system that needs no power from space and no working receiver on
board is a valuable backup. Many old towers have become museums, where visitors can climb the stairs,
look through the great glass lens and imagine the nights when a single flame stood between a crew and the
rocks.
"""


# ---- inputs -------------------------------------------------------------------------------------------
def model_path() -> str:
    """The cached default model (a plain Hugging Face folder); converted by the project venv if needed."""
    if os.environ.get("LOGITLENS_BENCH_MODEL"):
        return os.environ["LOGITLENS_BENCH_MODEL"]
    from logitlens.model.default_model import model_dir

    return str(model_dir())


def make_inputs(tokenizer) -> dict:
    """Token ids: 'prompts' (8, 10), 'doc' (1, 512), 'long' (1, 2048); 'targets' token ids."""
    import torch

    prompts = []
    for text in PROMPTS:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) >= PROMPT_TOKENS, f"prompt too short: {text!r}"
        prompts.append(ids[:PROMPT_TOKENS])
    doc_ids = tokenizer(DOCUMENT)["input_ids"]

    def cycle(n: int) -> list[int]:
        return [doc_ids[i % len(doc_ids)] for i in range(n)]

    targets = [tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in TARGETS]
    return {
        "prompts": torch.tensor(prompts),
        "doc": torch.tensor([cycle(DOC_TOKENS)]),
        "long": torch.tensor([cycle(LONG_TOKENS)]),
        "targets": targets,
    }


# ---- the recipes' statistics --------------------------------------------------------------------------
def stats_from_logp(logp, workload: str, targets: list[int], top_k: int = TOP_K) -> dict:
    """Statistics from stacked log-probabilities (N, R, P, V) fp32, computed the plain way, consuming logp.

    workload 'full' and 'last': top-k ids/probs, entropy, KL(final || row); 'targets': target probabilities.
    At most one full-size temporary is alive at a time (a careful user's version of the recipe).
    """

    if workload == "targets":
        return {"target_probs": logp[..., targets].exp()}
    top_lp, top_ids = logp.topk(top_k, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    del p
    logp_final = logp[:, -1:].clone()  # (N, 1, P, V)
    diff = logp.neg_().add_(logp_final)  # in place: log p_f - log p_r
    kl = diff.mul_(logp_final.exp_()).sum(-1)  # KL(final || r)
    return {"top_ids": top_ids, "top_probs": top_lp.exp(), "entropy": entropy, "kl_to_final": kl}


def lens_outputs(res, workload: str) -> dict:
    """The same fields from a LensResult (N, R, P, ...)."""
    if workload == "targets":
        return {"target_probs": res.target_probs}
    return {
        "top_ids": res.top_ids,
        "top_probs": res.top_probs,
        "entropy": res.entropy,
        "kl_to_final": res.kl_to_final,
    }


def compare(ref: dict, out: dict) -> dict:
    """Check ``out`` against logitlens's ``ref``: top-1 identical, probabilities within PROB_TOL,
    entropy/KL within STAT_ATOL + STAT_RTOL * |value|. A top-1 that differs only where logitlens's own top-1 and top-2 are
    within PROB_TOL of each other (a near tie that fp32 rounding may flip) is counted as a tie, not a
    failure."""
    import torch

    report: dict = {"ok": True, "problems": []}
    for key in ref:
        if key.startswith("_") or key not in out:
            if not key.startswith("_"):
                report["ok"] = False
                report["problems"].append(f"missing {key}")
            continue
        a, b = ref[key], torch.as_tensor(out[key])
        if tuple(a.shape) != tuple(b.shape):
            report["ok"] = False
            report["problems"].append(f"{key}: shape {tuple(b.shape)} != {tuple(a.shape)}")
            continue
        if key == "top_ids":
            differ = a[..., 0] != b[..., 0]
            probs = ref["top_probs"]
            tie = differ & (b[..., 0] == a[..., 1]) & ((probs[..., 0] - probs[..., 1]) <= PROB_TOL)
            report["top1_mismatch"] = int((differ & ~tie).sum())
            report["top1_near_ties"] = int(tie.sum())
            if report["top1_mismatch"]:
                report["ok"] = False
                report["problems"].append(f"top-1 differs in {report['top1_mismatch']} cells")
            continue
        diff = (a.double() - b.double()).abs()
        worst = float(diff.max()) if diff.numel() else 0.0
        report[f"max_diff_{key}"] = worst
        tol = PROB_TOL if "prob" in key else STAT_ATOL + STAT_RTOL * a.double().abs()
        bad = ~(diff <= tol)  # NaN fails too
        if bad.any():
            report["ok"] = False
            report["problems"].append(f"{key}: {int(bad.sum())} cells off, max diff {worst:.2e}")
    return report


def save_ref(path: Path, outputs: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in outputs.items() if not k.startswith("_")}, path)


def load_ref(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


# ---- timing -------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def probe_seconds() -> float:
    """A fixed fp32 matrix product (~0.1 s here): measures how loaded the machine is right now."""
    import torch

    a, b = _PROBE
    with torch.inference_mode():
        t0 = time.perf_counter()
        torch.mm(a, b)
        return time.perf_counter() - t0


def _make_probe():
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(256, 576, generator=g), torch.randn(576, 49152, generator=g)


_PROBE = None


def init_probe() -> None:
    global _PROBE
    _PROBE = _make_probe()
    probe_seconds()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def hwm_rss_mb() -> float:
    """This process's own peak RSS since exec (VmHWM). Unlike ru_maxrss it never includes the peak of the
    process that spawned it (Linux carries the parent's high-water mark into a fork+exec'd child)."""
    return _status_mb("VmHWM")


def mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


# ---- child processes ----------------------------------------------------------------------------------
def emit(result: dict) -> None:
    """A child's answer: one JSON line on stdout (with its own VmHWM)."""
    print(JSON_MARK + json.dumps({**result, "vm_hwm_mb": hwm_rss_mb()}), flush=True)


def run_child(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run a child; return its JSON (or an error) and its peak resident size (wait4's ru_maxrss), in MB."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    full_env.update(env or {})
    parent_peak = peak_rss_mb()  # a child's ru_maxrss is at least this: spawn memory children early
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=full_env, cwd=ROOT)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - t0
    peak = usage.ru_maxrss / 1024  # Linux: KiB
    result = None
    for line in stdout.splitlines():
        if line.startswith(JSON_MARK):
            result = json.loads(line[len(JSON_MARK) :])
    if result is None:
        why = f"timed out after {timeout:.0f} s" if timed_out else f"exit code {proc.returncode}"
        tail = " / ".join((stderr or "").strip().splitlines()[-4:])
        return {"error": f"{why}: {tail}", "wall_s": wall, "peak_rss_mb": peak}
    result.update(wall_s=wall, peak_rss_mb=peak, parent_peak_mb=parent_peak)
    return result


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
            mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    isa = "?"
    try:  # the vector instructions torch's CPU kernels use (AVX2, AVX512): timings differ between them
        import torch

        isa = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        pass
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "ram": mem, "python": platform.python_version()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "logitlens", "nnsight", "tuned-lens"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (prints fine in a terminal too)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def python_of(venv: str) -> str:
    exe = ROOT / venv / "bin" / "python"
    return str(exe) if exe.exists() else sys.executable
