"""The README's Python snippets run as written (on the real default model)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from markers import needs_default_model

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


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
    blocks = python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        compile(block, "README.md", "exec")


def test_snippet_names_exist():
    """Every logitlens.X / res.X / lens.X the README mentions exists."""
    import logitlens
    from logitlens import LensResult, LogitLens

    text = README.read_text()
    RESULT_FIELDS = set(inspect.signature(LensResult.__init__).parameters)  # noqa: N806
    for name in set(re.findall(r"logitlens\.(\w+)\(", text)) - {"report", "png"}:
        assert hasattr(logitlens, name), name
    for name in set(re.findall(r"\bres\.(\w+)\b(?!\")", text)):
        assert hasattr(LensResult, name) or name in RESULT_FIELDS, name
    for name in set(re.findall(r"\blens\.(\w+)\b(?!\")", text)):
        assert hasattr(LogitLens, name) or name in ("model", "tokenizer"), name
