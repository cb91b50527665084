"""Multi-stream residuals: how a block's output becomes the ONE vector the model's final norm reads.

Most families carry one residual stream, and a row is simply that stream after a block. Some carry more,
and combine them only once, after the last block, right before the final norm. For those a row is **what
the final norm would read if the model stopped after that block**: the model's own combination of the
streams, computed by the model's own modules (never an average of our choosing). That is exactly the model
cut to its first i blocks (the truncation reference the tests compare with).

- ``"hyper"`` (hyper-connections: DeepSeek-V4, HY-V4, Qwen4-exp): a block's output is n parallel streams,
  ``(B, T, n, d)`` or flattened ``(B, T, n * d)``; the module at ``Architecture.combine`` (``hc_head``,
  ``hyper_connection_mixer``) collapses them with weights computed from the streams themselves.
- ``"altup"`` (Gemma 3n's AltUp): a block carries n stacked predictions ``(n, B, T, d)``; the read-out keeps
  the active one, maps the others through the ModuleList at ``Architecture.combine``
  (``altup_unembed_projections``), rescales each to the active one's magnitude and averages them, as
  ``Gemma3nTextModel.forward`` does after its last block.
- ``"block_mix"`` (Inkling 2's block attention residuals): the final input attends over the block states
  so far (the inputs of the block-boundary layers) and the current state, through the module at
  ``Architecture.combine`` (``final_input``); the block states of a prefix of blocks are the ones its
  layers received, so every row is defined and decoded with the model's own mixing.

On these families there is no single residual stream between attention and MLP, and the output is not a
sum of what the components wrote: sub-block ("attn") rows and direct logit attribution are refused, each
in one line (``Readout.no_subblocks``, ``Readout.no_attribution``). Tuned lenses work: their translators
act on the row vector defined above, in training and decoding alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from logitlens.core.kernels import block_hidden

__all__ = ["KINDS", "Readout", "make_readout"]


def _first_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class Readout:
    """The model's own combination of a multi-stream residual into the vector its final norm reads.

    ``resid(block, args, kwargs, output)`` -> (B, T, d) for a block's output (its forward hook's view);
    ``embed(args, kwargs)`` -> (B, T, d) for block 0's input (the embedding row).
    """

    kind = ""
    row = ""  # what a row is on this kind of family, in words (docs/architectures.md)
    no_subblocks = "its residual is several streams, with no single stream between attention and MLP"
    no_attribution = (
        "the model combines its residual streams with weights computed from the streams themselves, so the "
        "output is not a sum of what each component wrote"
    )

    def __init__(self, combine: nn.Module):
        self.combine = combine

    def embed(self, args, kwargs) -> torch.Tensor:
        return self.combine_state(_first_input(args, kwargs))

    def resid(self, block: nn.Module, args, kwargs, output) -> torch.Tensor:
        return self.combine_state(block_hidden(output))

    def combine_state(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class HyperReadout(Readout):
    kind = "hyper"
    row = (
        "the model's own collapse of the n hyper-connection streams after block i (its final "
        "hyper-head, weights computed from the streams), i.e. what the final norm would read if the model "
        "ended after block i"
    )

    def combine_state(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(x)  # (B, T, n, d) or (B, T, n * d) -> (B, T, d)


class AltUpReadout(Readout):
    """Gemma 3n: ``Gemma3nTextModel.forward``'s read-out after the last block, on any block's output."""

    kind = "altup"
    row = (
        "the model's AltUp read-out of the stacked predictions after block i (the active one, plus the "
        "others projected back and rescaled to its magnitude, averaged), i.e. what the final norm would "
        "read if the model ended after block i"
    )
    no_attribution = (
        "its AltUp read-out rescales each stacked prediction by its own magnitude, so the output is not a "
        "sum of what each component wrote"
    )

    def combine_state(self, x: torch.Tensor) -> torch.Tensor:
        # x: (n, B, T, d); stream 0 is the active one (altup_active_idx is 0 in the read-out's own code)
        target = torch.mean(x[0] ** 2, dim=-1, keepdim=True) ** 0.5
        states = [x[0]]
        for i, proj in enumerate(self.combine, start=1):
            y = proj(x[i]).to(dtype=x.dtype, device=target.device)
            norm = torch.sqrt(torch.mean(y**2, dim=-1, keepdim=True).clamp(min=1e-5))
            states.append(y * target / norm)
        return torch.mean(torch.stack(states), dim=0)  # (B, T, d)


class BlockMixReadout(Readout):
    """Inkling 2: the final input attends over the block states and the current state."""

    kind = "block_mix"
    row = (
        "the model's final input after block i: its learned attention over the block states so far (the "
        "inputs of the block-boundary layers among blocks 0..i) and the state after block i, i.e. what the "
        "final norm would read if the model ended after block i"
    )
    no_subblocks = "its layers read an attention mix of earlier block states, not one residual stream"
    no_attribution = (
        "its final input is an attention over the block states, with weights computed from the states, "
        "so the output is not a sum of what each component wrote"
    )

    def embed(self, args, kwargs) -> torch.Tensor:
        x = _first_input(args, kwargs)  # (B, T, d): no block states before block 0
        empty = x.new_zeros(*x.shape[:-1], 0, x.shape[-1])
        return self.combine(empty, x)[0]

    def resid(self, block: nn.Module, args, kwargs, output) -> torch.Tensor:
        x = _first_input(args, kwargs)  # the block's input
        states = args[1] if len(args) > 1 else kwargs["block_states"]  # (B, T, k, d) before this block
        if getattr(block, "is_block_boundary", False):  # the model appends a boundary layer's input
            states = torch.cat([states.to(x.device), x.unsqueeze(-2)], dim=-2)
        return self.combine(states, block_hidden(output))[0]


KINDS: dict[str, type[Readout]] = {cls.kind: cls for cls in (HyperReadout, AltUpReadout, BlockMixReadout)}


def make_readout(kind: str | None, combine: Any) -> Readout | None:
    """The Readout of ``Architecture.streams`` over the resolved ``combine`` module (None: one stream)."""
    if kind is None:
        return None
    return KINDS[kind](combine)
