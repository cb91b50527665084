"""Capture backends: how the residual-stream rows of a batch are read out of a model.

A backend turns a right-padded batch and a row spec into a ``(B, R, P, d)`` tensor of residual vectors
(``capture``) and runs the load-time probe (``probe``: the last block's output and the model's logits).
``HookBackend`` (forward hooks on a transformers model) is the default and the local fast path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from logitlens.core.rows import Row
from logitlens.model.backends.hooks import HookBackend

__all__ = ["Backend", "HookBackend"]


class Backend(Protocol):
    """What the lens needs from a way of running the model."""

    name: str
    runs_here: bool  # False: the weights are elsewhere (a model built for remote runs); only remote work

    def capture(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gather: torch.Tensor, rows: Sequence[Row]
    ) -> torch.Tensor:
        """input_ids, attention_mask: (B, T) right-padded; gather: (B, P) positions to keep -> (B, R, P, d)."""
        ...

    def probe(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T) ids -> (the last block's output (T, d), the model's logits (T, V))."""
        ...

    def remote_backend(self, model: Any, decoder: Any, tokenizer: Any = None) -> Any:
        """The backend that runs the whole lens inside nnsight traces (``remote_stats``), local or NDIF."""
        ...
