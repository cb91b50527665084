"""Data-parallel runs on ``torch.distributed``: the process group, deterministic shards, float64 sums,
rank-0-only output, and ending every rank when one fails.

A run is distributed when the launcher sets ``WORLD_SIZE`` > 1 (``torchrun``, Slurm's ``srun`` with the
torchrun variables, or a script of your own that sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``). ``setup()`` then joins the process group once per process:
gloo for tensors on the CPU and, where CUDA is available, NCCL for tensors on the GPU (the backend
string ``"cpu:gloo,cuda:nccl"``); ``torch.cuda.set_device(LOCAL_RANK)``. Without ``WORLD_SIZE`` (or with
1) nothing is set up and every function here is the identity of a single process.

What the tasks use:

- ``shard(items)``: rank r takes items r, r + W, r + 2W ... (W the world size): deterministic, balanced
  to one item, the same on every machine;
- ``all_sum(array)``: a float64 all-reduce (sum) on the CPU, through gloo;
- ``gather_bytes`` / ``broadcast_object`` / ``agree``: small objects between ranks (also a float64-free
  all-reduce of byte buffers, so they work whatever the GPU backend); ``agree`` refuses, on every rank,
  a run whose ranks read different data ("what" and each rank's digest in one line);
- ``barrier(what)``;
- ``together(what)``: the body of a task. An exception on one rank is published (``rank R: message``, its
  first line) in the rendezvous store, the process group is torn down so that ranks blocked in a
  collective are released at once, and every other rank raises ``RankFailed`` with that message: at its
  next ``poll()`` (the tasks poll between batches) or when its collective fails. The failing rank itself
  re-raises its own exception. A collective that times out (``LOGITLENS_DIST_TIMEOUT`` seconds, default
  1800, torch's default) raises ``RankFailed`` saying so. Rank 0, which holds the store when no
  ``torchrun`` agent does, waits (at most 30 s) until every rank has read the message before it ends.

On CUDA the gradient all-reduce of training runs on NCCL; a rank blocked in an NCCL collective when a
peer dies is ended by NCCL's own watchdog after the timeout (with NCCL's message), not by ours.

Example (under ``torchrun --nproc-per-node 2 script.py``):
    >>> group = setup()
    >>> lens = LogitLens.from_pretrained("default", device=local_device("cuda"))
    >>> df = evaluate(lens, "sample")            # the same table on every rank; rank 0 shows the bar
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from logitlens.errors import LogitLensError, first_line

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENV_TIMEOUT",
    "Group",
    "RankFailed",
    "agree",
    "all_sum",
    "barrier",
    "broadcast_object",
    "current",
    "from_env",
    "gather_bytes",
    "local_device",
    "poll",
    "run_collective",
    "setup",
    "shard",
    "teardown",
    "together",
]

ENV_TIMEOUT = "LOGITLENS_DIST_TIMEOUT"  # seconds a collective waits for the other ranks
DEFAULT_TIMEOUT_S = 1800.0  # torch's default for gloo and NCCL
ACK_WAIT_S = 30.0  # rank 0 (the store's host) waits at most this long for every rank to read an error
_ERROR_KEY = "logitlens/error"
_ACK_KEY = "logitlens/error_read"
T = TypeVar("T")


class RankFailed(LogitLensError):
    """Another rank failed (its one-line message), or the ranks stopped answering (a collective timeout)."""


@dataclass(frozen=True)
class Group:
    """Where this process stands: rank, world size, rank and size within its node, collective timeout."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that shows progress, prints and writes the files."""
        return self.rank == 0

    def label(self) -> str:
        """' (rank 0 of 2)' for progress bars; '' in a single process."""
        return f" (rank {self.rank} of {self.world_size})" if self.distributed else ""


class _State:
    group: Group | None = None  # set by setup() once the process group is up
    store: Any = None  # the rendezvous store: the channel for error messages
    failed: bool = False  # this process has published or read an error: no more collectives


