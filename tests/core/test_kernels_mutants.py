"""Tests written from the mutation run of ``core/kernels.py`` (scripts/mutate.py kernels): the functional
decode (``unembed``), the chunk plan, and the whole remote lens (``lens_stats``) run here in plain torch
against a float64 computation, for every plan of chunks and row groups."""

from __future__ import annotations

import math

import pytest
import torch

from logitlens.core import kernels
from logitlens.core.kernels import (
    BYTES_PER_LOGIT,
    Reduction,
    block_hidden,
    chunk_plan,
    decode_reduce,
    lens_stats,
    reduce_logits,
    unembed,
)
from reference import reference

D, V = 8, 97


class Shapes(torch.nn.Module):
    """Records the shape of each input, then applies ``inner``."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return self.inner(x)


def modules(seed: int = 0):
    torch.manual_seed(seed)
    norm = torch.nn.LayerNorm(D)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    proj = torch.nn.Linear(D, D)
    head = torch.nn.Linear(D, V)
    with torch.no_grad():
        head.weight.mul_(4)
    return norm.eval(), proj.eval(), head.eval()


def check(stats: dict, ref: dict, atol: float = 1e-5) -> None:
    for name in ("top_ids", "agrees_with_final", "target_ranks"):
        assert torch.equal(stats[name].long() if name != "agrees_with_final" else stats[name], ref[name]), (
            name
        )
    for name in ("top_probs", "final_probs", "entropy", "kl_to_final", "cross_entropy", "target_probs"):
        torch.testing.assert_close(
            stats[name].double(), ref[name], atol=atol, rtol=1e-5, equal_nan=True, msg=name
        )


def test_block_hidden_takes_the_tensor_or_the_first_element():
    h = torch.randn(2, 3, 4)
    assert block_hidden(h) is h
    assert block_hidden((h, "cache")) is h
    assert block_hidden([h, None]) is h


def test_unembed_calls_the_modules_in_order_on_a_batch_of_one_and_post_processes():
    norm, proj, head = modules()
    rec = Shapes(norm)
    h = torch.randn(5, D)
    with torch.no_grad():
        base = head(proj(norm(h))).double()
        plain = unembed(h, [rec, proj], head)
        assert rec.seen == [(1, 5, D)]  # norms see (batch, tokens, d)
        assert plain.shape == (5, V) and plain.dtype == torch.float32
        torch.testing.assert_close(plain.double(), base, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            unembed(h, [norm, proj], head, scale=3.0).double(), base * 3, atol=1e-4, rtol=1e-5
        )
        torch.testing.assert_close(
            unembed(h, [norm, proj], head, divisor=4.0).double(), base / 4, atol=1e-5, rtol=1e-5
        )
        capped = unembed(h, [norm, proj], head, softcap=2.0).double()
        torch.testing.assert_close(capped, torch.tanh(base / 2.0) * 2.0, atol=1e-5, rtol=1e-5)
        both = unembed(h, [norm, proj], head, 3.0, 4.0, 2.0).double()
        torch.testing.assert_close(both, torch.tanh(base * 3 / 4 / 2.0) * 2.0, atol=1e-5, rtol=1e-5)
        # the order of pre matters: the projection after the norm, not before
        assert not torch.allclose(unembed(h, [proj, norm], head), plain)
        # a half-precision head comes back as fp32
        half = unembed(h.double(), [], head.double())
        assert half.dtype == torch.float32


def test_chunk_plan():
    per = V * BYTES_PER_LOGIT
    assert chunk_plan(4, V, per * 8) == (2, 4)  # 8 vectors: two positions of four rows
    assert chunk_plan(4, V, per * 11) == (2, 4)
    assert chunk_plan(4, V, per * 4) == (1, 4)
    assert chunk_plan(4, V, per * 3) == (1, 3)  # one position, rows in groups
    assert chunk_plan(4, V, 1) == (1, 2)  # at least two rows: one and the output row
    assert chunk_plan(3, V, 10 * V * 6, bytes_per_logit=10) == (2, 3)
    assert chunk_plan(3, 0, 7) == (2, 3)  # no vocabulary: one byte per vector, 7 fit


def _case(m=5, r=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(m, r, D, generator=gen) * torch.linspace(0.5, 3, r).view(1, r, 1)
    next_ids = torch.tensor([3, -1, 0, V - 1, 50][:m])
    targets = [[5], [6, 7, 90]]
    return rows, next_ids, targets


@pytest.mark.parametrize("plan", [(1, 4), (2, 4), (3, 4), (5, 4), (1, 2), (1, 3), (2, 2)])
def test_lens_stats_equals_float64_for_every_plan(plan):
    norm, proj, head = modules()
    rows, next_ids, targets = _case()
    with torch.no_grad():
        logits = head(proj(norm(rows))).float()  # (M, R, V)
        ref_logits = logits[:, -1] + 0.25  # the model's own logits, a little off
    out = lens_stats(
        rows,
        [norm, proj],
        head,
        top_k=3,
        next_ids=next_ids,
        targets=[torch.tensor(t) for t in targets],
        plan=plan,
        reference=ref_logits,
    )
    check(out, reference(logits, 3, next_ids, targets))
    assert out["top_ids"].dtype == torch.int32 and out["target_ranks"].dtype == torch.int32
    assert out["entropy"].dtype == torch.float32 and out["agrees_with_final"].dtype == torch.bool
    for name, value in out.items():
        assert value.is_contiguous() and value.untyped_storage().nbytes() == value.nbytes, name
    torch.testing.assert_close(out["self_check"], torch.tensor([0.25, ref_logits.abs().max().item()]))
    assert out["self_check"].dtype == torch.float32


def test_lens_stats_transform_post_processing_and_no_reference():
    norm, proj, head = modules(2)
    rows, next_ids, targets = _case(3, 3, seed=2)
    with torch.no_grad():
        logits = torch.tanh(head(norm(rows * 2 + 1)).float() * 2.0 / 4.0 / 5.0) * 5.0
    out = lens_stats(
        rows,
        [norm],
        head,
        (2.0, 4.0, 5.0),
        top_k=2,
        next_ids=next_ids[:3],
        targets=[torch.tensor(t) for t in targets],
        plan=(2, 2),
        transform=lambda h: h * 2 + 1,
    )
    assert "self_check" not in out
    check(out, reference(logits, 2, next_ids[:3], targets))


def test_lens_stats_self_check_is_the_largest_difference_over_all_chunks():
    norm, proj, head = modules()
    rows, next_ids, targets = _case()
    with torch.no_grad():
        own = head(norm(rows[:, -1])).float()
    ref_logits = own.clone()
    ref_logits[3, 7] += 0.5  # off in the fourth position only: a later chunk
    ref_logits[4, 2] = 100.0  # the largest |reference| in the last chunk
    out = lens_stats(
        rows, [norm], head, top_k=1, next_ids=next_ids, targets=[], plan=(2, 4), reference=ref_logits
    )
    diff, scale = out["self_check"].tolist()
    assert diff == pytest.approx(max(0.5, (100.0 - own[4, 2]).abs().item()), abs=1e-5)
    assert scale == pytest.approx(100.0)
    assert out["target_probs"].shape == (5, 4, 0)


def test_reduce_logits_writes_nothing_into_its_input():
    logits = torch.randn(2, 3, 64)
    logits[0, 1, :5] = -math.inf
    before = logits.clone()
    reduce_logits(logits, 2, torch.tensor([1, -1]), [torch.tensor([0, 1])])
    assert torch.equal(logits, before)


def test_reduce_logits_entropy_of_a_nearly_flat_row_at_a_200k_vocabulary():
    """A nearly flat row over 200k tokens: log_softmax's fp32 sum on CPU lost ~3e-4 there (entropy 3.5e-3
    nats off); the normaliser is now a logsumexp (about 5e-6)."""
    vocab = 200_003
    logits = torch.zeros(1, 2, vocab)
    logits[0, 0, :1000] = 0.001  # nearly flat: 200k terms of about the same size
    out = reduce_logits(logits, 2, torch.tensor([-1]), [torch.tensor([0, 1])])
    ref = reference(logits, 2, torch.tensor([-1]), [[0, 1]])
    torch.testing.assert_close(out["entropy"].double(), ref["entropy"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["kl_to_final"].double(), ref["kl_to_final"], atol=1e-5, rtol=0)


def test_decode_reduce_chunks_and_extras():
    norm, proj, head = modules()
    rows, next_ids, targets = _case()
    seen = []

    def decode(h):
        seen.append(h.shape)
        return head(norm(h)).float()

    with torch.no_grad():
        logits = head(norm(rows)).float()
        out = decode_reduce(
            rows,
            decode,
            top_k=2,
            next_ids=next_ids,
            targets=[torch.tensor(t) for t in targets],
            chunk=2,
            extras=[
                ("lp0", lambda c: c.logp[..., 0]),
                ("n_targets", lambda c: c.probs[..., 0] * 0 + len(c.targets)),
            ],
        )
    assert seen == [(8, D), (8, D), (4, D)]
    check(out, reference(logits, 2, next_ids, targets))
    torch.testing.assert_close(
        out["lp0"], torch.log_softmax(logits.double(), -1)[..., 0].float(), atol=1e-5, rtol=0
    )
    assert (out["n_targets"] == 2).all() and out["n_targets"].dtype == torch.float32


def test_reduction_repr_and_fields():
    ctx = Reduction(
        torch.zeros(2, 3, 5), torch.ones(2, 3, 5), torch.zeros(2, 3, 1), torch.tensor([1, -1]), []
    )
    assert repr(ctx) == "Reduction(logp=(2, 3, 5), targets=0)"
    assert ctx.probs.sum() == 30 and ctx.next_ids.tolist() == [1, -1] and ctx.targets == []
    assert kernels.Reduction is Reduction


def test_chunk_plan_counts_whole_vectors():
    per = V * BYTES_PER_LOGIT
    plan = chunk_plan(4, V, per * 3 + per // 2)  # three and a half vectors: three fit
    assert plan == (1, 3) and all(type(x) is int for x in plan)
    plan = chunk_plan(4, V, per * 9 + 1)
    assert plan == (2, 4) and all(type(x) is int for x in plan)


@pytest.mark.parametrize(
    "m, r, plan, calls",
    [
        (2, 5, (1, 3), [3, 3, 3, 3]),  # rows in groups of 2 + the output row: [0, 1, 4], [2, 3, 4]
        (3, 4, (2, 2), [4, 4, 4, 2, 2, 2]),  # groups [0, 3], [1, 3], [2, 3]; chunks of 2, then 1 position
        (3, 4, (1, 3), [3, 2, 3, 2, 3, 2]),  # groups [0, 1, 3], [2, 3]: one position at a time
        (2, 4, (3, 4), [8]),  # all rows, all positions at once
    ],
)
def test_lens_stats_decodes_no_more_than_the_plan_at_once(m, r, plan, calls):
    norm, proj, head = modules()
    rec = Shapes(head)
    rows, next_ids, targets = _case(m, r)
    extras = [("lp0", lambda c: c.logp[..., 0])]
    out = lens_stats(rows, [norm], rec, top_k=2, next_ids=next_ids[:m], targets=[], plan=plan, extras=extras)
    with torch.no_grad():
        logits = head(norm(rows)).float()
    sizes = [s[1] for s in rec.seen]
    m_chunk, r_chunk = plan
    assert all(n <= m_chunk * r_chunk for n in sizes)
    assert sizes == calls
    ref = reference(logits, 2, next_ids[:m], [[0]])
    for name in ("top_probs", "entropy", "kl_to_final", "cross_entropy"):
        torch.testing.assert_close(out[name].double(), ref[name], atol=1e-5, rtol=1e-5, equal_nan=True)
    lp0 = torch.log_softmax(logits.double(), -1)[..., 0]
    torch.testing.assert_close(out["lp0"].double(), lp0, atol=1e-5, rtol=1e-5)


def test_decode_reduce_default_is_one_position_per_product():
    norm, proj, head = modules()
    rows, next_ids, targets = _case(3, 2)
    seen = []

    def decode(h):
        seen.append(h.shape[0])
        return head(h).float()

    with torch.no_grad():
        out = decode_reduce(rows, decode, top_k=1, next_ids=next_ids[:3])
        assert seen == [2, 2, 2]
        one = decode_reduce(rows[:1], decode, top_k=1, next_ids=next_ids[:1])  # one chunk only
        logits = head(rows).float()
    assert out["top_ids"].shape == (3, 2, 1) and one["top_ids"].shape == (1, 2, 1)
    assert torch.equal(out["top_ids"][..., 0], logits.argmax(-1))
    assert torch.equal(one["top_ids"][0, :, 0], logits[0].argmax(-1))


def test_unembed_keeps_the_first_vocab_logits():
    norm, proj, head = modules()
    h = torch.randn(3, D)
    with torch.no_grad():
        full = unembed(h, [norm], head)
        cut = unembed(h, [norm], head, vocab=50)
    assert full.shape == (3, V) and cut.shape == (3, 50)
    assert torch.equal(cut, full[:, :50])
