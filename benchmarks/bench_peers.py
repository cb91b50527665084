"""logitlens against its peers on the default model (SmolLM2-135M: 30 blocks, 31 rows, vocab 49152).

Tools, each in its own child process, back to back, on the same inputs (8 prompts x 10 tokens, and one
512-token document):
  logitlens  ``LogitLens.run`` (its outputs are the reference the others are checked against);
  nnsight    the classic recipe: ``model.trace``, per row final norm + lm_head + log-softmax, ``.save()``,
             stacked, then the same statistics (plus "nnsight sliced", which decodes only the last position
             inside the trace, for the last-position workload);
  tuned-lens 0.2.0's ``PredictionTrajectory.from_lens_and_model`` with ``LogitLens.from_model`` (one
             sequence per call), statistics from its ``entropy()`` / ``forward_kl()`` and top-k from its
             numpy log-probabilities the way its labels compute them;
  floor      one forward pass (hidden states) plus ONE matrix product of all decoded rows x positions with
             the unembedding, nothing else: what any logit lens must at least spend.
Workloads: full grid (top-5, entropy, KL to final, every row x position), last position only (the same
statistics at the last position), targets (probabilities of 4 tokens at every row x position).

A tool's time counts only if its outputs agree with logitlens's (top-1 identical, probabilities within
1e-4, entropy/KL within 1e-3 + 1e-4 relative). Peak resident memory: a separate child per tool runs the
full grid on the 512-token document once; the parent reads its ru_maxrss from wait4 (and the child
reports its own VmHWM as a cross-check).

    .venv/bin/python benchmarks/bench_peers.py --venv .venv-bench
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

import common  # noqa: E402  (benchmarks/ is the script's folder)

TOOLS = ["logitlens", "nnsight", "tunedlens", "floor"]
WORKLOADS = ["full", "last", "targets"]
INPUTS = ["prompts", "doc"]
REF_DIR = common.OUT_DIR / "peers"
# Rough peak of each tool's full grid on the 512-token document, GB (checked against MemAvailable first).
MEMORY_NEED_GB = {"logitlens": 2, "nnsight": 10, "tunedlens": 11, "floor": 5}
MIN_DOC_FULL_RUNS = 2  # the full grid on the document is timed at least twice, whatever --case-seconds says


# ---- the tools (run inside a child) -------------------------------------------------------------------
class LogitLensTool:
    # The floor again, in this process and interleaved with logitlens's runs: the logitlens / floor ratio
    # then does not depend on how loaded the machine was during another child.
    extra = ["floor_full", "floor_last"]

    def __init__(self, model, tokenizer):
        import logitlens

        self.lens = logitlens.LogitLens(model, tokenizer)
        self.floor = FloorTool(model, tokenizer)

    def run(self, workload: str, ids, targets: list[int]) -> dict:
        k = common.TOP_K
        if workload.startswith("floor_"):
            return self.floor.run(workload.removeprefix("floor_"), ids, targets)
        if workload == "full":
            return common.lens_outputs(self.lens.run(ids, top_k=k), "full")
        if workload == "last":
            return common.lens_outputs(self.lens.run(ids, top_k=k, positions=[-1]), "full")
        return common.lens_outputs(self.lens.run(ids, top_k=1, targets=targets), "targets")


class NNsightTool:
    """The classic nnsight logit-lens recipe."""

    extra = ["last_sliced"]

    def __init__(self, model, tokenizer):
        import warnings

        import nnsight
        from nnsight import LanguageModel

        warnings.filterwarnings("ignore", category=getattr(nnsight, "NNsightDeprecationWarning", Warning))
        self.lm = LanguageModel(model, tokenizer=tokenizer)

    def logp(self, ids, last_only: bool = False):
        import torch

        lm = self.lm
        saved = []
        with torch.inference_mode(), lm.trace({"input_ids": ids, "attention_mask": torch.ones_like(ids)}):
            h = lm.model.embed_tokens.output
            if last_only:
                h = h[:, -1:]
            saved.append(torch.log_softmax(lm.lm_head(lm.model.norm(h)), -1).save())
            for layer in lm.model.layers:
                h = layer.output
                if isinstance(h, tuple):
                    h = h[0]
                if last_only:
                    h = h[:, -1:]
                saved.append(torch.log_softmax(lm.lm_head(lm.model.norm(h)), -1).save())
        logp = torch.stack(saved, 1)  # (N, R, T, V)
        del saved
        return logp

    def run(self, workload: str, ids, targets: list[int]) -> dict:
        if workload == "full":
            return common.stats_from_logp(self.logp(ids), "full", targets)
        if workload == "last":
            return common.stats_from_logp(self.logp(ids)[:, :, -1:].clone(), "full", targets)
        if workload == "last_sliced":
            return common.stats_from_logp(self.logp(ids, last_only=True), "full", targets)
        return common.stats_from_logp(self.logp(ids), "targets", targets)


class TunedLensTool:
    """tuned-lens 0.2.0: PredictionTrajectory with its LogitLens (per sequence, numpy statistics)."""

    def __init__(self, model, tokenizer):
        from tuned_lens.nn.lenses import LogitLens
        from tuned_lens.plotting import PredictionTrajectory

        self.model = model
        self.lens = LogitLens.from_model(model)
        self.traj = PredictionTrajectory

    def trajectory(self, seq):
        # tokenizer=None: the statistics come without the plot labels (top-10 strings), which cost extra.
        return self.traj.from_lens_and_model(lens=self.lens, model=self.model, input_ids=seq.tolist())

    @staticmethod
    def topk(log_probs, k: int):
        """Top-k ids and probabilities the way PredictionTrajectory's labels compute them (numpy)."""
        import numpy as np

        idx = np.argpartition(log_probs, -k, axis=-1)[..., -k:]
        vals = np.take_along_axis(log_probs, idx, axis=-1)
        order = np.argsort(-vals, axis=-1)
        return np.take_along_axis(idx, order, axis=-1), np.exp(np.take_along_axis(vals, order, axis=-1))

    def run(self, workload: str, ids, targets: list[int]) -> dict:
        import numpy as np
        import torch

        per_seq = []
        for seq in ids:  # the API takes one sequence (seq_len,) at a time
            traj = self.trajectory(seq)
            if workload == "targets":
                per_seq.append({"target_probs": np.exp(traj.log_probs[..., targets])})
                continue
            if workload == "last":
                traj = traj.slice_sequence(slice(-1, None))
            top_ids, top_probs = self.topk(traj.log_probs, common.TOP_K)
            per_seq.append(
                {
                    "top_ids": top_ids,
                    "top_probs": top_probs,
                    "entropy": traj.entropy().stats,
                    "kl_to_final": traj.forward_kl().stats,
                }
            )
            del traj
        return {k: torch.from_numpy(np.stack([d[k] for d in per_seq])) for k in per_seq[0]}


