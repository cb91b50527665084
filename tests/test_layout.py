"""The package's shape: old import paths still work (and warn), no private names cross modules, modules stay
small, the public facade exports what its own messages mention. The import layers themselves are checked by
import-linter (``make lint``, pyproject's [tool.importlinter])."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

import logitlens
from logitlens._compat import MOVED

SRC = Path(logitlens.__file__).parent
ROOT = SRC.parents[1]
MAX_LINES = 750  # "no module over ~700 lines": a module past this wants splitting


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "static" not in p.parts)


def test_old_paths_import_and_warn_naming_the_new_home():
    """Each old path imports (in one fresh interpreter, so none is imported yet) with one DeprecationWarning
    naming its new home, and offers every public name of that home."""
    code = """
import importlib, json, warnings
from logitlens._compat import MOVED
out = {}
for old, homes in MOVED.items():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = importlib.import_module("logitlens." + old)
    public = getattr(importlib.import_module("logitlens." + homes[0]), "__all__", [])
    out[old] = ([str(x.message) for x in w if issubclass(x.category, DeprecationWarning)],
                [n for n in public if not hasattr(m, n)])
print(json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(seen) == sorted(MOVED)
    for old, (messages, missing) in seen.items():
        home = MOVED[old][0]
        assert any(f"logitlens.{old} moved to logitlens.{home}" in m for m in messages), (old, messages)
        assert missing == [], (old, missing)


def test_a_single_home_alias_is_the_same_module():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("logitlens.lens")
        png = importlib.import_module("logitlens.png")
    assert old is importlib.import_module("logitlens.engine.lens")
    assert png.write_compare_png is importlib.import_module("logitlens.views.png").write_compare_png


def test_no_private_name_is_imported_from_another_module():
    crossings = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("logitlens"):
                crossings += [
                    f"{path.relative_to(SRC)}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert crossings == [], "make the name public in its home module"


def test_modules_stay_small():
    big = {
        str(p.relative_to(SRC)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}, f"split these modules (over {MAX_LINES} lines)"


def test_the_facade_exports_the_names_its_messages_mention():
    for name in (
        "Lens",
        "FunctionLens",
        "IdentityLens",
        "register_statistic",
        "train_tuned_lens",
        "LogitLens",
    ):
        assert name in logitlens.__all__ and getattr(logitlens, name) is not None
    said = set()
    for path in _modules():
        said.update(
            re.findall(r"logitlens\.([A-Z]\w+|register_\w+|train_\w+)\b", path.read_text(encoding="utf-8"))
        )
    missing = sorted(n for n in said if not hasattr(logitlens, n))
    assert missing == [], "export these from logitlens/__init__.py or name their module in the message"


def test_one_version():
    with open(ROOT / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["version"] == logitlens.__version__


def test_tests_mirror_the_package():
    """Every test module sits in the folder of the layer it tests (tests/<layer>/) or at tests/ for the whole."""
    tests = ROOT / "tests"
    layers = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    for path in tests.rglob("test_*.py"):
        rel = path.relative_to(tests)
        assert len(rel.parts) == 1 or rel.parts[0] in layers, f"{rel}: put it under tests/<layer>/"
