"""Running the model and collecting the residual stream: the input of block 0 and the output of every block.

Hooks read the residual stream straight off the blocks (never Hugging Face's ``hidden_states`` list, whose
last entry is already normalised). Only the requested positions are kept, and the forward pass stops
after the last block: the model's own final norm and unembedding over all positions are never computed.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn


class _StopForward(Exception):
    """Raised by the last block's hook: everything after it is decoded by the lens instead."""


def _hidden(output) -> torch.Tensor:
    """A block's residual-stream output: the tensor itself or the first element of a tuple."""
    return output[0] if isinstance(output, tuple | list) else output


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def capture_rows(
    model: nn.Module,
    layers: Sequence[nn.Module],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    gather: torch.Tensor,
    *,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run ``model`` on a right-padded batch and return the residual stream at chosen positions.

    input_ids, attention_mask: (B, T); gather: (B, P) positions to keep (any valid index for padding).
    Returns (B, R, P, d) with R = len(layers) + 1: row 0 is the input of block 0 (embeddings, with any
    scaling or position embeddings the model adds), row i the output of block i-1.
    """
    collected: list[torch.Tensor | None] = [None] * (len(layers) + 1)
    last = len(layers) - 1

    def keep(index: int, h: torch.Tensor) -> None:
        g = gather.to(h.device)
        rows = h[torch.arange(h.shape[0], device=h.device).unsqueeze(1), g]  # (B, P, d)
        collected[index] = rows.to(out_device) if out_device is not None else rows

    def pre_hook(module, args, kwargs):
        keep(0, args[0] if args else kwargs["hidden_states"])

    def make_hook(i: int):
        def hook(module, args, output):
            keep(i + 1, _hidden(output))
            if i == last:
                raise _StopForward

        return hook

    handles = [layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    handles += [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    try:
        with torch.inference_mode():
            model(**kwargs)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [i for i, c in enumerate(collected) if c is None]
    if missing:
        raise RuntimeError(f"rows {missing} were not captured: the blocks did not all run")
    return torch.stack(collected, dim=1)  # (B, R, P, d)


def probe_forward(
    model: nn.Module, layers: Sequence[nn.Module], input_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full forward on one probe sequence (1, T): (last block output (T, d), model logits (T, V))."""
    out: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        out["h"] = _hidden(output)

    handle = layers[-1].register_forward_hook(hook)
    kwargs = {"input_ids": input_ids}
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    try:
        with torch.inference_mode():
            logits = model(**kwargs).logits
    finally:
        handle.remove()
    return out["h"][0], logits[0]
