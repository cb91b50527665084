"""Streamed runs: 500 prompts to Parquet and JSON Lines, the files read back in pandas, Polars and DuckDB
with the documented types, a run killed with SIGKILL then resumed, and every refusal."""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from logitlens import LensResult, LogitLens, LogitLensError
from logitlens.tasks.stream import aggregate_table, parts_dir, stream

WORDS = ["Paris", "Rome", "city", "tower", "hello", "world", "one", "two", "lens", "final"]
PROMPTS = [f"{WORDS[i % 10]} {WORDS[(i * 7) % 10]}" + " the" * (i % 4) for i in range(500)]
OPTS = {"top_k": 3, "targets": [" Paris", " Rome"]}
# The documented column types of the long table (Arrow), targets " Paris" and " Rome".
TYPES = {
    "prompt_index": "int64",
    "prompt": "string",
    "row": "int32",
    "row_name": "string",
    "layer": "int32",
    "site": "string",
    "depth": "float",
    "column": "int32",
    "position": "int64",
    "token_id": "int64",
    "token": "string",
    "next_token_id": "int64",
    "next_token": "string",
    "top1": "string",
    "top1_prob": "float",
    "top_tokens": "fixed_size_list<element: string>[3]",
    "top_ids": "fixed_size_list<element: int64>[3]",
    "top_probs": "fixed_size_list<element: float>[3]",
    "final_probs": "float",
    "entropy": "float",
    "kl_to_final": "float",
    "cross_entropy": "float",
    "agrees_with_final": "bool",
    "p( Paris)": "float",
    "p( Rome)": "float",
    "rank( Paris)": "int64",
    "rank( Rome)": "int64",
}


@pytest.fixture(scope="module")
def streamed(lens, tmp_path_factory):
    """500 prompts streamed to Parquet and to JSON Lines (batches of 50)."""
    folder = tmp_path_factory.mktemp("stream")
    out = {}
    for suffix in ("parquet", "jsonl"):
        path = folder / f"run.{suffix}"
        out[suffix] = (path, stream(lens, PROMPTS, path, batch_size=50, progress=False, **OPTS))
    return out


def test_500_prompts_in_one_row_group_per_batch(streamed, lens):
    path, agg = streamed["parquet"]
    assert not parts_dir(path).exists()
    pf = pq.ParquetFile(path)
    assert pf.num_row_groups == 10  # one per batch
    table = pf.read()
    assert {str(f.name): str(f.type) for f in table.schema} == TYPES
    df = table.to_pandas()
    lengths = [len(lens.tokenizer(p)["input_ids"]) for p in PROMPTS]
    counts = df.groupby("prompt_index").size()
    assert sorted(counts.index) == list(range(500))  # every prompt, once
    assert (counts.to_numpy() == np.array(lengths) * (lens.n_layers + 1)).all()  # rows x positions
    assert (df.groupby("prompt_index")["prompt"].first().to_numpy() == np.array(PROMPTS, dtype=object)).all()
    # The aggregate is the table's per-row means.
    assert list(agg["row_name"]) == lens.row_names and agg.attrs["lines"] == len(df)
    np.testing.assert_allclose(agg["entropy"], df.groupby("row")["entropy"].mean(), rtol=1e-6)
    np.testing.assert_allclose(agg["cross_entropy"], df.groupby("row")["cross_entropy"].mean(), rtol=1e-6)
    np.testing.assert_allclose(agg["p( Paris)"], df.groupby("row")["p( Paris)"].mean(), rtol=1e-6)
    assert (agg["cells"] == len(df) // 4).all() and (agg["predictions"] == (len(df) - 4 * 500) // 4).all()
    assert aggregate_table(path)[["entropy", "accuracy"]].equals(agg[["entropy", "accuracy"]])


def test_streamed_file_loads_as_the_same_result(streamed, lens):
    path, _ = streamed["parquet"]
    res = LensResult.load(path)
    assert res.n_prompts == 500 and res.target_names == [" Paris", " Rome"]
    pick = [0, 3, 250, 499]
    ref = lens.run([PROMPTS[i] for i in pick], **OPTS)
    got = res.select([res.prompt_index.index(i) for i in pick])
    width = ref.n_positions
    for name in ("entropy", "kl_to_final", "top_probs", "target_probs"):
        a, b = got.stat(name)[:, :, :width], ref.stat(name)
        assert np.allclose(a.numpy(), b.numpy(), atol=1e-5, equal_nan=True), name
    assert got.tokens == ref.tokens


def test_jsonl_has_one_object_per_line_with_the_same_values(streamed):
    import pandas as pd

    path, agg = streamed["jsonl"]
    lines = path.read_text(encoding="utf-8").splitlines()
    parquet = pq.read_table(streamed["parquet"][0]).to_pandas()
    assert len(lines) == len(parquet) and list(json.loads(lines[0])) == list(TYPES)
    js = pd.read_json(path, lines=True)
    key = ["prompt_index", "row", "column"]
    a, b = js.sort_values(key).reset_index(drop=True), parquet.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["entropy"], b["entropy"], rtol=1e-6)
    assert a["top_ids"].map(list).tolist() == b["top_ids"].map(list).tolist()
    assert a["cross_entropy"].isna().sum() == 500 * 4  # each prompt's last token: null
    np.testing.assert_allclose(agg["entropy"], streamed["parquet"][1]["entropy"], rtol=1e-7)