def _env_int(name: str, default: int | None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise LogitLensError(
                f"WORLD_SIZE is set but {name} is not: launch with torchrun (or set WORLD_SIZE, RANK, "
                "LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process)"
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise LogitLensError(f"the environment variable {name}={raw!r} is not an integer") from None


def _timeout_s() -> float:
    raw = os.environ.get(ENV_TIMEOUT)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise LogitLensError(f"{ENV_TIMEOUT}={raw!r}: give the collective timeout in seconds, e.g. 600")
    return value


def from_env() -> Group:
    """This process's place, read from ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``
    (torchrun's variables); a single process when ``WORLD_SIZE`` is unset or 1. Sets nothing up."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Group(timeout_s=_timeout_s())
    rank = _env_int("RANK", None)
    local = _env_int("LOCAL_RANK", rank)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if not 0 <= rank < world or not 0 <= local < local_world:
        raise LogitLensError(
            f"inconsistent launch variables: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}, "
            f"LOCAL_WORLD_SIZE={local_world}"
        )
    return Group(rank, world, local, local_world, _timeout_s())


def current() -> Group:
    """The group set up in this process, or (not yet set up) what the environment says."""
    return _State.group or from_env()


def setup() -> Group:
    """Join the process group described by the environment (once per process; a single process: nothing
    to join). If the caller already called ``torch.distributed.init_process_group``, that group is used."""
    if _State.group is not None:
        return _State.group
    group = from_env()
    if not group.distributed:
        return group
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # the caller's own group: adopt it (its store, if torch exposes it)
        if dist.get_world_size() != group.world_size or dist.get_rank() != group.rank:
            raise LogitLensError(
                "the process group already set up disagrees with WORLD_SIZE/RANK; set them consistently"
            )
        with contextlib.suppress(Exception):
            _State.store = dist.distributed_c10d._get_default_store()
        _State.group = group
        return group
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(group.local_rank % max(1, torch.cuda.device_count()))
    timeout = timedelta(seconds=group.timeout_s)
    try:
        store, rank, world = next(
            dist.rendezvous("env://", rank=group.rank, world_size=group.world_size, timeout=timeout)
        )
        dist.init_process_group(
            "cpu:gloo,cuda:nccl" if cuda else "gloo",
            store=store,
            rank=rank,
            world_size=world,
            timeout=timeout,
        )
    except (RuntimeError, ValueError, dist.DistError) as exc:
        raise LogitLensError(
            f"rank {group.rank}: cannot join the process group of {group.world_size} ranks "
            f"({first_line(exc)}); check MASTER_ADDR/MASTER_PORT and that every rank was started"
        ) from None
    _State.store, _State.group, _State.failed = store, group, False
    return group


def teardown() -> None:
    """Leave the process group (the end of a command); safe to call when there is none."""
    import torch.distributed as dist

    if _State.group is not None and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _State.group, _State.store = None, None


def local_device(requested: str | None) -> str | None:
    """The device of this rank: "cuda" (or "cuda" via "auto") becomes ``cuda:LOCAL_RANK`` (modulo the GPUs
    of the node); anything else, and any single process, is returned as given."""
    group = current()
    if not group.distributed or requested not in ("cuda", "auto"):
        return requested
    import torch

    if not torch.cuda.is_available():
        return "cpu" if requested == "auto" else requested
    return f"cuda:{group.local_rank % max(1, torch.cuda.device_count())}"


def node_gpus(group: Group, n_gpus: int) -> list[int]:
    """The GPUs of this node that this rank's device map may use: an equal share, in order (rank 1 of 2
    on 8 GPUs: 4, 5, 6, 7); all of them in a single process."""
    if not group.distributed or n_gpus == 0:
        return list(range(n_gpus))
    per = max(1, n_gpus // group.local_world_size)
    first = (group.local_rank * per) % n_gpus
    return list(range(first, min(n_gpus, first + per)))


# ---- shards ---------------------------------------------------------------------------------------------
def shard(items: Sequence[T], group: Group | None = None) -> list[T]:
    """Rank r's share: items r, r + W, r + 2W ... (all of them in a single process)."""
    group = group or current()
    return list(items[group.rank :: group.world_size]) if group.distributed else list(items)


# ---- errors ---------------------------------------------------------------------------------------------
def _published() -> str | None:
    store = _State.store
    if store is None:
        return None
    try:
        if store.check([_ERROR_KEY]):
            return store.get(_ERROR_KEY).decode("utf-8", "replace")
    except Exception:  # rank 0 (the store's host) is gone
        return f"rank 0 stopped (it holds the rendezvous store) before rank {current().rank} could read why"
    return None


def _acknowledge() -> None:
    with contextlib.suppress(Exception):
        _State.store.add(_ACK_KEY, 1)


def poll() -> None:
    """Raise ``RankFailed`` if another rank has failed (one round trip to the store; a single process:
    nothing)."""
    group = current()
    if not group.distributed or _State.store is None:
        return
    message = _published()
    if message is not None:
        _State.failed = True
        raise RankFailed(message)


def _publish(message: str) -> str:
    """Publish this rank's error unless another rank's came first; returns the message that stands."""
    store = _State.store
    if store is None:
        return message
    try:
        stood = store.compare_set(_ERROR_KEY, "", message)
        return stood.decode("utf-8", "replace") if isinstance(stood, bytes) else str(stood)
    except Exception:
        return message


def _end() -> None:
    """After an error: tear the group down (peers blocked in gloo collectives fail at once), and on rank 0
    wait until every rank has read the message (rank 0 may host the store they read it from)."""
    import torch.distributed as dist

    group = current()
    _State.failed = True
    _acknowledge()
    with contextlib.suppress(Exception):
        if dist.is_initialized():
            dist.destroy_process_group()
    if group.is_main and _State.store is not None:
        deadline = time.monotonic() + min(ACK_WAIT_S, group.timeout_s)
        with contextlib.suppress(Exception):
            while _State.store.add(_ACK_KEY, 0) < group.world_size and time.monotonic() < deadline:
                time.sleep(0.05)
    _State.group = None  # the group is gone: a later setup() starts afresh


@contextlib.contextmanager
def together(what: str = "the run") -> Iterator[Group]:
    """Run a task's body on every rank (see the module docstring); yields the group."""
    group = setup()
    if not group.distributed:
        yield group
        return
    try:
        yield group
    except RankFailed:
        _end()
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            message = f"rank {group.rank}: interrupted during {what}"
        else:
            message = f"rank {group.rank}: {first_line(exc) or type(exc).__name__}"
        _publish(message)
        _end()
        raise


def run_collective(what: str, fn):
    """Run one collective: poll first; a failure becomes ``RankFailed`` with the failing rank's message."""
    import torch.distributed as dist

    group = current()
    poll()
    try:
        return fn()
    except (RuntimeError, dist.DistError) as exc:
        deadline = time.monotonic() + 2.0  # the failing rank publishes before it tears down: a moment
        message = _published()
        while message is None and time.monotonic() < deadline and "closed" in str(exc).lower():
            time.sleep(0.05)
            message = _published()
        _State.failed = True
        if message is not None:
            raise RankFailed(message) from None
        text = str(exc)
        if "timed out" in text.lower() or "timeout" in text.lower():
            raise RankFailed(
                f"rank {group.rank}: no answer from the other ranks within {group.timeout_s:g} s during "
                f"{what}: a rank stopped, is stuck or is far slower; see its messages, or raise "
                f"{ENV_TIMEOUT} (seconds)"
            ) from None
        raise RankFailed(
            f"rank {group.rank}: another rank stopped without a message during {what} (killed, or out of "
            f"memory?): {first_line(exc)}"
        ) from None


# ---- collectives ----------------------------------------------------------------------------------------
def all_sum(values, what: str = "a sum over ranks"):
    """The element-wise sum over ranks of a float64 array (numpy), through gloo on the CPU."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if not current().distributed:
        return array.copy()
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(array.copy())
    run_collective(what, lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
    return tensor.numpy()


def barrier(what: str) -> None:
    """Wait for every rank (an all-reduce of one number on the CPU, so it runs on gloo)."""
    if current().distributed:
        all_sum([0.0], what)


def gather_bytes(data: bytes, what: str = "an exchange between ranks") -> list[bytes]:
    """Every rank's ``data``, in rank order: two all-reduces (lengths, then the bytes in each rank's slot)."""
    group = current()
    if not group.distributed:
        return [data]
    import numpy as np
    import torch
    import torch.distributed as dist

    lengths = np.zeros(group.world_size)
    lengths[group.rank] = len(data)
    lengths = all_sum(lengths, what).astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    buf = torch.zeros((group.world_size, max(1, width)), dtype=torch.uint8)
    if data:
        buf[group.rank, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    run_collective(what, lambda: dist.all_reduce(buf, op=dist.ReduceOp.SUM))
    return [bytes(buf[r, : int(n)].numpy().tobytes()) for r, n in enumerate(lengths)]


def broadcast_object(obj: Any, what: str = "sharing rank 0's result") -> Any:
    """Rank 0's ``obj`` (pickled) on every rank; other ranks' ``obj`` is ignored."""
    group = current()
    if not group.distributed:
        return obj
    data = pickle.dumps(obj) if group.is_main else b""
    return pickle.loads(gather_bytes(data, what)[0])


def agree(what: str, digest: str, fix: str) -> None:
    """Refuse, on every rank, a run whose ranks see different ``what`` (``digest``: a short hash of it)."""
    group = current()
    if not group.distributed:
        return
    digests = [d.decode() for d in gather_bytes(digest.encode(), f"comparing {what}")]
    if len(set(digests)) > 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RankFailed(
            f"the ranks disagree on {what}: rank 0 has {digests[0][:12]}, rank {odd[0]} has "
            f"{digests[odd[0]][:12]}; {fix}"
        )
