"""Chunked decoding of residual vectors and the statistics, reduced on the device in fp32.

The full ``[rows x positions x vocab]`` tensor is never held: positions are decoded in chunks, all rows of
a chunk in ONE matrix product, and each chunk is reduced at once to top-k, entropy, KL to the final row,
cross-entropy against the next token and target probabilities/ranks. The chunk size follows a memory
budget for the intermediate tensors (``budget_bytes``).

Conventions (all in nats): entropy H(p_r); ``kl_to_final`` KL(p_final || p_r); ``cross_entropy``
-log p_r(next token); ``target_ranks`` 1 = the most probable token (for a set of tokens, the best one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

DecodeFn = Callable[[torch.Tensor], torch.Tensor]  # (N, d) -> (N, V) fp32 logits
RowTransform = Callable[[int, torch.Tensor], torch.Tensor]  # (row index, (N, d)) -> (N, d)

DEFAULT_BUDGET_BYTES = 512 * 2**20


@dataclass
class Stats:
    """Statistics for R rows x M decoded vectors (one vector = one (prompt, position))."""

    top_ids: torch.Tensor  # (M, R, k) int64
    top_probs: torch.Tensor  # (M, R, k) fp32
    entropy: torch.Tensor  # (M, R)
    kl_to_final: torch.Tensor  # (M, R)
    cross_entropy: torch.Tensor  # (M, R), NaN where there is no next token
    agrees_with_final: torch.Tensor  # (M, R) bool: top-1 equals the final row's top-1
    target_probs: torch.Tensor  # (M, R, T)
    target_ranks: torch.Tensor  # (M, R, T) int64


def chunk_size(n_rows: int, vocab: int, budget_bytes: int, half_precision: bool) -> int:
    """How many positions (each with all its rows) fit the budget: fp32 logits, probabilities, a mask."""
    per_vector = vocab * (4 + 4 + 1 + (2 if half_precision else 0))
    return max(1, budget_bytes // max(1, n_rows * per_vector))


def _apply_transform(h: torch.Tensor, transform: RowTransform | None) -> torch.Tensor:
    """h: (m, R, d); applies the per-row translator (tuned lens) to each row."""
    if transform is None:
        return h
    return torch.stack([transform(r, h[:, r]) for r in range(h.shape[1])], dim=1)


def _batched_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products without an elementwise temporary: (n, V), (n, V) -> (n,)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


@torch.inference_mode()
def decode_stats(
    rows: torch.Tensor,
    decode: DecodeFn,
    *,
    vocab_size: int,
    top_k: int,
    next_ids: torch.Tensor,
    targets: Sequence[Sequence[int]] = (),
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    half_precision: bool = False,
    transform: RowTransform | None = None,
) -> Stats:
    """Decode ``rows`` (M, R, d) and reduce to Stats; the last row is the reference for KL/agreement.

    next_ids: (M,) the actual next token of each vector's position, -1 where there is none.
    """
    m_total, n_rows, _ = rows.shape
    chunk = chunk_size(n_rows, vocab_size, budget_bytes, half_precision)
    target_idx = [torch.as_tensor(list(t), dtype=torch.long) for t in targets]
    parts: list[Stats] = []
    for start in range(0, m_total, chunk):
        h = _apply_transform(rows[start : start + chunk], transform)  # (m, R, d)
        m = h.shape[0]
        logits = decode(h.reshape(m * n_rows, -1)).view(m, n_rows, -1)  # (m, R, V) fp32: ONE product
        parts.append(_reduce_chunk(logits, top_k, next_ids[start : start + m], target_idx))
        del logits
    return Stats(*(torch.cat([getattr(p, f) for p in parts]) for f in Stats.__dataclass_fields__))


def _reduce_chunk(
    logits: torch.Tensor, top_k: int, next_ids: torch.Tensor, targets: list[torch.Tensor]
) -> Stats:
    """logits: (m, R, V) fp32, consumed in place (becomes log-probabilities)."""
    m, n_rows, vocab = logits.shape
    dev = logits.device
    top_vals, top_ids = logits.topk(top_k, dim=-1, sorted=True)  # (m, R, k)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (m, R, 1)
    logp = logits.sub_(lse)  # in place: (m, R, V) log-probabilities
    top_probs = (top_vals - lse).exp_()
    p = logp.exp()  # (m, R, V)
    flat_p, flat_logp = p.view(-1, vocab), logp.view(-1, vocab)
    entropy = -_batched_dot(flat_p, flat_logp).view(m, n_rows)
    # KL(final || r) = sum_v p_f (log p_f - log p_r) = -H_f - <p_f, log p_r>
    p_final = p[:, -1:, :]  # (m, 1, V)
    cross = torch.bmm(logp, p_final.transpose(1, 2)).view(m, n_rows)  # <log p_r, p_f>
    kl = (-entropy[:, -1:] - cross).clamp_min_(0.0)
    kl[:, -1] = 0.0
    agrees = top_ids[..., 0] == top_ids[:, -1:, 0]
    nxt = next_ids.to(dev)
    has_next = nxt >= 0
    ce = -logp.gather(-1, nxt.clamp_min(0).view(m, 1, 1).expand(m, n_rows, 1)).squeeze(-1)
    ce = torch.where(has_next.unsqueeze(-1), ce, torch.full_like(ce, float("nan")))
    t_probs, t_ranks = [], []
    for ids in targets:
        ids = ids.to(dev)
        t_probs.append(p.index_select(-1, ids).sum(-1))  # (m, R): summed mass of the set
        best = logp.index_select(-1, ids).amax(-1, keepdim=True)  # (m, R, 1)
        t_ranks.append((logp > best).sum(-1) + 1)
    del p
    empty_f = torch.zeros(m, n_rows, 0, device=dev)
    return Stats(
        top_ids=top_ids.cpu(),
        top_probs=top_probs.cpu(),
        entropy=entropy.cpu(),
        kl_to_final=kl.cpu(),
        cross_entropy=ce.cpu(),
        agrees_with_final=agrees.cpu(),
        target_probs=(torch.stack(t_probs, -1) if t_probs else empty_f).cpu(),
        target_ranks=(torch.stack(t_ranks, -1) if t_ranks else empty_f.long()).cpu(),
    )


@torch.inference_mode()
def decode_logits(
    rows: torch.Tensor,
    decode: DecodeFn,
    transform: RowTransform | None = None,
) -> torch.Tensor:
    """Raw fp32 logits for every row: rows (M, R, d) -> (R, M, V). Opt-in: this holds the full tensor."""
    h = _apply_transform(rows, transform)
    m, n_rows, _ = h.shape
    out = [decode(h[:, r]).cpu() for r in range(n_rows)]  # each (M, V)
    return torch.stack(out)
