"""Tests written from the mutation run of ``engine/reduce.py`` (scripts/mutate.py reduce): the plain top-k
path, logits far from 0, registered statistics in both reductions, the functional ``decode_reduce``, the
memory budget of ``chunk_size`` and the shapes of a run without targets. Each checks public behaviour
against a float64 computation written the textbook way."""

from __future__ import annotations

import math

import pytest
import torch

from logitlens.core.stats import Statistic, register_statistic, unregister_statistic
from logitlens.engine.reduce import (
    Stats,
    _reduce_chunk,
    chunk_size,
    decode_reduce,
    decode_stats,
    reduce_logits,
)
from markers import needs_cuda
from reference import reference


def table(logits: torch.Tensor):
    """rows (M, R, 1) and a decode function mapping row i to logits.view(-1, V)[i] (with the out= buffer)."""
    m, r, _ = logits.shape
    flat = logits.reshape(m * r, -1)
    rows = torch.arange(m * r, dtype=torch.float32).view(m, r, 1)

    def decode(h, out=None):
        idx = h[:, 0].long()
        return flat[idx].clone() if out is None else torch.index_select(flat, 0, idx, out=out)

    return rows, decode


def fast(logits, top_k, next_ids, targets, **kw) -> Stats:
    rows, decode = table(logits)
    return decode_stats(
        rows, decode, vocab_size=logits.shape[-1], top_k=top_k, next_ids=next_ids, targets=targets, **kw
    )


def check(stats, ref, *, atol=1e-5):
    assert torch.equal(stats["top_ids"], ref["top_ids"])
    assert torch.equal(stats["agrees_with_final"], ref["agrees_with_final"])
    for name in ("top_probs", "final_probs", "entropy", "kl_to_final", "cross_entropy"):
        torch.testing.assert_close(stats[name].double(), ref[name], atol=atol, rtol=1e-5, equal_nan=True)
    if ref["target_probs"] is not None:
        torch.testing.assert_close(stats["target_probs"].double(), ref["target_probs"], atol=atol, rtol=0)
        assert torch.equal(stats["target_ranks"], ref["target_ranks"])


def _logits(m, r, v, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, r, v, generator=gen) * torch.linspace(0.5, 6, r).view(1, r, 1)


@pytest.mark.parametrize(
    "vocab, top_k",
    [(1009, 3), (1024, 40)],  # a prime vocabulary (no block length divides it) and k > 32: plain topk
)
def test_plain_topk_path_is_sorted_and_matches_float64(vocab, top_k):
    logits = _logits(5, 4, vocab, seed=vocab)
    next_ids = torch.tensor([1, -1, 0, vocab - 1, 7])
    targets = [[2], [3, 4]]
    stats = fast(logits, top_k, next_ids, targets)
    assert stats.top_ids.shape == (5, 4, top_k)
    assert (stats.top_probs[..., :-1] >= stats.top_probs[..., 1:]).all()  # most probable first
    check(stats, reference(logits, top_k, next_ids, targets))


@pytest.mark.parametrize("shift", [-300.0, 300.0])
def test_statistics_do_not_change_when_every_logit_is_shifted_far_from_zero(shift):
    """softmax is shift-invariant: logits around +-300 (fp32 exp would over/underflow) give the same
    statistics as the float64 reference."""
    logits = _logits(4, 3, 512, seed=3) + shift
    next_ids = torch.tensor([5, -1, 0, 511])
    targets = [[9], [1, 2]]
    check(fast(logits, 4, next_ids, targets), reference(logits, 4, next_ids, targets), atol=5e-4)


def test_reduce_chunk_allocates_its_own_scratch_when_given_none():
    logits = _logits(3, 3, 256, seed=4)
    ref = reference(logits, 2, torch.tensor([1, 2, -1]), [[4]])
    stats = _reduce_chunk(logits.clone(), 2, torch.tensor([1, 2, -1]), [torch.tensor([4])])
    check(stats, ref)


def test_without_targets_the_target_statistics_are_empty_in_their_dtypes():
    logits = _logits(3, 4, 256, seed=5)
    for stats in (
        fast(logits, 2, torch.tensor([1, -1, 3]), []),
        Stats(reduce_logits(logits, 2, torch.tensor([1, -1, 3]))),
    ):
        assert stats.target_probs.shape == (3, 4, 0) and stats.target_probs.dtype == torch.float32
        assert stats.target_ranks.shape == (3, 4, 0) and stats.target_ranks.dtype == torch.long


def test_stats_attribute_error_names_the_missing_statistic():
    stats = Stats(entropy=torch.zeros(1))
    assert stats.entropy is stats["entropy"]
    with pytest.raises(AttributeError, match="no_such_statistic"):
        stats.no_such_statistic  # noqa: B018


# ---- registered statistics: every field of the Reduction they see -----------------------------------


