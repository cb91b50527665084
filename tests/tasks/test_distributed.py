"""Data-parallel runs (``logitlens.tasks.distributed``) on real process groups: 2 CPU ranks on gloo, one
thread each, the tiny Llama of conftest.py, each launch bounded in time.

The ranks are started as torchrun starts them (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; here
without the agent, so rank 0 hosts the store and a rank can be killed by its pid); one test launches the real
``torchrun -m logitlens`` command line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from logitlens import LogitLens
from logitlens.tasks import distributed
from logitlens.tasks.data import Corpus
from logitlens.tasks.evaluation import RowAggregate, evaluate
from logitlens.tasks.stream import stream
from logitlens.tasks.training import train_tuned_lens

sys.path.insert(0, str(Path(__file__).parent))
import dist_worker as w  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
WORKER = Path(__file__).with_name("dist_worker.py")
LAUNCH_TIMEOUT = 150  # seconds for one launch of 2 ranks (imports included) on 2 shared cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, **extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")])), **extra,
    )  # fmt: skip
    return env


def launch(args: list[str], tmp: Path, world: int = 2, **extra) -> list[tuple[int, str, str]]:
    """Start ``world`` ranks of the worker; (exit status, stdout, stderr) per rank."""
    port, procs, logs = free_port(), [], []
    for rank in range(world):
        out, err = (tmp / f"rank{rank}.out").open("w"), (tmp / f"rank{rank}.err").open("w")
        logs.append((out, err))
        env = rank_env(rank, world, port, **extra)
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=out, stderr=err))
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the ranks did not end within {LAUNCH_TIMEOUT} s (a hang)")
    for out, err in logs:
        out.close(), err.close()
    return [(p.returncode, (tmp / f"rank{r}.out").read_text(), (tmp / f"rank{r}.err").read_text())
            for r, p in enumerate(procs)]  # fmt: skip


@pytest.fixture(scope="module")
def ref_lens(tiny_model_dir):
    torch.set_num_threads(1)
    return w.load(str(tiny_model_dir))


@pytest.fixture(scope="module")
def launched_all(tiny_model_dir, tmp_path_factory):
    """One launch: evaluate, train and stream on 2 ranks, then rank 1 fails on bad input."""
    work = tmp_path_factory.mktemp("dist-all")
    t0 = time.monotonic()
    ranks = launch(["all", str(tiny_model_dir), str(work)], work, LOGITLENS_DIST_TIMEOUT="60")
    return work, ranks, time.monotonic() - t0


# ---- pieces that need no process group ----------------------------------------------------------------
def test_single_process_is_a_group_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = distributed.from_env()
    assert not group.distributed and group.is_main
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.all_sum([1.5]).tolist() == [1.5]
    assert distributed.local_device("cuda") == "cuda"


def test_shards_are_strided_and_cover_everything():
    groups = [distributed.Group(rank=r, world_size=3) for r in range(3)]
    shares = [distributed.shard(list(range(10)), g) for g in groups]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shares, [])) == list(range(10))


def test_node_gpus_share_the_node():
    assert distributed.node_gpus(distributed.Group(1, 4, 1, 2), 8) == [4, 5, 6, 7]
    assert distributed.node_gpus(distributed.Group(0, 1), 2) == [0, 1]


def test_bad_launch_variables_are_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(distributed.LogitLensError, match="RANK='two' is not an integer"):
        distributed.from_env()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(distributed.ENV_TIMEOUT, "0")
    with pytest.raises(distributed.LogitLensError, match="LOGITLENS_DIST_TIMEOUT"):
        distributed.from_env()


def test_merging_aggregate_states_equals_one_pass():
    """Guards the eval all-reduce: per-rank (count, mean, M2) merged in rank order = folding everything."""
    from logitlens.core.rows import default_rows

    rng = np.random.default_rng(0)
    values, rows = rng.normal(3.0, 2.0, 1000), rng.integers(0, 4, 1000)
    whole = RowAggregate(default_rows(3), 3)
    whole.add("m", values, rows)
    merged = RowAggregate(default_rows(3), 3)
    for part in np.array_split(np.arange(1000), 3):
        agg = RowAggregate(default_rows(3), 3)
        agg.add("m", values[part], rows[part])
        merged.merge_state(agg.metrics, agg.state())
    assert (merged.count("m") == whole.count("m")).all()
    np.testing.assert_allclose(merged.mean_se("m"), whole.mean_se("m"), rtol=1e-12)


# ---- 2 ranks against one process ----------------------------------------------------------------------
def test_eval_on_two_ranks_equals_one_process(launched_all, ref_lens):
    work, ranks, _ = launched_all
    two = pd.read_pickle(work / "eval.pkl")
    one = evaluate(
        ref_lens, Corpus.from_texts(w.texts()), seq_len=16, tokens=16 * 9, batch_size=2, progress=False
    )
    assert two.attrs["ranks"] == 2 and two.attrs["sequences"] == one.attrs["sequences"] == 9
    assert (two["tokens"] == one["tokens"]).all()
    metrics = [c for c in one.columns if one[c].dtype.kind == "f" and c != "depth"]
    rel = max(float(np.nanmax(np.abs(two[c] - one[c]) / np.abs(one[c]).clip(1e-30))) for c in metrics)
    print(f"eval 2 ranks vs 1 process: largest relative difference {rel:.3g}")
    assert rel <= 1e-6


def test_training_on_two_ranks_equals_one_process(launched_all, ref_lens, tmp_path):
    work, _, _ = launched_all
    two = torch.load(work / "translators.pt", weights_only=True)
    one = train_tuned_lens(ref_lens, Corpus.from_texts(w.texts()), out=tmp_path / "lens", **w.TRAIN)
    diff = max(float((two[k] - getattr(one, k).detach()).abs().max()) for k in ("weight", "bias"))
    print(f"training 2 ranks vs 1 process, {w.TRAIN['steps']} steps: max abs difference {diff:.3g}")
    assert float(one.weight.detach().abs().max()) > 1e-3  # it moved
    assert diff <= 1e-5
    saved = json.loads((work / "lens" / "config.json").read_text())["training"]
    assert saved["ranks"] == 2 and saved["sequences_per_step"] == 4 and saved["sequences_per_rank"] == 2
    assert saved["micro_batch"] * saved["ranks"] * saved["grad_accumulation"] == 4


def test_stream_on_two_ranks_writes_the_file_of_one_process(launched_all, ref_lens, tmp_path):
    work, _, _ = launched_all
    stream(ref_lens, w.prompts(), tmp_path / "one.parquet", **w.STREAM)
    two, one = pq.read_table(work / "fresh.parquet"), pq.read_table(tmp_path / "one.parquet")
    assert two.num_rows == one.num_rows and two.column_names == one.column_names
    for name in one.column_names:  # the same lines, in the same order, bit for bit (NaN where NaN)
        a, b = two.column(name), one.column(name)
        if a.type in (pa.float32(), pa.float64()):
            assert np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True), name
        else:
            assert a.equals(b), name
    assert not (work / "fresh.parquet.parts").exists()


def test_a_rank_failing_on_bad_input_ends_the_group_with_its_message(launched_all):
    _, ranks, _ = launched_all
    lines = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in ranks]
    assert [rc for rc, _, _ in ranks] == [2, 2]
    assert lines[1]["type"] == "LogitLensError" and "missing-on-rank-1.txt" in lines[1]["message"]
    assert lines[0]["type"] == "RankFailed" and lines[0]["message"].startswith("rank 1: cannot read corpus")
    print(f"bad input on rank 1: rank 0 ended {lines[0]['seconds']:.2f} s later (timeout 60 s)")
    assert lines[0]["seconds"] < 30


# ---- killed, then resumed with 2 ranks (torchrun, the CLI) and with 1 ---------------------------------
def test_stream_killed_on_one_rank_resumes_on_two_ranks_and_on_one(tiny_model_dir, ref_lens, tmp_path):
    ranks = launch(["kill", str(tiny_model_dir), str(tmp_path)], tmp_path, LOGITLENS_DIST_TIMEOUT="60")
    assert ranks[1][0] == -9  # SIGKILL
    assert ranks[0][0] == 2 and "another rank stopped" in ranks[0][1]
    parts = tmp_path / "killed.parquet.parts"
    written = sorted(p.name for p in parts.glob("part-*.parquet"))
    assert any(n.startswith("part-r1-") for n in written) and len(written) < 6, written
    shutil.copytree(parts, tmp_path / "one.parquet.parts")
    (tmp_path / "prompts.txt").write_text("\n".join(w.prompts()) + "\n")

    # 2 ranks, through torchrun and the command line
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "logitlens", "run", "--model", str(tiny_model_dir), "--prompts-file",
           str(tmp_path / "prompts.txt"), "--top-k", "3", "--batch-size", "4", "--target", " Paris",
           "--memory-budget", "1", "--out", str(tmp_path / "killed.parquet"), "--resume", "--no-progress"]  # fmt: skip
    env = {k: v for k, v in rank_env(0, 1, 0).items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK",
           "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, [ln for ln in done.stderr.splitlines() if "logitlens" in ln][-5:]
    assert done.stderr.count("wrote ") == 1 and "from before" in done.stderr  # rank 0 only

    # 1 process, through the Python API
    stream(ref_lens, w.prompts(), tmp_path / "one.parquet", resume=True, **w.STREAM)

    stream(ref_lens, w.prompts(), tmp_path / "whole.parquet", **w.STREAM)
    whole = _sorted(tmp_path / "whole.parquet")
    for name in ("killed.parquet", "one.parquet"):
        got = _sorted(tmp_path / name)
        assert sorted(set(got["prompt_index"])) == list(range(23))
        assert len(got) == len(whole) and got[["prompt_index", "row", "position"]].equals(
            whole[["prompt_index", "row", "position"]]
        )
        diff = max(float(np.nanmax(np.abs(got[c] - whole[c]))) for c in ("entropy", "kl_to_final"))
        print(f"{name}: every prompt once; max abs difference to an uninterrupted run {diff:.3g}")
        assert diff <= 1e-5


def _sorted(path: Path) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    return df.sort_values(["prompt_index", "row", "position"], ignore_index=True)


def test_run_without_out_is_refused_under_torchrun(monkeypatch, capsys):
    from logitlens.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed, "together", _no_group)
    assert main(["run", "hello", "--model", "default"]) == 2
    assert "add --out" in capsys.readouterr().err


def _no_group(what=""):
    import contextlib

    return contextlib.nullcontext(distributed.Group(0, 2))


def test_lens_fixture_is_unaffected(ref_lens):
    assert isinstance(ref_lens, LogitLens)
