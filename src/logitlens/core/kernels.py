"""The code that runs inside an nnsight trace, on NDIF's servers too: plain torch, nothing else.

A remote trace ships this module's functions by value (``nnsight.register``): their source and the globals
they name travel with the request and are rebuilt on a server that has no logitlens. So this file imports
only what NDIF lets traced code import (torch here; math, collections, numpy, einops, typing, operator
would do too), defines only plain functions and one plain class (no dataclass, no functools), and each
function:

- writes into no input and uses no ``out=`` buffer;
- branches on Python numbers and shapes, never on a tensor's value, and moves nothing to the host;
- calls modules (the model's final norm, projections, unembedding) instead of reading their weights: on a
  remote server reading a weight tensor returns a multi-GB copy.

``reduce_logits`` and ``decode_reduce`` are the functional reduction (``reduce.py`` re-exports them with the
registered statistics); ``unembed`` is the functional decode; ``lens_stats`` is the whole remote lens after
the capture: chunked decode + reduction under a memory budget, the server-side self-check, and compact
copies of the statistics (all that comes back).

Conventions (all in nats): entropy H(p_r); ``kl_to_final`` KL(p_final || p_r); ``cross_entropy``
-log p_r(next token); ``target_ranks`` 1 = the most probable token (for a set of tokens, the best one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = [
    "BYTES_PER_LOGIT",
    "Reduction",
    "block_hidden",
    "chunk_plan",
    "decode_reduce",
    "lens_stats",
    "reduce_logits",
    "unembed",
]

# Bytes of intermediate tensors per decoded logit in ``reduce_logits``: fp32 logits, log-probabilities,
# probabilities, the entropy and cross terms (fp32) and a comparison mask, with headroom.
BYTES_PER_LOGIT = 24

Extra = tuple  # (name, compute): a registered statistic's name and its function of a Reduction
Module = Callable[[torch.Tensor], torch.Tensor]  # a module or an nnsight envoy, called


class Reduction:
    """What a registered statistic's ``compute`` sees for one chunk of m decoded vectors x R rows.

    logp, probs: (m, R, V) fp32 log-probabilities and probabilities (read only: do not modify);
    top_ids: (m, R, k); next_ids: (m,) the actual next token (-1 where there is none);
    targets: one LongTensor of token ids per target. The last row is the model's own output.
    (A plain class, not a dataclass: it is rebuilt inside remote traces, where dataclasses is not allowed.)
    """

    def __init__(
        self,
        logp: torch.Tensor,
        probs: torch.Tensor,
        top_ids: torch.Tensor,
        next_ids: torch.Tensor,
        targets: list[torch.Tensor],
    ):
        self.logp = logp
        self.probs = probs
        self.top_ids = top_ids
        self.next_ids = next_ids
        self.targets = targets

    def __repr__(self) -> str:
        return f"Reduction(logp={tuple(self.logp.shape)}, targets={len(self.targets)})"


def block_hidden(output) -> torch.Tensor:
    """A block's residual-stream output: the tensor itself or the first element of a tuple.

    Transformers versions differ (a tuple on one side, a tensor on the other); ``output[0]`` of a tensor
    would silently take batch row 0.
    """
    return output[0] if isinstance(output, tuple | list) else output


def unembed(
    h: torch.Tensor,
    pre: Sequence[Module],
    head: Module,
    scale: float | None = None,
    divisor: float | None = None,
    softcap: float | None = None,
    vocab: int | None = None,
) -> torch.Tensor:
    """(N, d) residual vectors -> (N, V) fp32 logits by calling the model's modules.

    pre: the final norm and any projections, in order (modules or nnsight envoys); head: the unembedding
    module; scale, divisor, softcap: the family's logit post-processing (Python floats or None); vocab: keep
    only the first ``vocab`` logits, as the model does (Inkling's unpadded vocabulary), or None for all.
    """
    x = h.unsqueeze(0)  # (1, N, d): norms see the shape they were written for
    for mod in pre:
        x = mod(x)
    out = head(x)[0].float()  # (N, V)
    if vocab is not None:
        out = out[:, :vocab]
    if scale is not None:
        out = out * scale
    if divisor is not None:
        out = out / divisor
    if softcap is not None:
        out = torch.tanh(out / softcap) * softcap
    return out


def reduce_logits(
    logits: torch.Tensor,
    top_k: int,
    next_ids: torch.Tensor,
    targets: Sequence[torch.Tensor] = (),
    extras: Sequence[Extra] = (),
) -> dict[str, torch.Tensor]:
    """The functional reduction: (m, R, V) logits -> every statistic, in plain torch, on their device.

    Nothing is written into the inputs, no ``out=`` buffer is used, no branch depends on a tensor's
    value and nothing moves to the host, so the same code runs inside a remote trace. Sums over the
    vocabulary accumulate in float64. The last row is the reference for KL and agreement.
    extras: (name, compute) pairs of registered statistics, each compute a function of a ``Reduction``.
    """
    m, n_rows, _ = logits.shape
    x = logits.float()
    # x - logsumexp, not log_softmax: on CPU the fp32 sum inside log_softmax loses ~3e-4 on a nearly flat row
    # of 200k logits (entropy 3.5e-3 nats off); logsumexp keeps it to ~5e-6, as the fast path does.
    logp = x - torch.logsumexp(x, -1, keepdim=True)  # (m, R, V)
    p = logp.exp()
    top_logp, top_ids = logp.topk(top_k, dim=-1)  # (m, R, k)
    entropy = -torch.special.xlogy(p, p).sum(-1, dtype=torch.float64)
    p_f = p[:, -1:]  # (m, 1, V)
    cross = torch.where(p_f > 0, p_f * logp, torch.zeros_like(logp)).sum(-1, dtype=torch.float64)
    kl = (cross[:, -1:] - cross).clamp_min(0.0)
    kl = torch.cat([kl[:, :-1], torch.zeros_like(kl[:, -1:])], 1)
    final_top1 = top_ids[:, -1:, :1].expand(m, n_rows, 1)
    final_probs = logp.gather(-1, final_top1).squeeze(-1).exp()
    nxt = next_ids.to(x.device)
    ce = -logp.gather(-1, nxt.clamp_min(0).view(m, 1, 1).expand(m, n_rows, 1)).squeeze(-1)
    ce = torch.where((nxt >= 0).unsqueeze(-1), ce, torch.full_like(ce, float("nan")))
    t_probs, t_ranks = [], []
    for ids in targets:
        ids = ids.to(x.device)
        t_probs.append(p.index_select(-1, ids).sum(-1))
        best = x.index_select(-1, ids).amax(-1, keepdim=True)
        t_ranks.append((x > best).sum(-1) + 1)
    empty = torch.zeros(m, n_rows, 0, device=x.device)
    out = {
        "top_ids": top_ids,
        "top_probs": top_logp.exp(),
        "final_probs": final_probs,
        "entropy": entropy.float(),
        "kl_to_final": kl.float(),
        "cross_entropy": ce,
        "agrees_with_final": top_ids[..., 0] == top_ids[:, -1:, 0],
        "target_probs": torch.stack(t_probs, -1) if t_probs else empty,
        "target_ranks": torch.stack(t_ranks, -1) if t_ranks else empty.long(),
    }
    if extras:
        ctx = Reduction(logp=logp, probs=p, top_ids=top_ids, next_ids=nxt, targets=list(targets))
        for name, compute in extras:
            out[name] = compute(ctx).float()
    return out


def decode_reduce(
    rows: torch.Tensor,
    decode: Module,
    *,
    top_k: int,
    next_ids: torch.Tensor,
    targets: Sequence[torch.Tensor] = (),
    chunk: int = 1,
    extras: Sequence[Extra] = (),
) -> dict[str, torch.Tensor]:
    """The functional decode + reduction: rows (M, R, d) -> every statistic, ``chunk`` vectors at a time.

    ``decode`` maps (N, d) -> (N, V) logits by calling the model's modules (``unembed``). The loop runs
    over a count known before the first product, never over a tensor's value, and the results stay on
    the device: the shape a remote trace needs.
    """
    m_total, n_rows, d = rows.shape
    parts = []
    for start in range(0, m_total, max(1, chunk)):
        h = rows[start : start + chunk]  # (m, R, d)
        m = h.shape[0]
        logits = decode(h.reshape(m * n_rows, d)).reshape(m, n_rows, -1)  # (m, R, V)
        parts.append(reduce_logits(logits, top_k, next_ids[start : start + chunk], targets, extras))
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def chunk_plan(
    n_rows: int, vocab: int, budget_bytes: int, bytes_per_logit: int = BYTES_PER_LOGIT
) -> tuple[int, int]:
    """(positions per chunk, rows per chunk) so that one chunk's intermediates fit ``budget_bytes``.

    All rows of a position go together while one position fits; otherwise one position at a time, its
    rows in groups of ``rows - 1`` plus the output row (the reference every group needs for KL and
    agreement). Either way at least one position and two rows.
    """
    per_vector = max(1, vocab * bytes_per_logit)
    fit = max(2, budget_bytes // per_vector)  # decoded vectors per chunk
    if fit >= n_rows:
        return max(1, fit // n_rows), n_rows
    return 1, fit


def lens_stats(
    rows: torch.Tensor,
    pre: Sequence[Module],
    head: Module,
    post: tuple = (None, None, None),
    *,
    top_k: int,
    next_ids: torch.Tensor,
    targets: Sequence[torch.Tensor] = (),
    extras: Sequence[Extra] = (),
    plan: tuple[int, int] = (1, 1),
    transform: Module | None = None,
    reference: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The remote lens after the capture: rows (M, R, d) -> compact statistics, all on the device.

    pre, head, post: the model's final norm and projections, its unembedding (modules or nnsight envoys,
    called: ``unembed``) and the (scale, divisor, softcap[, vocab]) post-processing; plan: ``chunk_plan``'s
    (positions, rows) per chunk; transform: (m, R, d) -> (m, R, d) applied to each chunk (a lens's
    translators) or None; reference: (M, V) the model's own logits at the same positions, or None.

    Returns name -> tensor of (M, R, ...) copies (never views of large storage) with ids and ranks as
    int32, plus "self_check" = [max |decoded output row - reference|, max |reference|] when a
    reference is given: the self-check, computed where the logits are.
    """
    m_total, n_rows, d = rows.shape
    m_chunk, r_chunk = plan
    # Row groups: all rows at once, or groups of r_chunk - 1 rows, each decoded with the output row.
    if r_chunk >= n_rows:
        groups = [list(range(n_rows))]
    else:
        step = max(1, r_chunk - 1)
        groups = [
            list(range(s, min(s + step, n_rows - 1))) + [n_rows - 1] for s in range(0, n_rows - 1, step)
        ]
    parts = []
    diffs = []
    scales = []
    with torch.no_grad():
        for start in range(0, m_total, max(1, m_chunk)):
            h = rows[start : start + m_chunk]  # (m, R, d)
            h = h if transform is None else transform(h)
            m = h.shape[0]
            nxt = next_ids[start : start + m_chunk]
            pieces = []
            for g, idx in enumerate(groups):
                flat = h[:, idx].reshape(m * len(idx), d)  # (m r, d)
                logits = unembed(flat, pre, head, *post).reshape(m, len(idx), -1)  # (m, r, V)
                st = reduce_logits(logits, top_k, nxt, targets, extras)
                last = g == len(groups) - 1  # the output row's statistics are kept once, from here
                pieces.append(st if last else {k: v[:, :-1] for k, v in st.items()})
                if last and reference is not None:
                    ref = reference[start : start + m_chunk].float().to(logits.device)  # (m, V)
                    diffs.append((logits[:, -1] - ref).abs().amax())
                    scales.append(ref.abs().amax())
            parts.append({k: torch.cat([p[k] for p in pieces], 1) for k in pieces[0]})
        out = {}
        for name in parts[0]:
            value = torch.cat([p[name] for p in parts])
            if value.dtype == torch.int64:
                value = value.int()  # ids and ranks < 2^31: half the bytes that come back
            out[name] = value.detach().clone(memory_format=torch.contiguous_format)
        if reference is not None:
            out["self_check"] = torch.stack([torch.stack(diffs).amax(), torch.stack(scales).amax()]).float()
    return out
