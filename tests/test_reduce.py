"""The reduction on its own: decode_stats against a float64 computation, including masked (-inf) logits."""

from __future__ import annotations

import torch

from logitlens.reduce import decode_stats


def reference(logits: torch.Tensor, top_k: int, next_ids: torch.Tensor, targets: list[list[int]]):
    """logits (M, R, V) -> the same statistics in float64, written the textbook way (xlogy: 0 log 0 = 0)."""
    x = logits.double()
    logp = torch.log_softmax(x, -1)
    p = logp.exp()
    top = p.topk(top_k, -1)
    entropy = -torch.special.xlogy(p, p).sum(-1)
    p_f = p[:, -1:]
    kl = (torch.special.xlogy(p_f, p_f) - torch.where(p_f > 0, p_f * logp, 0.0)).sum(-1)
    ce = -logp.gather(-1, next_ids.clamp_min(0).view(-1, 1, 1).expand(-1, x.shape[1], 1)).squeeze(-1)
    ce[next_ids < 0] = float("nan")
    t_probs = torch.stack([p[..., t].sum(-1) for t in targets], -1)
    t_ranks = torch.stack([(x > x[..., t].amax(-1, keepdim=True)).sum(-1) + 1 for t in targets], -1)
    return top, entropy, kl, ce, t_probs, t_ranks


def run(logits: torch.Tensor, top_k: int, next_ids: torch.Tensor, targets: list[list[int]], **kw):
    m, r, _ = logits.shape
    rows = torch.arange(m * r, dtype=torch.float32).view(m, r, 1)  # row i decodes to logits.view(-1, V)[i]
    flat = logits.reshape(m * r, -1)
    return decode_stats(
        rows,
        lambda h, out=None: (
            flat[h[:, 0].long()] if out is None else torch.index_select(flat, 0, h[:, 0].long(), out=out)
        ),
        vocab_size=logits.shape[-1],
        top_k=top_k,
        next_ids=next_ids,
        targets=targets,
        **kw,
    )


def assert_matches(stats, logits, top_k, next_ids, targets):
    top, entropy, kl, ce, t_probs, t_ranks = reference(logits, top_k, next_ids, targets)
    assert torch.equal(stats.top_ids, top.indices)
    torch.testing.assert_close(stats.top_probs.double(), top.values, atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.entropy.double(), entropy, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(stats.kl_to_final.double(), kl, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(stats.cross_entropy.double(), ce, atol=1e-4, rtol=1e-5, equal_nan=True)
    torch.testing.assert_close(stats.target_probs.double(), t_probs, atol=1e-6, rtol=0)
    assert torch.equal(stats.target_ranks, t_ranks)
    assert torch.equal(stats.agrees_with_final, top.indices[..., 0] == top.indices[:, -1:, 0])


def test_random_logits_match_float64():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, 1024, generator=gen) * torch.linspace(0.5, 8, 5).view(1, 5, 1)
    next_ids = torch.tensor([3, 9, -1, 1000, 0, 17, -1])
    targets = [[5], [1, 2, 3]]
    for budget in (2**30, 5 * 1024 * 8):  # one chunk, and one position per chunk
        stats = run(logits, 3, next_ids, targets, budget_bytes=budget)
        assert_matches(stats, logits, 3, next_ids, targets)


def test_masked_logits_give_finite_entropy_and_infinite_kl_where_due():
    """-inf logits (masked tokens) have p = 0 and contribute nothing, instead of 0 * -inf = NaN."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 512, generator=gen) * 3
    logits[:, :, 400:] = float("-inf")  # masked for every row: KL stays finite
    logits[1, 0, 7] = float("-inf")  # masked in an early row only: the final row has mass there
    next_ids = torch.tensor([1, 450, 7, -1])  # 450 is masked: cross-entropy +inf
    targets = [[450], [7, 450]]
    stats = run(logits, 2, next_ids, targets)
    assert torch.isfinite(stats.entropy).all()
    assert torch.isinf(stats.kl_to_final[1, 0]) and stats.kl_to_final[1, 0] > 0
    finite = torch.ones(4, 3, dtype=torch.bool)
    finite[1, 0] = False
    assert torch.isfinite(stats.kl_to_final[finite]).all()
    assert torch.isinf(stats.cross_entropy[1]).all()
    assert (stats.target_probs[..., 0] == 0).all()
    assert_matches(stats, logits, 2, next_ids, targets)


def test_a_nan_row_stays_nan_and_does_not_spoil_the_others():
    logits = torch.randn(2, 3, 256)
    logits[0, 1] = float("nan")
    stats = run(logits, 1, torch.tensor([-1, -1]), [])
    assert torch.isnan(stats.entropy[0, 1])
    ok = torch.ones(2, 3, dtype=torch.bool)
    ok[0, 1] = False
    assert torch.isfinite(stats.entropy[ok]).all()
    assert torch.isfinite(stats.kl_to_final[1]).all()
