"""The results the server holds: a small LRU of results by id, and a cache of run requests -> result id.

A result is held with where it came from (``Origin``: the model, lens and rows of the run), so that a
pinned token can be recomputed exactly by the same model, and is dropped when newer results push it out.
Repeated identical run requests are answered from the cache without touching the model.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from logitlens import LensResult

__all__ = ["Held", "Origin", "ResultStore"]


@dataclass(frozen=True)
class Origin:
    """How a result was computed here: by which loaded model and lens, with or without "attn" rows."""

    model: str
    lens: str
    subblocks: bool


@dataclass(frozen=True)
class Held:
    """A held result: its id, a name for downloads, the result, and its origin (None: opened from a file)."""

    id: str
    name: str
    result: LensResult
    origin: Origin | None


class ResultStore:
    """At most ``capacity`` results by id (least recently used dropped first), and the request cache."""

    def __init__(self, capacity: int = 32):
        self.capacity = max(1, capacity)
        self._held: OrderedDict[str, Held] = OrderedDict()
        self._requests: dict[str, str] = {}  # request key -> result id
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    @staticmethod
    def key(text: str) -> str:
        """A short stable id for a request key or a file's bytes."""
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def put(self, held: Held, request_key: str | None = None) -> Held:
        """Hold ``held`` (replacing one with the same id); remember ``request_key`` -> its id."""
        with self._lock:
            self._held[held.id] = held
            self._held.move_to_end(held.id)
            if request_key is not None:
                self._requests[request_key] = held.id
            while len(self._held) > self.capacity:
                old, _ = self._held.popitem(last=False)
                self._requests = {k: v for k, v in self._requests.items() if v != old}
        return held

    def get(self, result_id: str) -> Held | None:
        """The held result ``result_id`` (marked recently used), or None."""
        with self._lock:
            held = self._held.get(result_id)
            if held is not None:
                self._held.move_to_end(result_id)
            return held

    def cached(self, request_key: str) -> Held | None:
        """The result of an identical earlier request, if still held."""
        with self._lock:
            result_id = self._requests.get(request_key)
        return None if result_id is None else self.get(result_id)