class FloorTool:
    """One forward pass + ONE matrix product of every decoded row x position with the unembedding."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.weight = model.get_output_embeddings().weight  # (V, d)

    def run(self, workload: str, ids, targets: list[int]) -> dict:
        import torch

        with torch.inference_mode():
            hs = self.model.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
            h = torch.stack(hs, 1)  # (N, R, T, d)
            if workload == "last":
                h = h[:, :, -1:]
            logits = torch.mm(h.reshape(-1, h.shape[-1]), self.weight.t())  # ONE product
        return {"n_logits": logits.numel()}


TOOL_CLASSES = {
    "logitlens": LogitLensTool,
    "nnsight": NNsightTool,
    "tunedlens": TunedLensTool,
    "floor": FloorTool,
}


def child(tool_name: str, mode: str, reps_small: int, reps_doc: int, case_seconds: float) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_grad_enabled(False)
    path = common.model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    inputs = common.make_inputs(tokenizer)
    targets = inputs["targets"]
    tool = TOOL_CLASSES[tool_name](model, tokenizer)
    after_load = common.current_rss_mb()
    if mode == "memory":
        seconds, _ = common.timed(lambda: tool.run("full", inputs["doc"], targets))
        common.emit({"tool": tool_name, "rss_after_load_mb": after_load, "seconds": seconds})
        return
    if mode == "profile":  # where the time goes: one warm full grid on the 8 prompts, torch.profiler
        from torch.profiler import profile

        tool.run("full", inputs["prompts"], targets)
        with profile() as prof:
            tool.run("full", inputs["prompts"], targets)
        print(f"{tool_name}, full grid, 8 prompts x 10 tokens, ops by self CPU time:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        return

    common.init_probe()
    workloads = WORKLOADS + getattr(tool, "extra", [])
    cases = [(inp, w) for inp in INPUTS for w in workloads if not (w == "last_sliced" and inp == "doc")]
    checks, times = {}, {f"{i}/{w}": [] for i, w in cases}
    skipped = {}
    if (
        common.mem_available_gb() < MEMORY_NEED_GB[tool_name] + 2
    ):  # a shared machine: never risk the OOM killer
        skipped = {f"doc/{w}": f"skipped: {common.mem_available_gb():.1f} GB available" for w in workloads}
        cases = [(i, w) for i, w in cases if i != "doc"]
    for inp, w in cases:  # first run: warm-up and the output check (on the document it is also timed)
        ids = inputs[inp]
        seconds, out = common.timed(lambda ids=ids, w=w: tool.run(w, ids, targets))
        ref_path = REF_DIR / f"{inp}_{'last' if w == 'last_sliced' else w}.pt"
        if w.startswith("floor_"):
            checks[f"{inp}/{w}"] = {"ok": True, "note": "not checked: no statistics"}
        elif tool_name == "logitlens":
            common.save_ref(ref_path, out)
            checks[f"{inp}/{w}"] = {"ok": True, "reference": True}
        elif tool_name == "floor":
            checks[f"{inp}/{w}"] = {"ok": True, "note": "not checked: no statistics"}
        elif not ref_path.exists():
            checks[f"{inp}/{w}"] = {"ok": False, "problems": ["no logitlens reference: run logitlens first"]}
        else:
            checks[f"{inp}/{w}"] = common.compare(common.load_ref(ref_path), out)
        del out
        if inp == "doc":
            times[f"{inp}/{w}"].append(seconds)
    probes = []
    for _rep in range(max(reps_small, reps_doc)):
        for inp, w in cases:
            done = times[f"{inp}/{w}"]
            floor_runs = MIN_DOC_FULL_RUNS if (inp, w) == ("doc", "full") else 1
            if len(done) >= (reps_doc if inp == "doc" else reps_small):
                continue
            if sum(done) >= case_seconds and len(done) >= floor_runs:
                continue  # a slow case that already took its share of the time budget
            seconds, out = common.timed(lambda ids=inputs[inp], w=w: tool.run(w, ids, targets))
            del out
            times[f"{inp}/{w}"].append(seconds)
        probes.append(common.probe_seconds())
    common.emit(
        {
            "tool": tool_name,
            "versions": common.versions(),
            "threads": torch.get_num_threads(),
            "rss_after_load_mb": after_load,
            "checks": checks,
            "skipped": skipped,
            "times": times,
            "probe_median_s": common.median(probes),
        }
    )


# ---- the parent ---------------------------------------------------------------------------------------
def fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default=".venv-bench", help="venv (relative to the repo) with every tool")
    parser.add_argument("--venv-nnsight", help="a separate venv for nnsight (default: --venv)")
    parser.add_argument("--venv-tunedlens", help="a separate venv for tuned-lens (default: --venv)")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS)
    )
    parser.add_argument("--reps-small", type=int, default=5, help="timed runs on the 8 prompts")
    parser.add_argument("--reps-doc", type=int, default=2, help="timed runs on the 512-token document")
    parser.add_argument(
        "--case-seconds",
        type=float,
        default=15,
        help="stop repeating a (tool, input, workload) once its runs add up to this (keeps make bench short)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--mode", default="time", choices=["time", "memory", "profile"], help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--profile",
        choices=TOOLS,
        help="print a torch.profiler table of TOOL's full grid (8 prompts) and stop",
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.mode, args.reps_small, args.reps_doc, args.case_seconds)
        return 0

    tools = [t for t in args.tools.split(",") if t]
    venvs = {t: args.venv for t in TOOLS}
    venvs["nnsight"] = args.venv_nnsight or args.venv
    venvs["tunedlens"] = args.venv_tunedlens or args.venv
    env = {"LOGITLENS_BENCH_MODEL": common.model_path()}  # converted once, here
    if args.profile:
        cmd = [common.python_of(venvs[args.profile]), __file__, "--child", args.profile, "--mode", "profile"]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **env}
        return subprocess.run(cmd, env=full_env, cwd=common.ROOT).returncode
    print(f"bench_peers: {common.machine()}; model {env['LOGITLENS_BENCH_MODEL']}")
    REF_DIR.mkdir(parents=True, exist_ok=True)
    if "logitlens" in tools:
        for old in REF_DIR.glob("*.pt"):
            old.unlink()
    if "logitlens" in tools:  # the reference goes first
        tools = ["logitlens"] + [t for t in tools if t != "logitlens"]

    results: dict[str, dict] = {}
    base = [__file__, "--reps-small", str(args.reps_small), "--reps-doc", str(args.reps_doc)]
    base += ["--case-seconds", str(args.case_seconds)]
    for t in tools:
        py = common.python_of(venvs[t])
        t0 = time.perf_counter()
        results[t] = common.run_child([py, *base, "--child", t], timeout=900, env=env)
        status = results[t].get("error") or "done"
        print(f"  {t:10s} ({venvs[t]}): {status} in {time.perf_counter() - t0:.0f} s", flush=True)
    memory: dict[str, dict] = {}
    if not args.no_memory:
        for t in tools:
            need, avail = MEMORY_NEED_GB[t], common.mem_available_gb()
            if avail < need + 3:
                memory[t] = {"error": f"skipped: needs ~{need} GB, {avail:.1f} GB available"}
                continue
            py = common.python_of(venvs[t])
            memory[t] = common.run_child(
                [py, __file__, "--child", t, "--mode", "memory"], timeout=900, env=env
            )
            print(f"  memory {t:10s}: {memory[t].get('error') or 'done'}", flush=True)

    report = render(results, memory, args)
    print()
    print(report)
    common.OUT_DIR.mkdir(exist_ok=True)
    (common.OUT_DIR / "peers.json").write_text(json.dumps({"results": results, "memory": memory}, indent=1))
    (common.OUT_DIR / "peers.md").write_text(report + "\n")
    print(f"\nwrote {common.OUT_DIR / 'peers.json'} and peers.md")
    return 0


def render(results: dict, memory: dict, args) -> str:
    out: list[str] = []
    med = {}
    for t, r in results.items():
        for key, xs in (r.get("times") or {}).items():
            med[(t, key)] = common.median(xs)
    ll = results.get("logitlens", {})
    lines = [f"{t}: {r.get('versions', {})}, threads {r.get('threads')}" for t, r in results.items()]
    out.append("Versions: " + "; ".join(lines))
    out.append(
        "Load probe (a fixed matmul timed in each child; equal values = equally loaded machine): "
        + ", ".join(f"{t} {r.get('probe_median_s', float('nan')):.3f} s" for t, r in results.items())
    )
    names = {"prompts": "8 prompts x 10 tokens", "doc": "one 512-token document"}
    wl = {"full": "full grid", "last": "last position", "targets": "targets (4 tokens)"}
    verdicts = []
    for inp in INPUTS:
        reps = args.reps_doc if inp == "doc" else args.reps_small
        out.append(
            f"\n### {names[inp]} (median of up to {reps} runs, fewer for cases over {args.case_seconds:.0f} s "
            "in all; seconds; ratio = tool / logitlens)"
        )
        rows = []
        for w in WORKLOADS:
            key = f"{inp}/{w}"
            base = med.get(("logitlens", key))
            variants = [(t, key, t) for t in results]
            if w == "last" and "nnsight" in results and inp == "prompts":
                variants.insert(2, ("nnsight", f"{inp}/last_sliced", "nnsight sliced"))
            if "logitlens" in results:  # the floor interleaved with logitlens in its own process
                same = f"{inp}/floor_{'last' if w == 'last' else 'full'}"
                variants.append(("logitlens", same, "floor, same process"))
            for t, k, label in variants:
                is_floor = t == "floor" or label.startswith("floor")
                r = results[t]
                if "error" in r:
                    rows.append([wl[w], label, "FAILED", "", "", r["error"][:80]])
                    continue
                x = med.get((t, k))
                if k in r.get("skipped", {}):
                    rows.append([wl[w], label, "skipped", "", "", r["skipped"][k]])
                if x is None:
                    continue
                check = r["checks"].get(k, {})
                if is_floor:
                    note = "not checked (no statistics)"
                elif t == "logitlens":
                    note = "reference"
                elif check.get("ok"):
                    ties = check.get("top1_near_ties", 0)
                    note = "outputs agree" + (f" ({ties} near ties)" if ties else "")
                else:
                    note = "CHECK FAILED: " + "; ".join(check.get("problems", []))[:90]
                ok = t == "logitlens" or is_floor or check.get("ok")
                if is_floor:
                    ratio = f"logitlens = {base / x:.2f}x floor" if base else ""
                else:
                    ratio = f"{x / base:.2f}x" if base and ok else ("n/a" if not ok else "")
                runs = len(r["times"][k])
                rows.append([wl[w], label, fmt_s(x), str(runs), ratio, note])
        out.append(common.table(["workload", "tool", "median s", "runs", "ratio", "check"], rows))

    def speedup(tool: str, key: str) -> float | None:
        r = results.get(tool, {})
        if "error" in r or not r.get("checks", {}).get(key, {}).get("ok"):
            return None
        a, b = med.get((tool, key)), med.get(("logitlens", key))
        return a / b if a and b else None

    def verdict(what: str, value: float | None, target: float, higher: bool = True) -> None:
        if value is None:
            verdicts.append(f"- {what}: NOT MEASURED (tool failed its check or did not run)")
            return
        met = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        verdicts.append(f"- {what}: {value:.2f}x (target {sign} {target}x) {'MET' if met else 'MISSED'}")

    if "error" not in ll:
        for inp in INPUTS:
            key = f"{inp}/full"
            verdict(f"full grid, {names[inp]}, nnsight / logitlens", speedup("nnsight", key), 3.0)
            verdict(f"full grid, {names[inp]}, tuned-lens / logitlens", speedup("tunedlens", key), 3.0)
            base = med.get(("logitlens", key))
            for label, floor in (
                ("floor in logitlens's process", med.get(("logitlens", f"{inp}/floor_full"))),
                ("floor in its own process", med.get(("floor", key))),
            ):
                value = base / floor if floor and base else None
                verdict(f"full grid, {names[inp]}, logitlens / {label}", value, 1.3, higher=False)
            verdict(
                f"last position, {names[inp]}, nnsight / logitlens", speedup("nnsight", f"{inp}/last"), 10.0
            )

    if memory:
        out.append("\n### Peak resident memory, full grid on the 512-token document (one child per tool)")
        rows = []
        for t, m in memory.items():
            if "error" in m:
                rows.append(
                    [t, "FAILED" if "skipped" not in m["error"] else "skipped", "", "", m["error"][:90]]
                )
            else:
                rows.append(
                    [
                        t,
                        f"{m['peak_rss_mb'] / 1024:.2f} GB",
                        f"{m['vm_hwm_mb'] / 1024:.2f} GB",
                        f"{m['rss_after_load_mb'] / 1024:.2f} GB",
                        f"{m['seconds']:.1f} s",
                    ]
                )
        out.append(common.table(["tool", "peak RSS", "VmHWM", "RSS after load", "run"], rows))
        a, b = memory.get("logitlens", {}), memory.get("nnsight", {})
        if "peak_rss_mb" in a and "peak_rss_mb" in b and "error" not in a and "error" not in b:
            frac = a["peak_rss_mb"] / b["peak_rss_mb"]
            met = frac <= 1 / 3
            verdicts.append(
                f"- peak memory, logitlens / nnsight on 512 tokens: {frac:.2f} (target <= 0.33) "
                f"{'MET' if met else 'MISSED'}"
            )
    out.append("\n### Targets")
    out.extend(verdicts)
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
