"""Independent reference computations for the tests: the statistics of logits in float64, the textbook way
(log-softmax, xlogy so that 0 log 0 = 0), with none of the code under test."""

from __future__ import annotations

import math

import torch


def reference(logits: torch.Tensor, top_k: int, next_ids: torch.Tensor, targets: list[list[int]]) -> dict:
    """(M, R, V) logits -> the statistics in float64 (xlogy: 0 log 0 = 0)."""
    x = logits.double()
    logp = torch.log_softmax(x, -1)
    p = logp.exp()
    top = p.topk(top_k, -1)
    p_f = p[:, -1:]
    ce = -logp.gather(-1, next_ids.clamp_min(0).view(-1, 1, 1).expand(-1, x.shape[1], 1)).squeeze(-1)
    ce[next_ids < 0] = math.nan
    m, r, _ = x.shape
    return {
        "top_ids": top.indices,
        "top_probs": top.values,
        "final_probs": p.gather(-1, top.indices[:, -1:, :1].expand(m, r, 1)).squeeze(-1),
        "entropy": -torch.special.xlogy(p, p).sum(-1),
        "kl_to_final": (torch.special.xlogy(p_f, p_f) - torch.where(p_f > 0, p_f * logp, 0.0)).sum(-1),
        "cross_entropy": ce,
        "agrees_with_final": top.indices[..., 0] == top.indices[:, -1:, 0],
        "target_probs": torch.stack([p[..., t].sum(-1) for t in targets], -1) if targets else None,
        "target_ranks": (
            torch.stack([(x > x[..., t].amax(-1, keepdim=True)).sum(-1) + 1 for t in targets], -1)
            if targets
            else None
        ),
        "logp": logp,
        "p": p,
    }
