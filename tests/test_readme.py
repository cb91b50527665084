"""The README's Python snippets run as written (on the real default model); the docs pages' Python snippets
compile and name only what exists."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from markers import needs_default_model

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the README and every page of the docs site


def python_blocks(path: Path = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.slow
@needs_default_model
def test_quick_start_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = python_blocks()[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    res = namespace["res"]
    assert res.target_names == [" Paris", " Rome"]
    assert (tmp_path / "r.json").is_file()


def test_every_snippet_is_valid_python():
    assert len(python_blocks()) >= 1
    assert sum(len(python_blocks(page)) for page in PAGES) >= 10
    for page in PAGES:
        for block in python_blocks(page):
            compile(block, page.name, "exec")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_snippet_names_exist(page):
    """Every logitlens.X / res.X / lens.X the README or a docs page mentions exists."""
    import logitlens
    from logitlens import LensResult, LogitLens

    text = page.read_text()
    RESULT_FIELDS = set(inspect.signature(LensResult.__init__).parameters)  # noqa: N806
    for name in set(re.findall(r"logitlens\.(\w+)\(", text)) - {"report", "png"}:
        assert hasattr(logitlens, name), name
    for name in set(re.findall(r"(?<![\w/.-])res\.(\w+)\b(?!\")", text)):
        assert hasattr(LensResult, name) or name in RESULT_FIELDS, name
    for name in set(re.findall(r"(?<![\w/.-])lens\.(\w+)\b(?!\")", text)):
        assert hasattr(LogitLens, name) or name in ("model", "tokenizer"), name