def test_parquet_reads_in_pandas_polars_and_duckdb(streamed):
    path, _ = streamed["parquet"]
    df = pq.read_table(path).to_pandas()
    assert str(df["entropy"].dtype) == "float32" and str(df["prompt_index"].dtype) == "int64"
    assert df["agrees_with_final"].dtype == bool and isinstance(df["top_ids"].iloc[0], np.ndarray)
    polars = pytest.importorskip("polars", reason="needs polars (dev extra; make test installs it)")
    pl = polars.read_parquet(path)
    assert pl.schema["entropy"] == polars.Float32 and pl.schema["prompt_index"] == polars.Int64
    assert pl.schema["top_ids"] == polars.Array(polars.Int64, 3) and pl.schema["p( Paris)"] == polars.Float32
    assert pl.schema["agrees_with_final"] == polars.Boolean and pl.schema["token"] == polars.String
    duckdb = pytest.importorskip("duckdb", reason="needs duckdb (dev extra; make test installs it)")
    con = duckdb.connect()
    types = dict(
        con.execute(f"select column_name, column_type from (describe select * from '{path}')").fetchall()
    )
    assert types["entropy"] == "FLOAT" and types["prompt_index"] == "BIGINT" and types["row"] == "INTEGER"
    assert (
        types["top_ids"] == "BIGINT[]"
        and types["token"] == "VARCHAR"
        and types["agrees_with_final"] == "BOOLEAN"
    )
    (n,) = con.execute(f"select count(distinct prompt_index) from '{path}'").fetchone()
    assert n == 500


# ---- kill and resume ----------------------------------------------------------------------------------
KILLED = textwrap.dedent(
    """
    import functools, sys, time
    from logitlens import LogitLens
    from logitlens.tasks.stream import stream

    lens = LogitLens.from_pretrained(sys.argv[1])
    prompts = open(sys.argv[2], encoding="utf-8").read().splitlines()
    run = lens.iter_run

    @functools.wraps(run)
    def slow(*args, **kwargs):  # a batch every 0.25 s: time to kill it mid-way
        for res in run(*args, **kwargs):
            yield res
            time.sleep(0.25)

    lens.iter_run = slow
    stream(lens, prompts, sys.argv[3], progress=False, top_k=3, targets=[" Paris"], batch_size=4)
    """
)


