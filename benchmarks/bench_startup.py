"""Time to a first answer: ``logitlens run Hello`` against the bare minimum, side by side in one run.

The bare minimum (a child process): import torch and transformers, load the default model the way logitlens
loads it (the cached fp32 safetensors folder: AutoTokenizer + AutoModelForCausalLM, float32), run one
forward on "Hello" and print the next token. logitlens (a child process): ``python -m logitlens run Hello
--quiet --json F`` (the same model, its load-time self-check, the lens over every row, the JSON written).
One untimed warm-up of each (the page cache), then ``--reps`` timed pairs whose order alternates (bare
first, then logitlens first), so that a machine busy with other work slows both alike.

Reported: the median wall time of each, their ratio (goal: logitlens <= 1.3x the bare minimum), the median
of the per-pair ratios, and the CPU time (user + system, from wait4) of each, which a busy machine moves
less than the wall time. Also whether logitlens left anything on stderr but its one "wrote" line.

    .venv/bin/python benchmarks/bench_startup.py [--reps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common  # benchmarks/ is the script's folder

TARGET_RATIO = 1.3

BARE = """\
import sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
with torch.inference_mode():
    logits = model(**tok("Hello", return_tensors="pt")).logits
print(repr(tok.decode(int(logits[0, -1].argmax()))))
"""


def timed_child(cmd: list[str], threads: int | None = None) -> dict:
    """Run one child to the end: wall seconds, CPU seconds (user + system), exit code, stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(common.ROOT / "src")}
    if threads:  # torch's intra-op threads (OpenMP) of both children
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env, cwd=common.ROOT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "exit": os.waitstatus_to_exitcode(status),
        "stderr": stderr,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed pairs (default 5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of both children (OMP_NUM_THREADS; default: torch's own choice). On a machine "
        "shared with other work, 1 keeps a descheduled thread from stalling the other's matrix products",
    )
    args = parser.parse_args()
    model = common.model_path()  # converts the default model once if needed, before anything is timed
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.json")
        cmds = {
            "bare minimum": [sys.executable, "-c", BARE, model],
            "logitlens run": [sys.executable, "-m", "logitlens", "run", "Hello", "--quiet", "--json", out],
        }
        print(f"bench_startup: {common.machine()} | {common.versions()}")
        for name, cmd in cmds.items():  # warm-up: the page cache, .pyc files
            r = timed_child(cmd, args.threads)
            if r["exit"] != 0:
                print(f"{name} failed (exit {r['exit']}):\n{r['stderr']}", file=sys.stderr)
                return 1
        times: dict[str, list[dict]] = {name: [] for name in cmds}
        for rep in range(args.reps):
            order = list(cmds) if rep % 2 == 0 else list(reversed(cmds))
            for name in order:
                times[name].append(timed_child(cmds[name], args.threads))
    bare, ours = times["bare minimum"], times["logitlens run"]
    med = {
        name: {k: common.median([r[k] for r in rs]) for k in ("wall_s", "cpu_s")}
        for name, rs in times.items()
    }
    pair_ratio = common.median([o["wall_s"] / b["wall_s"] for o, b in zip(ours, bare, strict=True)])
    ratio = med["logitlens run"]["wall_s"] / med["bare minimum"]["wall_s"]
    cpu_ratio = med["logitlens run"]["cpu_s"] / med["bare minimum"]["cpu_s"]
    rows = [
        [name, f"{m['wall_s']:.2f}", f"{min(r['wall_s'] for r in times[name]):.2f}", f"{m['cpu_s']:.2f}"]
        for name, m in med.items()
    ]
    threads = f", OMP_NUM_THREADS={args.threads}" if args.threads else ""
    print(f"\n### Time to a first answer (median of {args.reps}, alternating{threads}; seconds)")
    print(common.table(["command", "wall", "fastest", "CPU (user+sys)"], rows))
    stray = sorted({line for r in ours for line in r["stderr"].splitlines() if not line.startswith("wrote ")})
    met = ratio <= TARGET_RATIO
    print(
        f"logitlens / bare minimum: {ratio:.2f}x wall (median of the pairs {pair_ratio:.2f}x), "
        f"{cpu_ratio:.2f}x CPU: target <= {TARGET_RATIO}x {'MET' if met else 'MISSED'}"
    )
    print(f"logitlens stderr besides 'wrote': {stray if stray else 'nothing'}")
    common.OUT_DIR.mkdir(exist_ok=True)
    summary = {
        "machine": common.machine(),
        "versions": common.versions(),
        "reps": args.reps,
        "threads": args.threads,
        "median": med,
        "ratio": ratio,
        "pair_ratio": pair_ratio,
        "cpu_ratio": cpu_ratio,
        "stray_stderr": stray,
        "target_met": met,
        "times": {name: [{k: r[k] for k in ("wall_s", "cpu_s")} for r in rs] for name, rs in times.items()},
    }
    (common.OUT_DIR / "startup.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {common.OUT_DIR / 'startup.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
