"""`logitlens serve` as a command: it prints the URL, serves saved results without a model, refuses bad
options in one line (exit 2), and Ctrl-C stops it with one line and exit 130."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest


def _serve(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-c",
        "import sys; from logitlens._entry import main; sys.exit(main())",
        "serve",
        *args,
    ]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def test_serve_files_without_a_model_then_ctrl_c_exits_130(lens, tmp_path):
    """Given only a result file, no model is loaded; the URL is printed; SIGINT: one line, exit 130."""
    path = lens.run("one two three").save(tmp_path / "saved.json")
    proc = _serve(str(path), "--port", "0")
    try:
        line = proc.stderr.readline()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        with urllib.request.urlopen(match.group(1) + "api/models", timeout=10) as r:
            models = json.loads(r.read())
        assert models["models"] == [] and models["files"][0]["name"] == "saved"
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=20)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert rest.strip().splitlines() == ["logitlens: interrupted"], rest


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["nope.txt"], "give .json or .parquet"),
        (["missing.json"], "no such file"),
        (["--port", "-3"], "--port"),
    ],
)
def test_bad_serve_options_fail_in_one_line(args, text):
    proc = _serve(*args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1 and text in err, err
