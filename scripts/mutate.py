"""Mutation testing, one module at a time, each against its own tests (``make mutate``).

For every module named (default: all of MODULES), this script copies ``src/``, ``tests/`` and
``pyproject.toml`` into a scratch folder (the working tree is never touched: other people may be running
tests in it), writes a ``setup.cfg`` that points mutmut at that ONE source file and that module's test
files, runs ``mutmut run`` there, and prints the score:

    killed / (mutants - known equivalents)

A mutant "survives" when every selected test still passes with it. Each survivor is printed with its diff
(``mutmut show``); a survivor either gets a test that kills it, or is an equivalent mutant (no observable
behaviour changes) and goes into EQUIVALENT below with the reason.

Usage:
    python scripts/mutate.py                         # every module in MODULES
    python scripts/mutate.py reduce tuned            # some of them
    python scripts/mutate.py views/model --jobs 2 --work /tmp/mut
    python scripts/mutate.py --list                  # the modules, their files and tests

Needs mutmut 3 (``pip install 'mutmut>=3.8,<4'``; in the dev extra). Exit status 1 when a module
scores below ``--fail-under`` (default 0: report only).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (source file or package folder candidates, newest first; test file basenames, found anywhere
# under tests/)
MODULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "reduce": (("engine/reduce.py", "reduce.py"), ("test_reduce.py", "test_reduce_mutants.py")),
    # Not test_ndif.py: a remote trace ships kernels' functions by value, and mutmut's trampolines do not
    # survive that (NameError: torch on the simulated server), so every mutant would "fail" there.
    # test_kernels_mutants.py runs lens_stats, the whole remote lens, here in plain torch instead.
    "kernels": (
        ("core/kernels.py", "kernels.py"),
        ("test_reduce.py", "test_reduce_mutants.py", "test_kernels_mutants.py"),
    ),
    "lenses": (("engine/lenses.py",), ("test_lenses_mutants.py",)),
    "tuned": (
        ("engine/tuned.py", "tuned.py"),
        ("test_tuned.py", "test_tuned_guards.py", "test_lenses_mutants.py", "test_tuned_mutants.py"),
    ),
    "training": (
        ("tasks/training.py", "training.py"),
        ("test_training.py", "test_training_guards.py", "test_training_mutants.py"),
    ),
    "attribution": (
        ("tasks/attribution.py", "attribution.py"),
        ("test_attribution.py", "test_attribution_guards.py", "test_attribution_mutants.py"),
    ),
    "evaluation": (
        ("tasks/evaluation.py", "evaluation.py"),
        ("test_evaluation.py", "test_evaluate.py", "test_evaluation_guards.py", "test_evaluation_mutants.py"),
    ),
    "stream": (
        ("tasks/stream.py", "stream.py"),
        ("test_stream.py", "test_stream_guards.py", "test_stream_mutants.py"),
    ),
    "views/model": (
        ("views/model", "views/model.py"),
        ("test_views_model.py", "test_model_guards.py", "test_views_model_mutants.py"),
    ),
}

# Survivors that change no observable behaviour, keyed by module, then by (the line removed, the line
# added) as `mutmut show` prints them, stripped: line numbers and mutant names change with every edit,
# these texts do not. The reason says why no test can tell them apart.
EQUIVALENT: dict[str, dict[tuple[str, str], str]] = {}


def _same(module: str, reason: str, *changes: tuple[str, str]) -> None:
    """Record ``changes`` (line removed, line added) of ``module`` as equivalent for ``reason``."""
    EQUIVALENT.setdefault(module, {}).update(dict.fromkeys(changes, reason))


# Reasons shared by several modules.
DEVICE_ONLY = (
    "device placement: on a CPU-only machine every tensor is already on the CPU, so .to(None)/device=None "
    "change nothing; on a GPU they are observable (killed there by the tests marked 'needs a CUDA device')"
)
OUT_BUFFER = (
    "memory only: an out= scratch buffer (or writing in place) vs a fresh tensor holds the same values; "
    "no later line reads the buffer through another name"
)
DEFAULT_ARG = "the argument given is the default (topk: dim=-1, sorted=True), or +1 is -1 on a 2-D tensor"

# Each module's equivalents are in scripts/equivalents/<module>.py (views/model: views_model.py), one file per
# module so that work on two modules never touches the same file. They are run here with ``_same`` and the
# shared reasons above in scope.
for _file in sorted((ROOT / "scripts" / "equivalents").glob("*.py")):
    exec(  # the project's own data files
        compile(_file.read_text(encoding="utf-8"), str(_file), "exec"),
        {"_same": _same, "DEVICE_ONLY": DEVICE_ONLY, "OUT_BUFFER": OUT_BUFFER, "DEFAULT_ARG": DEFAULT_ARG},
    )

STATUSES = ("killed", "survived", "timeout", "suspicious", "no tests", "skipped", "segfault", "not checked")


def source_file(name: str) -> Path:
    candidates, _ = MODULES[name]
    for rel in candidates:
        path = ROOT / "src" / "logitlens" / rel
        if path.is_file() or path.is_dir():
            return path
    raise SystemExit(f"mutate: no source file for {name!r} (looked for {', '.join(candidates)})")


def test_files(name: str) -> list[Path]:
    _, basenames = MODULES[name]
    found = [p for b in basenames for p in sorted((ROOT / "tests").rglob(b))]
    if not found:
        raise SystemExit(f"mutate: no test file for {name!r} (looked for {', '.join(basenames)})")
    return found


def prepare(name: str, work: Path, extra_pytest: list[str]) -> Path:
    """A fresh copy of the project in ``work`` with mutmut's setup.cfg for one module."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
    src = source_file(name).relative_to(ROOT)
    tests = [t.relative_to(ROOT) for t in test_files(name)]
    lines = [
        "[mutmut]",
        "source_paths = src",
        f"only_mutate = {src}/*.py" if (ROOT / src).is_dir() else f"only_mutate = {src}",
        "pytest_add_cli_args_test_selection =",
        *(f"    {t}" for t in tests),
        "pytest_add_cli_args =",
        *(f"    {a}" for a in ["-p", "no:cacheprovider", "-x", "-q", *extra_pytest]),
        # fork: workers fork from the process that ran the tests once (torch loaded); forkserver finds no
        # test for any mutant with mutmut 3.8.1. OMP_NUM_THREADS=1 (below) keeps forked torch safe.
        "process_isolation = fork",
        "",
    ]
    (work / "setup.cfg").write_text("\n".join(lines))
    return src


