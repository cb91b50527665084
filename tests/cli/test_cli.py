"""The `logitlens run` command on a tiny local model: output, files, and every bad-input message."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from logitlens import LensResult
from logitlens.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_prints_grid_and_topk(capsys, tiny_model_dir, tmp_path):
    path = tmp_path / "r.json"
    code, out, err = run_cli(
        capsys,
        "run",
        "Hello world",
        "--model",
        str(tiny_model_dir),
        "--top-k",
        "3",
        "--target",
        " Paris",
        "--json",
        str(path),
    )
    assert code == 0, err
    assert "top-1 token per row x position" in out and "top-3 per row" in out
    assert "embed" in out and "next →" in out
    res = LensResult.load(path)
    assert res.prompts == ["Hello world"] and res.top_k == 3 and res.target_names == [" Paris"]
    assert f"wrote {path}" in err


def test_prompts_file_stdin_and_positions(capsys, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("first prompt\n\nsecond one here\n"))
    path = tmp_path / "r.json"
    code, _, err = run_cli(
        capsys,
        "run",
        "--prompts-file",
        "-",
        "--model",
        str(tiny_model_dir),
        "--positions=-1",
        "--json",
        str(path),
        "--quiet",
    )
    assert code == 0, err
    res = LensResult.load(path)
    assert res.prompts == ["first prompt", "second one here"]
    assert res.n_positions == 1


def test_target_set_syntax(capsys, tiny_model_dir, tmp_path):
    path = tmp_path / "r.json"
    code, _, err = run_cli(
        capsys,
        "run",
        "Hi",
        "--model",
        str(tiny_model_dir),
        "--target",
        " Paris| Rome",
        "--json",
        str(path),
        "--quiet",
    )
    assert code == 0, err
    assert LensResult.load(path).target_names == [" Paris| Rome"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", ""], "prompt 1 is empty"),
        (["run"], "no prompt given"),
        (
            ["run", "x " * 80],
            "tokens but the model's context is 64; shorten it or pass truncate=True (--truncate)",
        ),
        (["run", "Hi", "--target", ""], "--target is empty"),
        (["run", "Hi", "--top-k", "0"], "--top-k must be at least 1"),
        (["run", "Hi", "--top-k", "100000"], "--top-k must be at most the vocabulary size 400"),
        (
            ["run", "Hi", "--prompts-file", "/no/such/file.txt"],
            "cannot read prompts file '/no/such/file.txt'",
        ),
        (["run", "Hi", "--positions=a,b"], "argument --positions: give comma-separated integers"),
        (["run", "Hi", "--positions=9"], "position 9 is out of range for prompt 1"),
        (["run", "Hi", "--memory-budget", "0"], "--memory-budget must be at least 1"),
        (["run", "Hi", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["run", "Hi", "--dtype", "float8"], "argument --dtype: invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tiny_model_dir, argv, message):
    code, out, err = run_cli(capsys, *argv, "--model", str(tiny_model_dir))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logitlens: error: "), err
    assert message in lines[0]


def test_unknown_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "Hi", "--model", str(tmp_path / "nothing-here"))
    assert code == 2 and "there is no folder" in err and len(err.strip().splitlines()) == 1


def test_truncate_flag(capsys, tiny_model_dir):
    code, out, err = run_cli(capsys, "run", "x " * 80, "--model", str(tiny_model_dir), "--truncate")
    assert code == 0
    assert "logitlens: warning: prompt 1: kept the last 64 of" in err


def test_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "logitlens.cli", "run", "--help"], capture_output=True, text=True, check=True
    )
    assert "--prompts-file" in out.stdout and "--target" in out.stdout


@pytest.fixture(scope="module")
def shallow_model_dir(tokenizer, tmp_path_factory):
    from conftest import make_llama

    path = tmp_path_factory.mktemp("tiny-llama-2")
    make_llama(len(tokenizer), seed=1, num_hidden_layers=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_compare_two_models(capsys, tiny_model_dir, shallow_model_dir, tmp_path):
    html = tmp_path / "cmp.html"
    code, out, err = run_cli(
        capsys,
        "compare",
        "Hello world",
        "--model",
        str(tiny_model_dir),
        "--model",
        str(shallow_model_dir),
        "--target",
        " Paris",
        "--html",
        str(html),
    )
    assert code == 0, err
    assert "relative depth" in out and out.count("top-1 token per row x position") == 2
    text = html.read_text()
    assert "https://" not in text and str(tiny_model_dir) in text and str(shallow_model_dir) in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "compare needs at least two models"),
        (["--model", "m2", "--png", "x.txt"], "--png x.txt: the file name must end in .png"),
        (["--model", "m2", "--top-k", "0"], "--top-k must be at least 1"),
        (["--model", "no/such/model-dir"], "there is no folder 'no/such/model-dir'"),
        (
            ["--model", "SELF", "--batch-size", "0"],
            "logitlens: error: --batch-size must be at least 1, got 0",
        ),
        (
            ["--model", "SELF", "--batch-size", "-3"],
            "logitlens: error: --batch-size must be at least 1, got -3",
        ),
    ],
)
def test_compare_bad_input(capsys, tiny_model_dir, extra, message):
    extra = [str(tiny_model_dir) if x == "SELF" else x for x in extra]  # a model that loads: reach the runs
    code, _, err = run_cli(capsys, "compare", "Hi", "--model", str(tiny_model_dir), *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_compare_passes_batch_size_to_every_run(capsys, tiny_model_dir, shallow_model_dir, monkeypatch):
    from logitlens.engine.lens import LogitLens

    seen = []
    real_run = LogitLens.run

    def run(self, prompts, **kwargs):
        seen.append((self.name, kwargs.get("batch_size")))
        return real_run(self, prompts, **kwargs)

    monkeypatch.setattr(LogitLens, "run", run)
    argv = ["compare", "Hi", "--model", str(tiny_model_dir), "--model", str(shallow_model_dir)]
    code, _, err = run_cli(capsys, *argv, "--batch-size", "3")
    assert code == 0, err
    assert seen == [(str(tiny_model_dir), 3), (str(shallow_model_dir), 3)]
    seen.clear()
    assert run_cli(capsys, *argv)[0] == 0
    assert [b for _, b in seen] == [8, 8]  # the documented default


def test_run_writes_html_and_png(capsys, tiny_model_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "run",
        "Hello world",
        "--model",
        str(tiny_model_dir),
        "--quiet",
        "--html",
        str(tmp_path / "r.html"),
        "--png",
        str(tmp_path / "r.png"),
    )
    assert code == 0, err
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "https://" not in (tmp_path / "r.html").read_text()
