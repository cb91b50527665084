"""The forward-hook backend: run the model and read the residual stream at the rows a spec asks for.

Hooks read the residual stream straight off the blocks (never Hugging Face's ``hidden_states`` list, whose
last entry is already normalised): "embed" is block 0's input, "resid" a block's output, "attn" the first
input of the block's module that sits between attention and MLP (``Architecture.mid``). Only the requested
positions are kept, rows meet on one device (the unembedding's) before they are stacked, and the forward
pass stops after the last block needed: the model's own final norm and unembedding over all positions are
never computed.

On a family with several residual streams a row is the model's own combination of them
(``Decoder.block_state``); on one that prepends tokens inside its blocks (CPM-Ant) the kept positions are
shifted past them, and a family that reads left padding from the ids gets its batch left-padded.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from logitlens.core.rows import Row

if TYPE_CHECKING:
    from logitlens.model.decoder import Decoder

__all__ = ["HookBackend", "capture_rows", "forward_kwargs", "probe_forward"]


class _StopForward(Exception):
    """Raised by the last needed hook: everything after it is decoded by the lens instead."""


def _first_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def forward_kwargs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict:
    kwargs: dict[str, Any] = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    return kwargs


def capture_rows(
    model: nn.Module,
    decoder: Decoder,
    rows: Sequence[Row],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    gather: torch.Tensor,
    *,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run ``model`` on a right-padded batch and return the residual stream of ``rows`` at chosen positions.

    input_ids, attention_mask: (B, T); gather: (B, P) positions to keep (any valid index for padding).
    Returns (B, R, P, d) on ``out_device`` (default: where the first row was captured).
    """
    input_ids, attention_mask, gather = _layout(decoder, input_ids, attention_mask, gather)
    collected: list[torch.Tensor | None] = [None] * len(rows)
    last_block = max((r.layer for r in rows if r.site != "embed"), default=-1)
    remaining = {"n": len(rows)}

    def keep(index: int, h: torch.Tensor) -> None:
        g = gather.to(h.device)
        picked = h[torch.arange(h.shape[0], device=h.device).unsqueeze(1), g]  # (B, P, d)
        collected[index] = picked.to(out_device) if out_device is not None else picked
        remaining["n"] -= 1

    def pre(indices: list[int], embed: bool):
        def hook(module, args, kwargs):
            h = decoder.embed_state(args, kwargs) if embed else _first_input(args, kwargs)
            for i in indices:
                keep(i, h)

        return hook

    def post(indices: list[int], stop: bool):
        def hook(module, args, kwargs, output):
            h = decoder.block_state(module, args, kwargs, output)
            for i in indices:
                keep(i, h)
            if stop and remaining["n"] == 0:
                raise _StopForward

        return hook

    by_module: dict[tuple[str, int], list[int]] = {}
    for i, row in enumerate(rows):
        by_module.setdefault((row.site, row.layer), []).append(i)
    handles = []
    try:
        for (site, layer), indices in by_module.items():
            if site == "embed":
                hook = pre(indices, embed=True)
                handles.append(decoder.layers[0].register_forward_pre_hook(hook, with_kwargs=True))
            elif site == "attn":
                mod = decoder.mid_module(layer)
                handles.append(mod.register_forward_pre_hook(pre(indices, embed=False), with_kwargs=True))
            else:
                stop = layer == last_block
                hook = post(indices, stop)
                handles.append(decoder.layers[layer].register_forward_hook(hook, with_kwargs=True))
        with torch.inference_mode():
            model(**forward_kwargs(model, input_ids, attention_mask))
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [rows[i].name for i, c in enumerate(collected) if c is None]
    if missing:
        raise RuntimeError(f"rows {missing} were not captured: the blocks did not all run")
    return torch.stack(collected, dim=1)  # type: ignore[arg-type]  # (B, R, P, d)


def _layout(
    decoder: Decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, gather: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch as the family reads it: left-padded where it reads padding from the ids (the pads, id 0
    from ``batch_inputs``, move to the front and the kept positions with them), and the kept positions
    shifted past the tokens it prepends inside its blocks."""
    if decoder.pad_left:
        t = input_ids.shape[1]
        shift = t - attention_mask.sum(1, keepdim=True)  # (B, 1) pads of each sequence
        cols = (torch.arange(t, device=input_ids.device).unsqueeze(0) - shift) % t  # (B, T) source column
        input_ids = input_ids.gather(1, cols)
        attention_mask = attention_mask.gather(1, cols)
        gather = gather + shift.to(gather.device)
    return input_ids, attention_mask, gather + decoder.prefix


def probe_forward(
    model: nn.Module, decoder: Decoder, input_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full forward on one probe sequence (1, T): (last block's row (T, d), model logits (T, V))."""
    out: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs, output):
        out["h"] = decoder.block_state(module, args, kwargs, output)

    handle = decoder.layers[-1].register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            logits = model(**forward_kwargs(model, input_ids, None)).logits
    finally:
        handle.remove()
    return out["h"][0, decoder.prefix :], logits[0]


class HookBackend:
    """Forward hooks on a transformers model (the default backend)."""

    name = "hooks"
    runs_here = True

    def __init__(self, model: nn.Module, decoder: Decoder):
        self.model = model
        self.decoder = decoder
        self._remote: Any = None

    def remote_backend(self, model: nn.Module, decoder: Decoder, tokenizer=None):
        """The backend that runs remote traces (NDIF): nnsight over the same model, built once."""
        if self._remote is None:
            from logitlens.model.backends.nnsight import nnsight_backend

            self._remote = nnsight_backend(model, decoder, tokenizer)
        return self._remote

    def capture(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gather: torch.Tensor, rows: Sequence[Row]
    ) -> torch.Tensor:
        # Rows of a model spread over devices (device_map="auto") meet on the unembedding's device.
        return capture_rows(
            self.model, self.decoder, rows, input_ids, attention_mask, gather, out_device=self.decoder.device
        )

    def probe(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return probe_forward(self.model, self.decoder, input_ids)