def mutmut(work: Path, *args: str, check: bool = True, capture: bool = True) -> str:
    exe = Path(sys.executable).with_name("mutmut")
    # No PYTHONPATH to mutants/src: a path that does not exist yet when Python starts is cached as "no
    # finder" and later ignored; mutmut puts mutants/src first in sys.path itself once it exists.
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),  # one thread per worker
    }
    out = subprocess.run([str(exe), *args], cwd=work, env=env, text=True, capture_output=capture, check=False)
    if check and out.returncode != 0:
        tail = "\n".join(((out.stdout or "") + (out.stderr or "")).splitlines()[-30:])
        raise SystemExit(
            f"mutate: `mutmut {' '.join(args)}` failed in {work} (exit {out.returncode}):\n{tail}"
        )
    return out.stdout or ""


_COLLECT = """
import json
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

out = {}
for path in walk_mutatable_files():
    m = SourceFileMutationData(path=path)
    m.load()
    for name, code in m.exit_code_by_key.items():
        status = status_by_exit_code[code]
        out[name] = [status, "" if status == "killed" else get_diff_for_mutant(name, path=path)]
print(json.dumps(out))
"""


def _collect(work: Path) -> str:
    """Every mutant's status, and the diff of each one not killed, in one process (``mutmut show`` costs
    a second or two per call)."""
    out = subprocess.run(
        [sys.executable, "-c", _COLLECT], cwd=work, text=True, capture_output=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"mutate: cannot read mutmut's results in {work}:\n{out.stderr[-3000:]}")
    return out.stdout


def _changed_lines(diff: str) -> tuple[str, str]:
    removed = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(removed), " / ".join(added)


def _previous_survivors(file: str, name: str) -> list[str]:
    """The mutants of ``name`` that ``file`` (an earlier ``--json``) lists as not killed."""
    for r in json.loads(Path(file).read_text()):
        if r["module"] == name:
            return [s["mutant"] for s in r["survivors"]] + [e["mutant"] for e in r["equivalents"]]
    raise SystemExit(f"mutate: {file} has no results for {name!r}")


