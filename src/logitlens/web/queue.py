"""One worker per model: it runs one job (one batch of a request) at a time, from a bounded queue.

Requests for a model wait in its queue; a full queue refuses at once (``QueueFull``, 503 with Retry-After
in the API) instead of piling up. A job whose client went away is taken out of the queue (``Job.cancel``):
it never runs. A job already running finishes (torch cannot be stopped halfway) and its result is dropped
by the caller, or kept in the result cache.

Example:
    >>> worker = ModelWorker("tiny", capacity=8)
    >>> job = worker.submit(lambda: 1 + 1)
    >>> job.future.result()
    2
    >>> worker.close()
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["Job", "ModelWorker", "QueueFull"]


class QueueFull(Exception):
    """The model's queue holds ``capacity`` jobs already; ``retry_after`` is a wait in whole seconds."""

    def __init__(self, model: str, capacity: int, retry_after: int):
        super().__init__(
            f"model {model!r} is busy: {capacity} requests are waiting; retry in {retry_after} s"
        )
        self.retry_after = retry_after


class Job:
    """One unit of work for a worker: ``fn()`` runs on the worker's thread; ``future`` gets its value."""

    def __init__(self, fn: Callable[[], Any], worker: ModelWorker):
        self.fn = fn
        self.future: Future = Future()
        self._worker = worker

    def cancel(self) -> bool:
        """Take the job out of the queue if it has not started; True when it will never run."""
        return self._worker._remove(self)


class ModelWorker:
    """A daemon thread that runs the jobs of one model in order, one at a time.

    capacity: how many jobs may wait (the one running not counted); ``submit`` raises ``QueueFull`` beyond.
    """

    def __init__(self, name: str, capacity: int = 8):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._closed = False
        self._seconds = 1.0  # moving average of a job's duration, for Retry-After
        self._thread = threading.Thread(target=self._loop, name=f"logitlens-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting (not the one running)."""
        with self._cond:
            return len(self._pending)

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        with self._cond:
            return self._running is not None

    def retry_after(self) -> int:
        """Seconds a new request should wait before retrying: the queue's expected drain time, at least 1."""
        with self._cond:
            waiting = len(self._pending) + (self._running is not None)
        return max(1, math.ceil(waiting * self._seconds))

    def submit(self, fn: Callable[[], Any]) -> Job:
        """Queue ``fn``; raises ``QueueFull`` when ``capacity`` jobs are waiting already."""
        job = Job(fn, self)
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the worker of model {self.name!r} is closed")
            if len(self._pending) >= self.capacity:
                waiting = len(self._pending) + (self._running is not None)
                raise QueueFull(self.name, self.capacity, max(1, math.ceil(waiting * self._seconds)))
            self._pending.append(job)
            self._cond.notify()
        return job

    def _remove(self, job: Job) -> bool:
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return False
        job.future.cancel()
        return True

    def close(self) -> None:
        """Stop after the running job; waiting jobs are cancelled."""
        with self._cond:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job in dropped:
            job.future.cancel()

    def _next(self) -> Job | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._running = self._pending.popleft()
            return self._running

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            if job.future.set_running_or_notify_cancel():
                start = time.perf_counter()
                try:
                    job.future.set_result(job.fn())
                except BaseException as exc:  # handed to the waiting request, which answers for it
                    job.future.set_exception(exc)
                self._seconds = 0.7 * self._seconds + 0.3 * (time.perf_counter() - start)
            with self._cond:
                self._running = None
