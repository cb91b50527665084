"""What a command imports and prints besides its answer (issue 19, items 7 and 8).

A run imports neither torchao nor bitsandbytes unless --quantize asks (transformers imports torchao with its
quantiser registry whenever it is installed: seconds, and a warning per GPU kernel library it cannot load);
int8 still works afterwards in the same process. Nothing reaches stderr but our own lines: no "Loading
weights" bars, no torchao "Failed to load", no torch ``_pytree`` warnings, no matplotlib glyph warnings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logitlens.cli import main

SRC = str(Path(__file__).resolve().parents[2] / "src")

CHILD = textwrap.dedent(
    """
    import sys
    from logitlens.cli import main

    code = main(sys.argv[1:])
    quant = sorted(m for m in sys.modules if m.split(".")[0] in ("torchao", "bitsandbytes"))
    print("QUANT", quant, "CODE", code)
    from logitlens import LogitLens  # int8 asked later in the same process still finds torchao

    lens = LogitLens.from_pretrained(sys.argv[sys.argv.index("--model") + 1], quantization="int8")
    print("INT8", lens.self_check_diff is not None and lens.self_check_diff <= 1e-4)
    """
)


def test_run_imports_no_quantiser_and_prints_only_its_own_lines(tiny_model_dir, tmp_path):
    """Guards: torchao imported (and its warnings printed) by every run; stray lines on a fresh run's stderr."""
    argv = ["run", "Hello world", "--model", str(tiny_model_dir), "--quiet"]
    argv += ["--json", str(tmp_path / "r.json"), "--png", str(tmp_path / "r.png")]
    argv += ["--html", str(tmp_path / "r.html")]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert "QUANT [] CODE 0" in proc.stdout, proc.stdout + proc.stderr
    assert "INT8 True" in proc.stdout, proc.stdout + proc.stderr
    before_int8 = proc.stderr  # the int8 load is quiet too (its torchao import is silenced)
    lines = [line for line in before_int8.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == ["wrote"] * 3, before_int8


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "Hello world", "--target", " world", "--concept", "hello,world"],
        ["attribute", "Hello world", "--target", " wor"],
        ["eval", "--data", "sample", "--tokens", "64", "--seq-len", "16", "--no-progress"],
    ],
    ids=["run", "attribute", "eval"],
)
def test_commands_leave_stderr_to_their_own_lines(capfd, tiny_model_dir, argv):
    """Guards: progress bars, loading bars and library warnings among a command's output (fd 2, all of it)."""
    assert main([*argv, "--model", str(tiny_model_dir)]) == 0
    err = capfd.readouterr().err
    strays = [
        line for line in err.splitlines() if line.strip() and not line.startswith(("logitlens:", "wrote"))
    ]
    assert strays == [], err


def test_first_conversion_of_the_default_model_says_one_line(capfd, tiny_model_dir, tmp_path, monkeypatch):
    """Guards: four transformers bars (GGUF reader, weights, shards) for the one-off conversion."""
    from logitlens.model import default_model

    calls = []
    monkeypatch.setattr(default_model, "is_converted", lambda: bool(calls))
    monkeypatch.setattr(default_model, "model_dir", lambda quiet=False: calls.append(quiet) or tiny_model_dir)
    assert main(["run", "Hello world", "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert calls[0] is True and len(lines) == 2, lines
    assert lines[0].startswith("logitlens: converting the default model") and lines[1].startswith("wrote")