def run_module(name: str, args: argparse.Namespace) -> dict:
    work = Path(args.work) / name.replace("/", "-")
    src = prepare(name, work, args.pytest_arg)
    print(f"== {name}: {src} against {', '.join(t.name for t in test_files(name))}", flush=True)
    t0 = time.perf_counter()
    again = _previous_survivors(args.again, name) if args.again else None
    mutmut(work, "run", "--max-children", str(args.jobs), *(again or ()), capture=not args.verbose)
    seconds = time.perf_counter() - t0
    found = json.loads(_collect(work))  # {mutant: [status, diff]}
    if again is not None:  # only last run's survivors were tested again; the rest were killed then
        found = {
            k: (v if any(fnmatch.fnmatchcase(k, a) for a in again) else ["killed", ""])
            for k, v in found.items()
        }
    statuses = {k: v[0] for k, v in found.items()}
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in STATUSES}
    known = EQUIVALENT.get(name, {})
    survivors, equivalent = [], []
    for mutant, status in sorted(statuses.items()):
        if status == "killed":
            continue
        body = found[mutant][1]
        change = _changed_lines(body)
        if status == "survived" and change in known:
            equivalent.append({"mutant": mutant, "change": change, "reason": known[change]})
        else:
            survivors.append({"mutant": mutant, "status": status, "diff": body.strip()})
    total = len(statuses)
    scored = total - len(equivalent)
    score = counts["killed"] / scored if scored else 1.0
    return {
        "module": name,
        "source": str(src),
        "tests": [str(t.relative_to(ROOT)) for t in test_files(name)],
        "mutants": total,
        **{k.replace(" ", "_"): v for k, v in counts.items() if v},
        "equivalent": len(equivalent),
        "score": round(score, 4),
        "seconds": round(seconds, 1),
        "survivors": survivors,
        "equivalents": equivalent,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)} (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "logitlens-mutate"))
    p.add_argument("--json", help="also write the results (scores, survivors' diffs) to this file")
    p.add_argument("--fail-under", type=float, default=0.0, help="exit 1 if a module scores below (0..1)")
    p.add_argument("--pytest-arg", action="append", default=[], help="an extra pytest argument (repeatable)")
    p.add_argument("--verbose", action="store_true", help="show mutmut's own progress")
    p.add_argument(
        "--again",
        metavar="JSON",
        help="test again only the mutants an earlier --json left alive (quick, while writing tests; the source "
        "must be unchanged since, and the score to record comes from a full run); a name may be a glob "
        "(module.x_function__mutmut_*: every mutant of a function that changed)",
    )
    p.add_argument("--list", action="store_true", help="print the modules, files and tests, run nothing")
    args = p.parse_args(argv)
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        p.error(f"unknown module {unknown[0]!r}; choose from: {', '.join(MODULES)}")
    if args.list:
        for n in names:
            tests = ", ".join(str(t.relative_to(ROOT)) for t in test_files(n))
            print(f"{n:12} {source_file(n).relative_to(ROOT)}  <-  {tests}")
        return 0
    results = []
    for n in names:
        r = run_module(n, args)
        results.append(r)
        for s in r["survivors"]:
            print(
                f"   {s['status']}: {s['mutant']}\n" + "\n".join("      " + x for x in s["diff"].splitlines())
            )
        for e in r["equivalents"]:
            print(f"   equivalent: {e['mutant']}: {e['reason']}")
        print(
            f"== {n}: {r.get('killed', 0)} killed of {r['mutants']} mutants, {r['equivalent']} equivalent, "
            f"score {r['score']:.1%} ({r['seconds']:.0f} s)",
            flush=True,
        )
    print("\nmodule        mutants  killed  survived  other  equivalent  score")
    for r in results:
        other = r["mutants"] - r.get("killed", 0) - r.get("survived", 0)
        print(
            f"{r['module']:12} {r['mutants']:8} {r.get('killed', 0):7} {r.get('survived', 0):9} {other:6} "
            f"{r['equivalent']:11}  {r['score']:.1%}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if any(r["score"] < args.fail_under for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