def test_killed_run_resumes_with_every_prompt_once_and_the_same_values(tiny_model_dir, tmp_path):
    prompts = PROMPTS[:64]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts), encoding="utf-8")
    (tmp_path / "killed.py").write_text(KILLED, encoding="utf-8")
    out = tmp_path / "out.parquet"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [
        sys.executable,
        str(tmp_path / "killed.py"),
        str(tiny_model_dir),
        str(tmp_path / "prompts.txt"),
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = parts_dir(out)
    deadline = time.time() + 120
    while len(list(parts.glob("part-*.parquet"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "the streaming child wrote no batches"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    written = len(list(parts.glob("part-*.parquet")))
    assert not out.exists() and 3 <= written < 16  # killed mid-way: 16 batches in all
    (parts / f"part-{written:06d}.parquet.tmp").write_bytes(b"PAR1 half a batch")  # a part cut mid-write

    lens = LogitLens.from_pretrained(str(tiny_model_dir))
    opts = {"top_k": 3, "targets": [" Paris"], "batch_size": 4, "progress": False}
    with pytest.raises(LogitLensError, match="holds an interrupted run .* pass --resume"):
        stream(lens, prompts, out, **opts)
    agg = stream(lens, prompts, out, resume=True, **opts)
    assert agg.attrs["resumed"] == 4 * written and not parts.exists()
    full = stream(lens, prompts, tmp_path / "full.parquet", **opts)

    key = ["prompt_index", "row", "column"]
    a = pq.read_table(out).to_pandas().sort_values(key).reset_index(drop=True)
    b = pq.read_table(tmp_path / "full.parquet").to_pandas().sort_values(key).reset_index(drop=True)
    assert not a.duplicated(key).any() and sorted(a["prompt_index"].unique()) == list(range(64))
    assert len(a) == len(b) and pq.ParquetFile(out).num_row_groups == 16
    for col in ("entropy", "kl_to_final", "cross_entropy", "p( Paris)", "top1_prob"):
        np.testing.assert_allclose(a[col], b[col], atol=1e-5, err_msg=col)
    assert (a["top1"] == b["top1"]).all() and (a["rank( Paris)"] == b["rank( Paris)"]).all()
    np.testing.assert_allclose(agg["entropy"], full["entropy"], atol=1e-6)


# ---- refusals -----------------------------------------------------------------------------------------
def _interrupted(lens, path, prompts, /, stop_after: int = 2, **opts):
    """A run stopped after ``stop_after`` batches (as a kill would leave it)."""
    real = lens.iter_run

    @functools.wraps(real)
    def stopping(*args, **kwargs):
        for n, res in enumerate(real(*args, **kwargs)):
            if n == stop_after:
                raise KeyboardInterrupt
            yield res

    lens.iter_run = stopping
    try:
        with pytest.raises(KeyboardInterrupt):
            stream(lens, prompts, path, progress=False, **opts)
    finally:
        del lens.iter_run
    assert parts_dir(path).is_dir() and not path.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompts": PROMPTS[:20]}, "the prompts changed (it holds a run of 24 prompts, now 20)"),
        (
            {"prompts": PROMPTS[1:25]},
            "the prompts changed (it holds a run of 24 prompts with other texts or order)",
        ),
        ({"top_k": 5}, "it was written with top_k=3, now top_k=5"),
        ({"targets": [" Rome"]}, "it was written with targets=[[' Paris', "),
        ({"positions": [-1]}, "it was written with positions=None, now positions=[-1]"),
    ],
)
def test_resume_refuses_changed_prompts_or_options(lens, tmp_path, change, message):
    path = tmp_path / "r.parquet"
    base = {"prompts": PROMPTS[:24], "top_k": 3, "targets": [" Paris"], "batch_size": 8}
    _interrupted(lens, path, base.pop("prompts"), **base)
    new = {"prompts": PROMPTS[:24], **base, **change}
    with pytest.raises(LogitLensError) as err:
        stream(lens, new.pop("prompts"), path, resume=True, progress=False, **new)
    assert f"cannot resume {path}: " in str(err.value) and message in str(err.value)
    assert "write to another file without --resume" in str(err.value) and "\n" not in str(err.value)
    assert parts_dir(path).is_dir()  # the interrupted run is kept


def test_resume_with_another_batch_size(lens, tmp_path):
    """batch_size changes no value: a run may be resumed with another one."""
    path = tmp_path / "r.parquet"
    opts = {"top_k": 3, "targets": [" Paris"]}
    _interrupted(lens, path, PROMPTS[:40], batch_size=8, **opts)
    agg = stream(lens, PROMPTS[:40], path, resume=True, progress=False, batch_size=16, **opts)
    assert agg.attrs["resumed"] == 16 and pq.read_table(path).num_rows == agg.attrs["lines"]
    assert sorted(pq.read_table(path, columns=["prompt_index"]).column(0).unique().to_pylist()) == list(
        range(40)
    )


def test_resume_of_a_finished_file(lens, tmp_path):
    path = tmp_path / "done.parquet"
    first = stream(lens, PROMPTS[:20], path, progress=False, top_k=2)
    again = stream(lens, PROMPTS[:20], path, resume=True, progress=False, top_k=2)
    assert again.attrs["resumed"] == 20 and again["entropy"].equals(first["entropy"])
    with pytest.raises(LogitLensError, match="it was written with top_k=2, now top_k=4"):
        stream(lens, PROMPTS[:20], path, resume=True, progress=False, top_k=4)
    jsonl = tmp_path / "done.jsonl"
    stream(lens, PROMPTS[:5], jsonl, progress=False)
    with pytest.raises(
        LogitLensError, match="already complete and JSON Lines keeps no record of its options"
    ):
        stream(lens, PROMPTS[:5], jsonl, resume=True, progress=False)
    with pytest.raises(LogitLensError, match="already exists: pass --overwrite"):
        stream(lens, PROMPTS[:6], jsonl, progress=False)  # a finished file is kept
    stream(lens, PROMPTS[:6], jsonl, progress=False, overwrite=True)  # replaced
    assert len({json.loads(x)["prompt_index"] for x in jsonl.read_text().splitlines()}) == 6


def test_bad_output_and_refused_runs_leave_nothing(lens, tmp_path):
    with pytest.raises(LogitLensError, match="the folder '.*no-such-dir' does not exist; create it first"):
        stream(lens, PROMPTS[:3], tmp_path / "no-such-dir" / "r.parquet", progress=False)
    with pytest.raises(LogitLensError, match="the file name must end in .parquet or .jsonl"):
        stream(lens, PROMPTS[:3], tmp_path / "r.csv", progress=False)
    with pytest.raises(LogitLensError, match="top_k must be an integer"):
        stream(lens, PROMPTS[:3], tmp_path / "r.parquet", progress=False, top_k=0)
    with pytest.raises(LogitLensError, match="stream got an unknown option 'topk'"):
        stream(lens, PROMPTS[:3], tmp_path / "r.parquet", progress=False, topk=3)
    assert list(tmp_path.iterdir()) == []


# ---- logitlens run --out ------------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``logitlens run`` with --out through cli's parser + add_stream_args, as main() will call it."""
    from logitlens import cli
    from logitlens.cli.common import load, quiet_transformers, read_prompts
    from logitlens.cli.run import add_stream_args, check_stream_args, run_streamed

    quiet_transformers()
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "--out" not in sub.choices["run"]._option_string_actions:
        add_stream_args(sub.choices["run"])
    try:
        args = parser.parse_args(["run", *argv])
        check_stream_args(args)
        code = run_streamed(load(args.model, args), read_prompts(args), args)
    except LogitLensError as exc:
        print(f"logitlens: error: {exc}", file=sys.stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_out_streams_and_resumes(capsys, tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS[:30]), encoding="utf-8")
    out = tmp_path / "r.parquet"
    argv = [
        "--prompts-file",
        str(prompts),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--target",
        " Paris",
    ]
    code, stdout, err = run_cli(capsys, *argv, "--positions=-1")
    assert code == 0, err
    assert "per row, mean over 30 cells" in stdout and "p( Paris)" in stdout
    assert f"wrote {out} (120 lines, 30 prompts)" in err and "prompts/s" in err
    code, _, err = run_cli(capsys, *argv, "--positions=-1", "--resume", "--no-progress")
    assert code == 0 and "30 of them from before" in err and "prompts/s" not in err
    code, _, err = run_cli(capsys, *argv, "--resume")
    assert code == 2 and "it was written with positions=[-1], now positions=None" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "--resume continues a streamed run: give --out FILE too"),
        (
            ["--out", "missing/r.parquet"],
            "cannot write missing/r.parquet: the folder 'missing' does not exist",
        ),
        (["--out", "r.txt"], "cannot stream to r.txt: the file name must end in .parquet or .jsonl"),
        (["--out", "r.parquet", "--json", "r.json"], "--out streams the results to a file; --json need"),
    ],
)
def test_run_out_bad_input(capsys, tiny_model_dir, extra, message):
    code, _, err = run_cli(capsys, "Hello", "--model", str(tiny_model_dir), *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_another_tuned_lens(lens, tmp_path):
    """Two tuned lenses share the name "tuned": resume compares their tensors (``Lens.fingerprint``)."""
    from logitlens import TunedLens

    def tuned(seed: int) -> TunedLens:
        t = TunedLens.for_model(lens)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            t.weight.normal_(0, 0.02, generator=g)
            t.bias.normal_(0, 0.02, generator=g)
        return t

    first, same, other = tuned(1), tuned(1), tuned(2)
    assert first.fingerprint() == same.fingerprint() != other.fingerprint()
    assert first.fingerprint().startswith("tuned:") and lens.lens.fingerprint() == "logit"
    path = tmp_path / "t.parquet"
    _interrupted(lens, path, PROMPTS[:24], top_k=2, batch_size=8, lens=first)
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS[:24], path, resume=True, progress=False, top_k=2, batch_size=8, lens=other)
    msg = str(err.value)
    assert f"it was written with lens='{first.fingerprint()}', now lens='{other.fingerprint()}'" in msg
    assert "\n" not in msg and parts_dir(path).is_dir()
    stream(lens, PROMPTS[:24], path, resume=True, progress=False, top_k=2, batch_size=8, lens=same)
    res = LensResult.load(path)
    assert sorted(res.prompt_index) == list(range(24)) and res.meta["lens"] == "tuned"
    pick = [0, 23]
    ref = lens.run([PROMPTS[i] for i in pick], top_k=2, lens=first)
    got = res.select([res.prompt_index.index(i) for i in pick])
    a, b = got.entropy[:, :, : ref.n_positions], ref.entropy
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-5, equal_nan=True)