EXTRAS = [
    # (statistic, its float64 reference from (ref, next_ids, targets))
    (
        Statistic("max_logp64", torch.float64, math.nan, compute=lambda c: c.logp.amax(-1)),
        lambda ref, nxt, tg: ref["logp"].amax(-1),
    ),
    (
        Statistic("p_of_token_3", torch.float32, math.nan, kind="prob", compute=lambda c: c.probs[..., 3]),
        lambda ref, nxt, tg: ref["p"][..., 3],
    ),
    (
        Statistic("top1_id", torch.long, -1, compute=lambda c: c.top_ids[..., 0]),
        lambda ref, nxt, tg: ref["top_ids"][..., 0],
    ),
    (
        Statistic(
            "next_logp",
            torch.float32,
            math.nan,
            compute=lambda c: c.logp.gather(
                -1, c.next_ids.clamp_min(0).view(-1, 1, 1).expand(-1, c.logp.shape[1], 1)
            ).squeeze(-1),
        ),
        lambda ref, nxt, tg: ref["logp"][torch.arange(len(nxt)), :, nxt.clamp_min(0)],
    ),
    (
        Statistic(
            "target_mass",
            torch.float32,
            math.nan,
            kind="prob",
            per_target=True,
            compute=lambda c: torch.stack([c.probs.index_select(-1, t).sum(-1) for t in c.targets], -1),
        ),
        lambda ref, nxt, tg: ref["target_probs"],
    ),
]


@pytest.fixture
def extras():
    registered = [register_statistic(s) for s, _ in EXTRAS]
    try:
        yield registered
    finally:
        for s in registered:
            unregister_statistic(s.name)


def _extra_case():
    logits = _logits(4, 3, 300, seed=6)
    next_ids = torch.tensor([3, -1, 0, 299])
    targets = [[3], [10, 11, 12]]
    return logits, next_ids, targets


def test_registered_statistics_see_log_probs_probs_top_ids_next_ids_and_targets(extras):
    logits, next_ids, targets = _extra_case()
    ref = reference(logits, 2, next_ids, targets)
    t_idx = [torch.tensor(t) for t in targets]
    rows, decode = table(logits)
    results = {
        "decode_stats": fast(logits, 2, next_ids, targets),
        "reduce_logits": reduce_logits(logits, 2, next_ids, t_idx),
        "decode_reduce": decode_reduce(rows, decode, top_k=2, next_ids=next_ids, targets=t_idx, chunk=3),
    }
    for path, stats in results.items():
        check(Stats(stats), ref)
        for stat, expected in EXTRAS:
            got = stats[stat.name]
            want = expected(ref, next_ids, targets)
            assert got.shape == want.shape, (path, stat.name)
            torch.testing.assert_close(
                got.double(), want.double(), atol=1e-5, rtol=1e-5, msg=path + stat.name
            )
    fast_stats = results["decode_stats"]
    for stat, _ in EXTRAS:  # the fast path returns every statistic in the registry's dtype
        assert fast_stats[stat.name].dtype == stat.dtype, stat.name


# ---- the functional decode + reduction, and the memory budget ----------------------------------------


def test_decode_reduce_equals_float64_and_decodes_chunk_vectors_at_a_time():
    logits, next_ids, targets = _extra_case()
    rows, decode = table(logits)
    calls: list[int] = []

    def counting(h):
        calls.append(h.shape[0])
        return decode(h)

    ref = reference(logits, 3, next_ids, targets)
    t_idx = [torch.tensor(t) for t in targets]
    out = decode_reduce(rows, counting, top_k=3, next_ids=next_ids, targets=t_idx)
    assert calls == [3] * 4  # the default: one position (all its 3 rows) per product
    check(Stats(out), ref)
    calls.clear()
    out = decode_reduce(rows, counting, top_k=3, next_ids=next_ids, targets=t_idx, chunk=3)
    assert calls == [9, 3]
    check(Stats(out), ref)


def test_chunk_size_is_the_number_of_positions_that_fit_the_budget():
    # fp32 logits and probabilities: 8 bytes per logit, plus 2 for a half-precision product
    assert chunk_size(3, 1000, 3 * 1000 * 8 * 5, False) == 5
    assert chunk_size(3, 1000, 3 * 1000 * 8 * 5 + 23_999, False) == 5
    assert chunk_size(3, 1000, 3 * 1000 * 10 * 4, True) == 4
    assert chunk_size(3, 1000, 3 * 1000 * 10 * 4, False) == 5
    assert chunk_size(2, 500, 1, False) == 1  # at least one position, however small the budget
    assert chunk_size(1, 10, 10**9, False) == 10**9 // 80


def test_decode_stats_decodes_chunk_size_positions_per_product():
    logits, next_ids, targets = _extra_case()  # (4, 3, 300)
    rows, decode = table(logits)
    calls: list[int] = []

    def counting(h, out=None):
        calls.append(h.shape[0])
        return decode(h, out=out)

    budget = 3 * 300 * 8 * 3  # three positions of three rows
    stats = decode_stats(
        rows, counting, vocab_size=300, top_k=2, next_ids=next_ids, targets=targets, budget_bytes=budget
    )
    assert calls == [9, 3]
    check(stats, reference(logits, 2, next_ids, targets))


@needs_cuda("compares the GPU reduction with the CPU one")
def test_on_a_gpu_the_statistics_equal_the_cpu_ones(extras):
    logits, next_ids, targets = _extra_case()
    cpu = fast(logits, 2, next_ids, targets)
    gpu = fast(logits.cuda(), 2, next_ids, targets)
    no_targets = fast(logits.cuda(), 2, next_ids.cuda(), [])
    assert no_targets.target_probs.shape == (4, 3, 0) and no_targets.target_probs.device.type == "cpu"
    for name, value in cpu.items():
        assert gpu[name].device.type == "cpu", name
        torch.testing.assert_close(gpu[name], value, atol=1e-5, rtol=1e-5, equal_nan=True)
