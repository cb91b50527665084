"""Chunked decoding of residual vectors and the statistics, reduced on the device in fp32.

The full ``[rows x positions x vocab]`` tensor is never held: positions are decoded in chunks, all rows of
a chunk in ONE matrix product, and each chunk is reduced at once (on CPU: in cache-sized blocks of
positions) to top-k, entropy, KL to the final row, cross-entropy against the next token and target
probabilities/ranks. The chunk size follows a memory budget for the intermediate tensors
(``budget_bytes``).

Conventions (all in nats): entropy H(p_r); ``kl_to_final`` KL(p_final || p_r); ``cross_entropy``
-log p_r(next token); ``target_ranks`` 1 = the most probable token (for a set of tokens, the best one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

DecodeFn = Callable[..., torch.Tensor]  # (N, d), out=(N, V) buffer or None -> (N, V) fp32 logits
RowTransform = Callable[[int, torch.Tensor], torch.Tensor]  # (row index, (N, d)) -> (N, d)

DEFAULT_BUDGET_BYTES = 512 * 2**20
# On CPU a decoded chunk is reduced in blocks of about this many bytes of fp32 logits, so that every pass of
# the reduction after the first reads from cache (L2/L3), not memory (benchmarks/RESULTS.md).
REDUCE_BYTES = 8 * 2**20


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
    """How many positions (each with all its rows) fit the budget: fp32 logits, probabilities (on CPU only
    a cache-sized block of them), the half-precision product."""
    per_vector = vocab * (4 + 4 + (2 if half_precision else 0))
    return max(1, budget_bytes // max(1, n_rows * per_vector))


def _apply_transform(h: torch.Tensor, transform: RowTransform | None) -> torch.Tensor:
    """h: (m, R, d); applies the per-row translator (tuned lens) to each row."""
    if transform is None:
        return h
    return torch.stack([transform(r, h[:, r]) for r in range(h.shape[1])], dim=1)


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
    scratch: torch.Tensor | None = None  # (sub, R, V) probabilities, reused
    buffer: torch.Tensor | None = None  # (chunk * R, V) logits, reused by every chunk's product
    for start in range(0, m_total, chunk):
        h = _apply_transform(rows[start : start + chunk], transform)  # (m, R, d)
        m = h.shape[0]
        out = None if buffer is None else buffer[: m * n_rows]  # the first chunk is the largest
        logits = decode(h.reshape(m * n_rows, -1), out=out).view(m, n_rows, -1)  # (m, R, V): ONE product
        buffer = logits.view(m * n_rows, -1) if buffer is None else buffer
        vocab = logits.shape[-1]
        sub = max(1, REDUCE_BYTES // (n_rows * vocab * 4)) if logits.device.type == "cpu" else m
        if scratch is None or scratch.device != logits.device or scratch.shape[0] < min(sub, m):
            scratch = torch.empty((min(sub, m), n_rows, vocab), device=logits.device)
        for s in range(0, m, sub):
            b = min(sub, m - s)  # positions reduced together
            nxt = next_ids[start + s : start + s + b]
            parts.append(_reduce_chunk(logits[s : s + b], top_k, nxt, target_idx, out=scratch[:b]))
        del logits  # the next product overwrites the buffer: nothing returned may be a view of it
    return Stats(*(torch.cat([getattr(p, f) for p in parts]) for f in Stats.__dataclass_fields__))


@functools.cache
def _topk_block(vocab: int, k: int) -> int | None:
    """Block length for the two-level top-k: a divisor of ``vocab`` near 128, or None for a plain topk."""
    if k > 32:
        return None
    fits = [b for b in range(64, 257) if vocab % b == 0 and vocab // b >= 4 * k]
    return min(fits, key=lambda b: abs(b - 128)) if fits else None


def _topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted top-k over the last dim, exact: (..., V) -> values, indices (..., k).

    Splits V into blocks and searches only the k blocks with the largest maxima: an element of any other
    block is <= the k-th largest block maximum, and those k maxima are k distinct elements, so it cannot be
    among the k largest (up to ties, whose order topk leaves open anyway). On CPU about 3x faster than
    ``x.topk`` for small k: one vectorised max pass instead of a selection over every element.
    """
    *lead, vocab = x.shape
    b = _topk_block(vocab, k) if x.device.type == "cpu" else None
    if b is None:
        return x.topk(k, dim=-1, sorted=True)
    n = x.numel() // vocab
    blocks = x.reshape(n, vocab // b, b)  # (n, nb, b)
    best = blocks.amax(-1).topk(k, dim=-1).indices  # (n, k) blocks holding the top k
    cand = blocks.gather(1, best.unsqueeze(-1).expand(n, k, b)).view(n, k * b)  # (n, k*b)
    values, idx = cand.topk(k, dim=-1, sorted=True)  # (n, k)
    ids = best.gather(1, idx // b) * b + idx % b
    return values.view(*lead, k), ids.view(*lead, k)


def _reduce_chunk(
    logits: torch.Tensor,
    top_k: int,
    next_ids: torch.Tensor,
    targets: list[torch.Tensor],
    out: torch.Tensor | None = None,
) -> Stats:
    """logits: (m, R, V) fp32, consumed in place (becomes log-probabilities); ``out``: (m, R, V) scratch.

    Meant for a block that fits in cache (``REDUCE_BYTES``): every pass after the first reads it from cache.
    The normaliser comes from the fused softmax kernel, corrected by a second, exact (cascade) sum of the
    probabilities; entropy and KL are products summed the same way, never fp32 dot products over the
    whole vocabulary, whose long accumulation chains lose ~1e-4 relative.
    """
    m, n_rows, vocab = logits.shape
    dev = logits.device
    out = torch.empty_like(logits) if out is None else out
    top_vals, top_ids = _topk(logits, top_k)  # (m, R, k)
    t_ranks = []
    for ids in targets:  # ranks from the raw logits: same order as log p, without its rounding
        best = logits.index_select(-1, ids.to(dev)).amax(-1, keepdim=True)  # (m, R, 1)
        above = torch.gt(logits, best, out=out)  # (m, R, V) 0/1 in fp32: exact counts up to 2^24
        t_ranks.append(above.sum(-1).long() + 1)
    p = torch.softmax(logits, -1, out=out)  # (m, R, V), normalised up to the kernel's fp32 sum
    total = p.sum(-1, keepdim=True)  # (m, R, 1) ~1, exact to fp32 rounding: the correction
    lse = top_vals[..., :1] - p.gather(-1, top_ids[..., :1]).log() + total.log()  # (m, R, 1)
    logp = logits.sub_(lse)  # in place: (m, R, V) log-probabilities
    inv = total.reciprocal()[..., 0]  # (m, R): p / total is the exact distribution
    top_probs = (top_vals - lse).exp_()
    t_probs = [p.index_select(-1, ids.to(dev)).sum(-1) * inv for ids in targets]  # summed mass of a set
    nxt = next_ids.to(dev)
    ce = -logp.gather(-1, nxt.clamp_min(0).view(m, 1, 1).expand(m, n_rows, 1)).squeeze(-1)
    ce = torch.where((nxt >= 0).unsqueeze(-1), ce, torch.full_like(ce, float("nan")))
    p_final = p[:, -1:].clone()  # (m, 1, V) kept: p is overwritten next
    valid = top_vals[..., 0].isfinite()  # (m, R) rows whose logits are not NaN / +inf
    entropy = -_sum_products(p.mul_(logp), valid) * inv  # H_r = -sum p_r log p_r
    # KL(final || r) = sum_v p_f (log p_f - log p_r) = <p_f, log p_f> - <p_f, log p_r>
    cross = _sum_products(logp.mul_(p_final), valid) * inv[:, -1:]  # (m, R): <p_f, log p_r>
    kl = (cross[:, -1:] - cross).clamp_min_(0.0)
    kl[:, -1] = 0.0
    agrees = top_ids[..., 0] == top_ids[:, -1:, 0]
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


def _sum_products(prod: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sums (m, R, V) -> (m, R) of products p * log q, with 0 * log 0 = 0.

    A logit of -inf (a masked token) makes p = 0 and log p = -inf, whose product is NaN. Only rows whose
    sum came out NaN although their logits are finite are summed again without those terms, so the usual
    case costs nothing extra; a p > 0 against log q = -inf still gives -inf (an infinite KL), as it should.
    """
    total = prod.sum(-1)
    redo = total.isnan() & valid
    if redo.any():
        bad = prod[redo]  # (n, V) copy of the affected rows only
        total[redo] = torch.where(bad.isnan(), 0.0, bad).sum(-1)
    return total


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
