"""One rank of the distributed tests (tests/tasks/test_distributed.py starts WORLD_SIZE of these).

    python dist_worker.py SCENARIO MODEL_DIR WORK_DIR

all: evaluate, train_tuned_lens and a fresh stream on the group, writing what rank 0 got into WORK_DIR;
then rank 1 reads a corpus file that does not exist (bad input on one rank) and every rank must end.
kill: a stream in which rank 1 kills itself (SIGKILL) right after writing its first part.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from logitlens import LogitLens, LogitLensError  # noqa: E402
from logitlens.tasks import distributed, stream  # noqa: E402
from logitlens.tasks.data import Corpus  # noqa: E402
from logitlens.tasks.evaluation import evaluate  # noqa: E402
from logitlens.tasks.training import train_tuned_lens  # noqa: E402

WORDS = [
    "the", "tower", "is", "in", "the", "city", "of", "paris", "rome", "hello", "world", "layers", "decode",
    "one", "two", "three", "four", "five",
]  # fmt: skip
STREAM = dict(top_k=3, batch_size=4, targets=[" Paris"], progress=False)
TRAIN = dict(steps=4, seq_len=16, batch_tokens=64, eval_tokens=0, progress=False, checkpoint_every=2)


def texts(n: int = 30, words: int = 40) -> list[str]:
    return [" ".join(WORDS[(7 * i + 3 * j * j) % len(WORDS)] for j in range(words)) for i in range(n)]


def prompts(n: int = 23) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + (5 * i) % 11)) for i in range(n)]


def load(model_dir: str) -> LogitLens:
    return LogitLens.from_pretrained(model_dir, budget_bytes=64 * 1024)  # micro-batches of one sequence


def scenario_all(lens: LogitLens, work: Path, rank: int) -> None:
    df = evaluate(lens, Corpus.from_texts(texts()), seq_len=16, tokens=16 * 9, batch_size=2, progress=False)
    tuned = train_tuned_lens(lens, Corpus.from_texts(texts()), out=work / "lens", **TRAIN)
    table = stream.stream(lens, prompts(), work / "fresh.parquet", **STREAM)
    if rank == 0:
        df.to_pickle(work / "eval.pkl")
        table.to_pickle(work / "stream.pkl")
        torch.save({"weight": tuned.weight.detach(), "bias": tuned.bias.detach()}, work / "translators.pt")
    distributed.barrier("before the failure")
    t0 = time.monotonic()
    try:
        data = "sample" if rank == 0 else str(work / "missing-on-rank-1.txt")
        evaluate(lens, data, seq_len=16, tokens=16 * 64, progress=False)
    except LogitLensError as exc:
        seconds = time.monotonic() - t0
        print(json.dumps({"rank": rank, "type": type(exc).__name__, "message": str(exc), "seconds": seconds}))
        sys.exit(2)


def scenario_kill(lens: LogitLens, work: Path, rank: int) -> None:
    write = stream._write_part

    def write_then_die(parts, k, table, r=None):
        write(parts, k, table, r)
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    stream._write_part = write_then_die
    try:
        stream.stream(lens, prompts(), work / "killed.parquet", **STREAM)
    except LogitLensError as exc:
        print(json.dumps({"rank": rank, "type": type(exc).__name__, "message": str(exc)}))
        sys.exit(2)


if __name__ == "__main__":
    name, model_dir, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    lens = load(model_dir)
    group = distributed.setup()
    {"all": scenario_all, "kill": scenario_kill}[name](lens, work, group.rank)
