"""Chunked decoding of residual vectors and the statistics, reduced on the device in fp32.

The full ``[rows x positions x vocab]`` tensor is never held: positions are decoded in chunks, all rows of
a chunk in ONE matrix product, and each chunk is reduced at once (on CPU: in cache-sized blocks of
positions) to every statistic of the registry (``stats.py``): top-k, entropy, KL to the final row,
cross-entropy against the next token, the final top-1's probability, target probabilities/ranks, and any
registered statistic. The chunk size follows a memory budget for the intermediate tensors
(``budget_bytes``).

Two reductions compute the same numbers:
- ``decode_stats`` / ``_reduce_chunk``: the local fast path (reused buffers, in-place passes over
  cache-sized blocks, a two-level top-k on CPU);
- ``reduce_logits``: a functional path in plain torch (no ``out=`` buffers, no in-place updates of its
  inputs, no branch on a tensor's value, no host transfer), the form that can run inside a remote trace.
  Its code lives in ``kernels.py``, which remote traces ship by value. Tests hold the two equal.

Conventions (all in nats): entropy H(p_r); ``kl_to_final`` KL(p_final || p_r); ``cross_entropy``
-log p_r(next token); ``target_ranks`` 1 = the most probable token (for a set of tokens, the best one).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch

from logitlens.core import kernels
from logitlens.core.stats import REGISTRY, Reduction, extra_statistics

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "Stats",
    "answer_logprobs",
    "chunk_size",
    "decode_logits",
    "decode_reduce",
    "decode_stats",
    "reduce_logits",
]

DecodeFn = Callable[..., torch.Tensor]  # (N, d), out=(N, V) buffer or None -> (N, V) fp32 logits
ChunkTransform = Callable[[torch.Tensor], torch.Tensor]  # (m, R, d) -> (m, R, d): a lens's translators

DEFAULT_BUDGET_BYTES = 512 * 2**20
# On CPU a decoded chunk is reduced in blocks of about this many bytes of fp32 logits, so that every pass of
# the reduction after the first reads from cache (L2/L3), not memory (benchmarks/RESULTS.md).
REDUCE_BYTES = 8 * 2**20
LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)


class Stats(dict):
    """Statistic name -> tensor for M decoded vectors x R rows: (M, R), (M, R, k) or (M, R, T).

    Also readable as attributes (``stats.entropy``).
    """

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def chunk_size(n_rows: int, vocab: int, budget_bytes: int, half_precision: bool) -> int:
    """How many positions (each with all its rows) fit the budget: fp32 logits, probabilities (on CPU only
    a cache-sized block of them), the half-precision product."""
    per_vector = vocab * (4 + 4 + (2 if half_precision else 0))
    return max(1, budget_bytes // max(1, n_rows * per_vector))


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
    transform: ChunkTransform | None = None,
) -> Stats:
    """Decode ``rows`` (M, R, d) and reduce to Stats; the last row is the reference for KL/agreement.

    next_ids: (M,) the actual next token of each vector's position, -1 where there is none.
    transform: applied to each chunk of rows (m, R, d) before decoding (a lens's translators).
    """
    m_total, n_rows, _ = rows.shape
    chunk = chunk_size(n_rows, vocab_size, budget_bytes, half_precision)
    target_idx = [torch.as_tensor(list(t), dtype=torch.long) for t in targets]
    parts: list[Stats] = []
    scratch: torch.Tensor | None = None  # (sub, R, V) probabilities, reused
    buffer: torch.Tensor | None = None  # (chunk * R, V) logits, reused by every chunk's product
    for start in range(0, m_total, chunk):
        h = rows[start : start + chunk]  # (m, R, d)
        h = h if transform is None else transform(h)
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
    return Stats({name: torch.cat([p[name] for p in parts]) for name in parts[0]})


def decode_reduce(
    rows: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    *,
    top_k: int,
    next_ids: torch.Tensor,
    targets: Sequence[torch.Tensor] = (),
    chunk: int = 1,
) -> dict[str, torch.Tensor]:
    """The functional decode + reduction: rows (M, R, d) -> every statistic, ``chunk`` vectors at a time,
    registered statistics included: ``kernels.decode_reduce`` (the code that runs inside a remote trace).

    ``decode`` maps (N, d) -> (N, V) logits by calling the model's modules (``Decoder.logits_functional``).
    Equal to ``decode_stats`` (tested).
    """
    return kernels.decode_reduce(
        rows, decode, top_k=top_k, next_ids=next_ids, targets=targets, chunk=chunk, extras=_registered()
    )


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
    """logits: (m, R, V) fp32, consumed in place (becomes base-2 log-probabilities up to a shift);
    ``out``: (m, R, V) scratch.

    Meant for a block that fits in cache (``REDUCE_BYTES``): every pass after the first reads it from cache.
    The work is in base 2: y = (logit - max) * log2(e) <= 0 in place, e = 2^y (``exp2`` is about twice as
    fast as ``exp`` on CPU and as exact as the softmax kernel), s = sum(e) by an exact (cascade) sum, so
    log2 p = y - log2 s and p = e / s is a distribution normalised to fp32 rounding. Entropy
    (log2 s - sum(e y) / s, two non-negative terms) and KL are products summed the same way, never fp32 dot
    products over the whole vocabulary, whose long accumulation chains lose ~1e-4 relative. Every value is
    returned in nats.
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
    y = torch.add(top_vals[..., :1] * -LOG2E, logits, alpha=LOG2E, out=logits)  # in place: (m, R, V) <= 0
    e = torch.exp2(y, out=out)  # (m, R, V) unnormalised probabilities, 1 at the top token
    total = e.sum(-1, keepdim=True)  # (m, R, 1) >= 1
    log2s = total.log2()  # (m, R, 1): log2 p = y - log2s
    inv = total.reciprocal()[..., 0]  # (m, R): p = e / total
    top_probs = (y.gather(-1, top_ids) - log2s).exp2_()
    t_probs = [e.index_select(-1, ids.to(dev)).sum(-1) * inv for ids in targets]  # summed mass of a set
    final_top1 = top_ids[:, -1:, :1].expand(m, n_rows, 1)  # (m, R, 1) the final row's top-1
    final_probs = (y.gather(-1, final_top1) - log2s).squeeze(-1).exp2()
    nxt = next_ids.to(dev)
    ce = log2s - y.gather(-1, nxt.clamp_min(0).view(m, 1, 1).expand(m, n_rows, 1))  # bits
    ce = torch.where(
        (nxt >= 0).unsqueeze(-1), ce.squeeze(-1) * LN2, torch.full_like(ce[..., 0], float("nan"))
    )
    extras: dict[str, torch.Tensor] = {}
    if extra_statistics():  # registered statistics see log p (nats) and p, as the functional path gives them
        logp, probs = (y - log2s) * LN2, e * inv.unsqueeze(-1)
        extras = _extras(Reduction(logp=logp, probs=probs, top_ids=top_ids, next_ids=nxt, targets=targets))
        del logp, probs
    p_final = e[:, -1:].clone()  # (m, 1, V) kept: e is overwritten next
    valid = top_vals[..., 0].isfinite()  # (m, R) rows whose logits are not NaN / +-inf
    # H_r = -sum p_r log2 p_r = log2 s_r - sum(e_r y_r) / s_r   (bits)
    entropy = (log2s[..., 0] - _sum_products(e.mul_(y), valid) * inv) * LN2
    # KL(final || r) = sum_v p_f (log2 p_f - log2 p_r); cross_r = <p_f, log2 p_r> = <p_f, y_r> - log2 s_r
    cross = _sum_products(y.mul_(p_final), valid) * inv[:, -1:] - log2s[..., 0]  # (m, R), bits
    kl = ((cross[:, -1:] - cross) * LN2).clamp_min_(0.0)
    kl[:, -1] = 0.0
    agrees = top_ids[..., 0] == top_ids[:, -1:, 0]
    return _stats(
        top_ids, top_probs, final_probs, entropy, kl, ce, agrees, t_probs, t_ranks, extras, m, n_rows, dev
    )


def _extras(ctx: Reduction) -> dict[str, torch.Tensor]:
    """The registered statistics beyond the built-ins, each from its own ``compute``."""
    return {stat.name: stat.compute(ctx).float() for stat in extra_statistics() if stat.compute is not None}


def _stats(
    top_ids, top_probs, final_probs, entropy, kl, ce, agrees, t_probs, t_ranks, extras, m, n_rows, dev
):
    """The built-ins and extras of one chunk as Stats on the CPU, in the registry's dtypes."""
    empty_f = torch.zeros(m, n_rows, 0, device=dev)
    out = Stats(
        top_ids=top_ids,
        top_probs=top_probs,
        final_probs=final_probs,
        entropy=entropy,
        kl_to_final=kl,
        cross_entropy=ce,
        agrees_with_final=agrees,
        target_probs=torch.stack(t_probs, -1) if t_probs else empty_f,
        target_ranks=torch.stack(t_ranks, -1) if t_ranks else empty_f.long(),
        **extras,
    )
    return Stats({k: v.to(REGISTRY[k].dtype).cpu() if k in REGISTRY else v.cpu() for k, v in out.items()})


def reduce_logits(
    logits: torch.Tensor, top_k: int, next_ids: torch.Tensor, targets: Sequence[torch.Tensor] = ()
) -> dict[str, torch.Tensor]:
    """The functional reduction: (m, R, V) logits -> every statistic (registered ones included), in plain
    torch, on their device: ``kernels.reduce_logits``, the code that runs inside a remote trace (nothing
    written into the inputs, no ``out=``, no branch on a tensor's value, no host transfer; sums over the
    vocabulary in float64). The last row is the reference for KL and agreement.
    """
    return kernels.reduce_logits(logits, top_k, next_ids, targets, _registered())


def _registered() -> list[tuple[str, Callable[[Reduction], torch.Tensor]]]:
    """(name, compute) of the registered statistics beyond the built-ins."""
    return [(s.name, s.compute) for s in extra_statistics() if s.compute is not None]


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
def answer_logprobs(
    rows: torch.Tensor,
    decode: DecodeFn,
    answer_ids: torch.Tensor,
    *,
    vocab_size: int,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    half_precision: bool = False,
    transform: ChunkTransform | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced answer tokens: rows (M, R, d) read at the positions before each answer token,
    answer_ids (M,) the token that follows -> (log p_r(token) (M, R) fp32, rank of the token (M, R)).

    Decoded in chunks under the same memory budget as ``decode_stats``; rank 1 = the most probable token.
    """
    m_total, n_rows, _ = rows.shape
    chunk = chunk_size(n_rows, vocab_size, budget_bytes, half_precision)
    logps, ranks = [], []
    for start in range(0, m_total, chunk):
        h = rows[start : start + chunk]  # (m, R, d)
        h = h if transform is None else transform(h)
        m = h.shape[0]
        logits = decode(h.reshape(m * n_rows, -1)).view(m, n_rows, -1)  # (m, R, V) fp32
        ids = answer_ids[start : start + m].to(logits.device).view(m, 1, 1).expand(m, n_rows, 1)
        chosen = logits.gather(-1, ids)  # (m, R, 1)
        ranks.append((logits > chosen).sum(-1).add_(1).cpu())
        logps.append((chosen.squeeze(-1) - torch.logsumexp(logits, -1)).float().cpu())
        del logits
    if not logps:
        return torch.zeros(0, n_rows), torch.zeros(0, n_rows, dtype=torch.long)
    return torch.cat(logps), torch.cat(ranks)


@torch.inference_mode()
def decode_logits(
    rows: torch.Tensor,
    decode: DecodeFn,
    transform: ChunkTransform | None = None,
) -> torch.Tensor:
    """Raw fp32 logits for every row: rows (M, R, d) -> (R, M, V). Opt-in: this holds the full tensor."""
    h = rows if transform is None else transform(rows)
    n_rows = h.shape[1]
    out = [decode(h[:, r]).cpu() for r in range(n_rows)]  # each (M, V)
    return torch.stack(out)
