"""Flags of ``run`` for what a reader sees (issue 19, items 9 and 10): ``--verbose`` and ``--trajectory``."""

from __future__ import annotations

import pytest

from logitlens.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verbose_prints_every_top_k_rank_and_the_default_fewer(capsys, tiny_model_dir, monkeypatch):
    """Guards: one prompt printing 115-300 lines by default (every rank of the top-k in several tables)."""
    monkeypatch.setenv("COLUMNS", "80")
    argv = ["run", "Hello world", "--model", str(tiny_model_dir), "--top-k", "10"]
    code, short, _ = _run(capsys, *argv)
    assert code == 0 and "with --verbose" in short and "symbols: " in short
    code, full, _ = _run(capsys, *argv, "--verbose")
    assert code == 0 and "┃ #10" in full and "┃ #10" not in short
    assert len(short.splitlines()) < len(full.splitlines())


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_trajectory_writes_the_targets_concepts_and_answer(capsys, tiny_model_dir, tmp_path, suffix):
    """Guards: the trajectory picture, the most useful one, reachable from Python only."""
    path = tmp_path / f"t{suffix}"
    code, _, err = _run(
        capsys, "run", "Hello world", "--model", str(tiny_model_dir), "--target", " wor",
        "--concept", "hello", "--answer", " world", "--quiet", "--trajectory", str(path),
    )  # fmt: skip
    assert code == 0, err
    assert f"wrote {path}" in err and path.stat().st_size > 10_000
    if suffix == ".html":
        text = path.read_text(encoding="utf-8")
        names = ["answer \\u2423world", "\\u2423wor", "hello"]  # plotly's JSON escapes ␣
        assert all(n in text for n in names) and '"log"' in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--trajectory t.png draws targets, concepts and answers across rows: give --target"),
        (["--target", " wor", "--out", "x.parquet"], "--trajectory need the whole run in memory"),
        (["--target", " wor", "--trajectory", "t.txt"], "--trajectory t.txt: the file name must end in"),
    ],
)
def test_trajectory_refusals_come_before_the_model_in_one_line(capsys, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    argv = ["run", "Hello", "--model", "/nonexistent/model", "--trajectory", "t.png", *extra]
    if "t.txt" in extra:
        argv = argv[: -2 - len(extra)] + extra  # only the bad suffix
    code, _, err = _run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
