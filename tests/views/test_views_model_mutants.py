"""Tests written from the mutation run of ``src/logitlens/views/model`` (scripts/mutate.py views/model): the
view model's texts, grids, menus, hover records, summaries, curves and comparisons, each checked against
values written out by hand or read straight from the result's tensors.

Most tests use ``make``: a small LensResult built here with random but valid statistics, into which a test
writes the profiles it needs, so that every expected value is known.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from logitlens import LensResult, LogitLensError
from logitlens.core.stats import (
    Statistic,
    drawable_names,
    get_statistic,
    register_statistic,
    unregister_statistic,
)
from logitlens.views import model as vm

VOCAB = [
    "The",
    "␣Eiffel",
    "␣Tower",
    "␣is",
    "␣in",
    "␣Paris",
    "␣Rome",
    "␣extraordinarily",
    ".",
    "↵",
    "␣a",
    "␣b",
    "␣c",
]
TARGET_IDS = {" Paris": [5], " Rome": [6], " Tower": [2]}
LONG = "The Eiffel Tower, which was built for the world fair of 1889, stands in the city of"  # 84 chars


def make(
    inputs=((0, 1, 2, 3, 4), (0, 7, 8)),
    n_rows: int = 4,
    k: int = 3,
    targets=(" Paris", " Rome"),
    seed: int = 0,
    positions: torch.Tensor | None = None,
    meta: dict | None = None,
    **changes,
) -> LensResult:
    """A LensResult over ``VOCAB``: random statistics (padding columns NaN / -1), then ``changes``."""
    g = torch.Generator().manual_seed(seed)
    inputs = [list(s) for s in inputs]
    n, n_v, n_t = len(inputs), len(VOCAB), len(targets)
    if positions is None:
        positions = torch.full((n, max(map(len, inputs))), -1, dtype=torch.long)
        for i, seq in enumerate(inputs):
            positions[i, : len(seq)] = torch.arange(len(seq))
    p = positions.shape[1]
    top_ids = torch.stack([torch.randperm(n_v, generator=g)[:k] for _ in range(n * n_rows * p)])
    top_ids = top_ids.reshape(n, n_rows, p, k)
    raw = torch.rand(n, n_rows, p, k, generator=g).sort(-1, descending=True).values
    top_probs = raw / (raw.sum(-1, keepdim=True) + 0.5)
    entropy = torch.rand(n, n_rows, p, generator=g) * 3 + 0.5
    kl = torch.rand(n, n_rows, p, generator=g) * 5
    kl[:, -1] = 0
    ce = torch.rand(n, n_rows, p, generator=g) * 4 + 0.1
    t_probs = torch.rand(n, n_rows, p, n_t, generator=g)
    t_ranks = torch.randint(1, 5000, (n, n_rows, p, n_t), generator=g)
    for i in range(n):
        pad = (positions[i] < 0).nonzero().flatten()
        top_ids[i, :, pad] = -1
        for x in (top_probs, entropy, kl, ce, t_probs):
            x[i, :, pad] = float("nan")
        t_ranks[i, :, pad] = -1
    tokens = [[VOCAB[t] for t in seq] for seq in inputs]
    res = LensResult(
        top_ids=top_ids,
        top_probs=top_probs,
        entropy=entropy,
        kl_to_final=kl,
        cross_entropy=ce,
        agrees_with_final=top_ids[..., 0] == top_ids[:, -1:, :, 0],
        target_probs=t_probs,
        target_ranks=t_ranks,
        positions=positions,
        row_names=["embed"] + [str(i) for i in range(n_rows - 1)],
        tokens=tokens,
        input_ids=inputs,
        vocab=dict(enumerate(VOCAB)),
        target_names=list(targets),
        target_ids=[TARGET_IDS[t] for t in targets],
        prompts=["".join(tokens_).replace("␣", " ") for tokens_ in tokens],
        meta={"model": "known", "lens": "logit"} if meta is None else meta,
    )
    return res.replace(**changes) if changes else res


@pytest.fixture(scope="module")
def res() -> LensResult:
    return make()


def _grids_equal(a: vm.StatGrid, b: vm.StatGrid) -> None:
    assert (a.stat, a.label, a.zmin, a.zmax, a.colorscale, a.reverse) == (
        b.stat, b.label, b.zmin, b.zmax, b.colorscale, b.reverse
    )  # fmt: skip
    assert (a.tickvals, a.ticktext, a.kind, a.target) == (b.tickvals, b.ticktext, b.kind, b.target)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.values, b.values)


# ---- texts -----------------------------------------------------------------------------------------------
def test_public_constants():
    assert (vm.CELL_CHARS, vm.LABEL_CHARS, vm.HOVER_K) == (8, 9, 10)
    assert (vm.CRITICAL_MARK, vm.ROW_AXIS) == ("◆", "after block (◆ critical layer)")
    assert vm.curves.ANSWER_STATS == {"target_probs": "answer_probs", "target_ranks": "answer_ranks"}


@pytest.mark.parametrize(
    ("text", "width", "out"),
    [("abcd", 4, "abcd"), ("abcde", 4, "abc…"), ("abcdefgh", 5, "abcd…"), ("", 1, ""), ("ab", 1, "…")],
)
def test_clip_cuts_with_an_ellipsis(text, width, out):
    assert vm.clip(text, width) == out


def test_statistic_resolves_old_names_and_refuses_what_is_not_drawn():
    assert vm.statistic("kl") is get_statistic("kl_to_final")
    assert vm.statistic("entropy") is get_statistic("entropy")
    names = ", ".join(drawable_names())
    message = f"statistic 'top_ids' holds token ids and is not drawn; choose one of: {names}"
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.statistic("top_ids")
    no_scale = Statistic("plain_logit", torch.float32, math.nan, "logit", "nats", None, compute=lambda c: c)
    ids = Statistic("second_ids", torch.long, -1, "ids", "ids", "Blues", compute=lambda c: c)
    for stat in (no_scale, ids):
        register_statistic(stat)
        try:
            with pytest.raises(
                LogitLensError, match=rf"^statistic '{stat.name}' holds token ids and is not drawn"
            ):
                vm.statistic(stat.name)
        finally:
            unregister_statistic(stat.name)


@pytest.mark.parametrize(("given", "expected"), [(0, 0), (1, 1), (-1, 1), (-2, 0)])
def test_check_prompt_accepts_indices_from_either_end(res, given, expected):
    assert vm.check_prompt(res, given) == expected


@pytest.mark.parametrize("given", [2, 3, -3, True, False, 1.0, "0", None])
def test_check_prompt_refuses_other_indices(res, given):
    with pytest.raises(
        LogitLensError, match=f"^{re.escape(f'prompt index {given!r} is out of range: this result has 2')}$"
    ):
        vm.check_prompt(res, given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(" Paris", 0), ("␣Paris", 0), (" Rome", 1), ("␣Rome", 1), (0, 0), (1, 1), (-1, 1), (-2, 0)],
)
def test_target_index_by_name_or_index(res, given, expected):
    assert vm.target_index(res, given) == expected


@pytest.mark.parametrize("given", [2, -3, True, 1.0, None])
def test_target_index_refuses_other_indices(res, given):
    message = f"target index {given!r} is out of range: this result tracks 2"
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.target_index(res, given)


def test_target_index_errors_name_the_targets():
    message = "unknown target 'Rome'; this result tracks: ' Paris', ' Rome'"
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.target_index(make(), "Rome")
    message = "this result has no targets; run the lens with targets=[' Paris', ...]"
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.target_index(make(targets=()), 0)


def test_stat_label_names_the_target_made_visible(res):
    assert vm.stat_label(res, get_statistic("target_probs"), 1) == "p(␣Rome)"
    assert vm.stat_label(res, get_statistic("target_ranks"), 0) == "rank of ␣Paris"
    assert vm.stat_label(res, get_statistic("target_probs"), None) == "p(target)"
    assert vm.stat_label(res, get_statistic("entropy"), None) == "entropy (nats)"


def test_prompt_label_text_newlines_and_width():
    r = make(prompts=["line one\nline two", None])
    assert vm.prompt_label(r, 0, None) == "line one↵line two"
    assert vm.prompt_label(r, 0, 6) == "line …"
    assert vm.prompt_label(r, 1, None) == "The␣extraordinarily."  # no text: the tokens joined
    assert vm.prompt_label(r.replace(prompts=[]), 0, None) == "The␣Eiffel␣Tower␣is␣in"
    long = make(prompts=[LONG, "short"])
    assert vm.prompt_label(long, 0) == LONG[:69] + "…"  # default width 70
    assert vm.prompt_label(long, 0, None) == LONG and vm.prompt_label(long, 1) == "short"


def test_column_labels_clip_tokens_and_name_positions():
    r = make(inputs=((0, 7, 8), (0, 1, 2, 3, 4)))
    assert vm.column_labels(r) == ["The·0", "␣extraor…·1", ".·2"]  # prompt 0, 9 characters of a token
    assert vm.column_labels(r, 0, 4) == ["The·0", "␣ex…·1", ".·2"]
    assert vm.column_labels(r, 1) == ["The·0", "␣Eiffel·1", "␣Tower·2", "␣is·3", "␣in·4"]
    sub = make(inputs=((0, 7, 8, 5),), positions=torch.tensor([[1, 3]]))  # decoded positions 1 and 3
    assert vm.column_labels(sub, 0) == ["␣extraor…·1", "␣Paris·3"]


def test_next_labels_read_the_final_row():
    r = make(n_rows=4)
    ids = r.top_ids.clone()
    ids[0, -1, :, 0] = torch.tensor([1, 9, 3, 5, 4])  # final row: right at columns 0 and 2
    ids[0, -2, :, 0] = torch.tensor([9, 2, 9, 4, 9])  # the row before: right at columns 1 and 3
    ids[0, :, :, 1] = torch.tensor([1, 2, 3, 4, 4])  # the second slot: right everywhere
    r = r.replace(top_ids=ids)
    expected = [("␣Eiffel", True), ("␣Tower", False), ("␣is", True), ("␣in", False), ("", False)]
    assert vm.next_labels(r) == expected and vm.next_labels(r, 0) == expected
    ids[1, -1, :, 0] = torch.tensor([7, 7, -1, -1, -1])
    assert vm.next_labels(r.replace(top_ids=ids), 1) == [
        ("␣extraordinarily", True),
        (".", False),
        ("", False),
    ]


@pytest.mark.parametrize(
    ("position", "text"),
    [("mean", "mean over positions"), (-1, "last position"), (-2, "column -2"), (0, "column 0"), (1, "column 1"),
     (3, "column 3")],
)  # fmt: skip
def test_position_text(position, text):
    assert vm.position_text(position) == text


@pytest.mark.parametrize(
    ("stat", "value", "text"),
    [("top_probs", 0.5, "0.500"), ("top_probs", 0.0, "0"), ("top_probs", 0.00029, "2.9e-4"),
     ("final_probs", 1.0, "1.000"), ("target_ranks", 1234.0, "1,234"), ("target_ranks", 1.0, "1"),
     ("target_ranks", 0.0, "0"), ("target_ranks", 2.7, "2"), ("target_ranks", -1.0, "–"),
     ("target_ranks", 1234567, "1,234,567"), ("agrees_with_final", 1.0, "yes"), ("agrees_with_final", 0.0, "no"),
     ("agrees_with_final", True, "yes"), ("entropy", 1.23456, "1.23"), ("entropy", 1234.5, "1.23e+03"),
     ("entropy", 0.0, "0"), ("entropy", 2, "2"), ("entropy", -0.5, "-0.5"), ("entropy", math.nan, "–"),
     ("target_ranks", math.nan, "–"), ("top_probs", math.nan, "–"), ("agrees_with_final", math.nan, "–"),
     ("entropy", None, "–"), ("target_ranks", None, "–"), ("agrees_with_final", None, "–")],
)  # fmt: skip
def test_format_value_by_kind(stat, value, text):
    assert vm.format_value(get_statistic(stat), value) == text


@pytest.mark.parametrize(
    ("p", "digits", "text"),
    [(None, 3, "–"), (math.nan, 3, "–"), (0.0, 3, "0"), (0.01, 3, "0.010"), (0.4123, 3, "0.412"), (1.0, 3, "1.000"),
     (-0.5, 3, "-0.500"), (0.4123, 1, "0.4"), (0.4123, 5, "0.41230"), (0.00999, 3, "1.0e-2"),
     (0.00029, 3, "2.9e-4"), (1.5e-10, 3, "1.5e-10"), (-0.002, 3, "-2.0e-3"), (2.5, 2, "2.50")],
)  # fmt: skip
def test_prob_text(p, digits, text):
    assert vm.prob_text(p, digits) == text


def test_prob_text_default_digits():
    assert vm.prob_text(0.41239) == "0.412" and vm.prob_text(0.0123) == "0.012"


# ---- grids -----------------------------------------------------------------------------------------------
def test_stat_plane_picks_top1_and_target_as_float(res):
    cols = [1, 3]
    top = vm.stat_plane(res, get_statistic("top_probs"), 0, cols, None)
    assert top.dtype == np.float64
    np.testing.assert_array_equal(top, res.top_probs[0][:, cols, 0].numpy().astype(float))
    rank = vm.stat_plane(res, get_statistic("target_ranks"), 1, [0, 2], 1)
    assert rank.dtype == np.float64 and rank.shape == (4, 2)
    np.testing.assert_array_equal(rank, res.target_ranks[1][:, [0, 2], 1].numpy().astype(float))
    agrees = vm.stat_plane(res, get_statistic("agrees_with_final"), 0, [0, 1, 2], None)
    assert agrees.dtype == np.float64
    np.testing.assert_array_equal(agrees, res.agrees_with_final[0][:, :3].numpy().astype(float))


def test_rank_ticks():
    assert vm.rank_ticks(0) == ([0.0], ["1"])
    assert vm.rank_ticks(1) == ([0.0, 1.0], ["1", "10"])
    assert vm.rank_ticks(4) == ([0.0, 1.0, 2.0, 3.0, 4.0], ["1", "10", "100", "1,000", "10,000"])


def test_stat_grid_defaults_to_top_probs_of_prompt_0(res):
    _grids_equal(vm.stat_grid(res), vm.stat_grid(res, 0, "top_probs", 0))
    g = vm.stat_grid(res)
    assert (g.stat, g.label, g.kind, g.target, g.tickvals, g.ticktext) == (
        "top_probs",
        "p(top-1)",
        "prob",
        None,
        None,
        None,
    )
    np.testing.assert_array_equal(g.values, res.top_probs[0, :, :, 0].numpy().astype(float))
    per_target = vm.stat_grid(res, 1, "target_probs")
    assert (per_target.target, per_target.label) == (0, "p(␣Paris)")
    np.testing.assert_array_equal(per_target.values, res.target_probs[1, :, :3, 0].numpy().astype(float))
    named = vm.stat_grid(res, -1, "prob", "␣Rome")
    assert (named.target, named.label, named.stat, named.kind) == (1, "p(␣Rome)", "target_probs", "prob")
    assert (named.zmin, named.zmax, named.colorscale, named.reverse) == (0.0, 1.0, "Blues", False)
    np.testing.assert_array_equal(named.z, named.values)


def _with_ranks(values) -> LensResult:
    """One prompt of 5 tokens, 4 rows: target 0's ranks at its 5 columns set to ``values`` (R, C)."""
    r = make(inputs=((0, 1, 2, 3, 4),))
    ranks = r.target_ranks.clone()
    ranks[0, :, :, 0] = torch.as_tensor(values)
    return r.replace(target_ranks=ranks)


@pytest.mark.parametrize(
    ("top_rank", "zmax"),
    [(5, 1), (10, 1), (11, 2), (100, 2), (101, 3), (1000, 3), (1001, 4), (-1, 1)],
)
def test_rank_grid_colour_range_is_the_next_power_of_ten(top_rank, zmax):
    values = torch.ones(4, 5, dtype=torch.long)
    values[1, 2] = 3
    values[2, 3] = top_rank
    if top_rank < 0:
        values.fill_(-1)  # no valid rank at all: the range of 1..10
    g = vm.stat_grid(_with_ranks(values), 0, "target_ranks", 0)
    assert (g.zmin, g.zmax, g.kind, g.target, g.label) == (0.0, float(zmax), "rank", 0, "rank of ␣Paris")
    assert g.tickvals == [float(e) for e in range(zmax + 1)]
    assert g.ticktext == [f"{10**e:,}" for e in range(zmax + 1)]
    assert (g.colorscale, g.reverse) == ("Purples", True)
    np.testing.assert_array_equal(g.values, values.numpy().astype(float))
    np.testing.assert_array_equal(g.z, np.log10(np.maximum(values.numpy().astype(float), 1.0)))


def test_rank_grid_of_rank_one_is_zero():
    g = vm.stat_grid(_with_ranks(torch.ones(4, 5, dtype=torch.long)), 0, "rank")
    np.testing.assert_array_equal(g.z, np.zeros((4, 5)))
    assert (g.zmax, g.tickvals, g.ticktext) == (1.0, [0.0, 1.0], ["1", "10"])


def _with(stat: str, values, inputs=((0, 1, 2, 3, 4),), n_rows: int = 4) -> LensResult:
    r = make(inputs=inputs, n_rows=n_rows)
    t = r.stats[stat].clone()
    t[0] = torch.as_tensor(values, dtype=t.dtype)
    return r.replace(**{stat: t})


def test_nats_grid_range_from_zero_to_the_largest_value():
    values = torch.full((4, 5), 2.0)
    values[2, 1] = 3.5
    g = vm.stat_grid(_with("entropy", values), 0, "entropy")
    assert (g.zmin, g.zmax, g.kind, g.colorscale, g.reverse) == (0.0, 3.5, "nats", "Greens", True)
    assert (g.tickvals, g.ticktext, g.target, g.label) == (None, None, None, "entropy (nats)")
    np.testing.assert_array_equal(g.z, values.numpy().astype(float))
    values[0, 0] = 0.5  # the smallest value below 1: the range still starts at 0
    g = vm.stat_grid(_with("entropy", values), 0, "entropy")
    assert (g.zmin, g.zmax) == (0.0, 3.5)
    values[3, 4] = -0.75  # a negative value: the range starts there
    values[3, 3] = math.nan
    g = vm.stat_grid(_with("entropy", values), 0, "entropy")
    assert (g.zmin, g.zmax) == (-0.75, 3.5)


def test_nats_grid_without_a_positive_value():
    g = vm.stat_grid(_with("entropy", torch.full((4, 5), math.nan)), 0, "entropy")
    assert (g.zmin, g.zmax) == (0.0, 1.0)
    g = vm.stat_grid(_with("cross_entropy", torch.zeros(4, 5)), 0, "ce")
    assert (g.zmin, g.zmax, g.stat, g.colorscale) == (0.0, 1.0, "cross_entropy", "Reds")
    g = vm.stat_grid(_with("entropy", torch.full((4, 5), -2.0)), 0, "entropy")
    assert (g.zmin, g.zmax) == (-2.0, 1.0)
    g = vm.stat_grid(_with("kl_to_final", torch.full((4, 5), math.nan)), 0, "kl")
    assert (g.zmin, g.zmax) == (0.0, 1.0)
    g = vm.stat_grid(_with("kl_to_final", torch.zeros(4, 5)), 0, "kl")
    assert (g.zmin, g.zmax) == (0.0, 1.0)


def test_nats_grid_whose_largest_value_is_zero():
    """No positive value: the range ends at 1, not at the largest value 0."""
    values = torch.zeros(4, 5)
    values[1, 1] = -2.0
    g = vm.stat_grid(_with("entropy", values), 0, "entropy")
    assert (g.zmin, g.zmax) == (-2.0, 1.0)


def test_kl_grid_saturates_at_the_95_percent_quantile():
    values = torch.arange(20, dtype=torch.float32)[
        torch.randperm(20, generator=torch.Generator().manual_seed(1))
    ]
    g = vm.stat_grid(_with("kl_to_final", values.reshape(4, 5)), 0, "kl_to_final")
    assert (g.zmin, g.zmax, g.colorscale, g.label) == (
        0.0,
        pytest.approx(18.05),
        "Oranges",
        "KL to final (nats)",
    )
    np.testing.assert_array_equal(g.z, values.reshape(4, 5).numpy().astype(float))
    entropy = vm.stat_grid(_with("entropy", values.reshape(4, 5)), 0, "entropy")  # no quantile for others
    assert entropy.zmax == 19.0


def test_kl_grid_quantile_below_one():
    values = torch.arange(20, dtype=torch.float32) / 20  # 0 .. 0.95: the 95% quantile 0.9025
    g = vm.stat_grid(_with("kl_to_final", values.reshape(4, 5)), 0, "kl")
    assert (g.zmin, g.zmax) == (0.0, pytest.approx(0.9025))


def test_kl_grid_with_a_zero_quantile_uses_the_largest_value():
    values = torch.zeros(5, 20)  # 100 cells, one of them 5: the 95% quantile is 0
    values[1, 7] = 5.0
    g = vm.stat_grid(_with("kl_to_final", values, inputs=((0,) * 20,), n_rows=5), 0, "kl")
    assert (g.zmin, g.zmax) == (0.0, 5.0)


def test_a_statistic_with_an_empty_scale_is_drawn_in_blues():
    """A registered statistic with scale="" (not None, so drawn) gets the default colour scale."""
    register_statistic(Statistic("flat", torch.float32, math.nan, "flat", "nats", "", compute=lambda c: c))
    try:
        r = make()
        values = torch.rand(r.entropy.shape, generator=torch.Generator().manual_seed(4))
        g = vm.stat_grid(r.replace(flat=values), 0, "flat")
        assert (g.stat, g.colorscale, g.reverse, g.label) == ("flat", "Blues", False, "flat")
        np.testing.assert_array_equal(g.values, values[0].numpy().astype(float))
    finally:
        unregister_statistic("flat")


def test_bool_kind_keeps_the_range_0_to_1():
    """A "bool" statistic is coloured on 0..1 whatever its values (here a share), never 0..its largest value."""
    register_statistic(
        Statistic(
            "half_agree", torch.float32, math.nan, "agrees (share)", "bool", "Greys", compute=lambda c: c
        )
    )
    try:
        r = make()
        values = torch.full(r.entropy.shape, 0.5)
        values[:, :, 0] = 0.0
        g = vm.stat_grid(r.replace(half_agree=values), 0, "half_agree")
        assert (g.zmin, g.zmax, g.kind, g.tickvals) == (0.0, 1.0, "bool", None)
        np.testing.assert_array_equal(g.z, values[0].numpy().astype(float))
    finally:
        unregister_statistic("half_agree")


def test_stat_grid_defaults_of_the_dataclass():
    z = np.zeros((1, 1))
    g = vm.StatGrid("entropy", "entropy (nats)", z, z, 0.0, 1.0, "Greens", True)
    assert (g.tickvals, g.ticktext, g.kind, g.target) == (None, None, "nats", None)


# ---- the statistic menu ---------------------------------------------------------------------------------
PLAIN_MENU = [
    vm.MenuEntry("top_probs", None, "p(top-1)"),
    vm.MenuEntry("final_probs", None, "p(final top-1)"),
    vm.MenuEntry("entropy", None, "entropy (nats)"),
    vm.MenuEntry("kl_to_final", None, "KL to final (nats)"),
    vm.MenuEntry("cross_entropy", None, "cross-entropy (nats)"),
    vm.MenuEntry("agrees_with_final", None, "top-1 = final top-1"),
]


def test_menu_entries_in_order_with_labels(res):
    per_target = [
        vm.MenuEntry("target_probs", 0, "p(␣Paris)"),
        vm.MenuEntry("target_ranks", 0, "rank of ␣Paris"),
        vm.MenuEntry("target_probs", 1, "p(␣Rome)"),
        vm.MenuEntry("target_ranks", 1, "rank of ␣Rome"),
    ]
    assert vm.menu_entries(res) == PLAIN_MENU + per_target
    assert vm.menu_entries(res, targets=True) == PLAIN_MENU + per_target
    assert vm.menu_entries(res, targets=False) == PLAIN_MENU
    assert vm.menu_entries(make(targets=())) == PLAIN_MENU


def test_menu_leaves_out_statistics_the_result_lacks():
    before = make()
    register_statistic(
        Statistic("max_logprob", torch.float32, math.nan, "max log p", "nats", "Greens", compute=lambda c: c)
    )
    try:
        after = make()
        assert vm.menu_entries(before, targets=False) == PLAIN_MENU
        assert vm.menu_entries(after, targets=False) == [
            *PLAIN_MENU,
            vm.MenuEntry("max_logprob", None, "max log p"),
        ]
        assert "max_logprob" not in [v.stat for v in vm.hover_records(before)[0][0].values]
        assert vm.hover_records(after)[0][0].values[-1].stat == "target_ranks"  # per target ones last
    finally:
        unregister_statistic("max_logprob")


# ---- hover records --------------------------------------------------------------------------------------
NAN = math.nan


@pytest.fixture(scope="module")
def hov() -> LensResult:
    """One prompt "The Paris." (ids 0 5 8), rows embed, 0, 1, every statistic written out."""
    top_ids = torch.tensor(
        [[[[0, 5, 6], [8, 0, 1], [2, 3, 4]],  # embed
          [[5, 0, 6], [6, 8, 1], [9, -1, -1]],  # 0: column 2 lacks the final top-1 (3) and has 1 token
          [[5, 6, 0], [8, 6, 1], [3, 2, 4]]]]  # 1 (final): ␣Paris, ., ␣is
    )  # fmt: skip
    top_probs = torch.tensor([0.5, 0.25, 0.125]).expand(1, 3, 3, 3).clone()
    top_probs[0, 1, 2] = torch.tensor([0.75, NAN, NAN])
    final = torch.tensor([[[0.25, 0.5, 0.25], [0.5, 0.25, 0.001], [0.5, 0.5, 0.5]]])
    entropy = torch.tensor([[[3.0, 2.75, 2.5], [1.5, 1.75, 2.5], [0.5, 0.75, 1.0]]])
    kl = torch.tensor([[[4.0, 3.0, 2.0], [1.0, 1.5, 1.25], [0.0, 0.0, 0.0]]])
    ce = torch.tensor([[[5.0, 6.0, NAN], [2.0, 3.0, NAN], [1.0, 0.5, NAN]]])
    t_probs = torch.tensor([0.25, 0.5]).expand(1, 3, 3, 2).clone()
    t_ranks = torch.tensor([1234, 1]).expand(1, 3, 3, 2).clone()
    return make(
        inputs=((0, 5, 8),), n_rows=3, top_ids=top_ids, top_probs=top_probs, final_probs=final, entropy=entropy,
        kl_to_final=kl, cross_entropy=ce, agrees_with_final=top_ids[..., 0] == top_ids[:, -1:, :, 0],
        target_probs=t_probs, target_ranks=t_ranks,
    )  # fmt: skip


def _values(cell: vm.Cell) -> list[tuple]:
    return [
        (v.stat, v.target, v.label, "nan" if v.value != v.value else round(v.value, 6), v.text)
        for v in cell.values
    ]


def test_hover_cell_without_the_final_top1(hov):
    cells = vm.hover_records(hov)
    assert len(cells) == 3 and [len(row) for row in cells] == [3, 3, 3]
    cell = cells[1][2]
    assert (cell.row, cell.column, cell.position, cell.token, cell.next_token) == ("0", 2, 2, ".", None)
    assert (cell.final_top1, cell.final_in_topk, cell.top) == ("␣is", False, [("↵", 0.75)])
    assert _values(cell) == [
        ("final_probs", None, "p(final top-1 ␣is)", 0.001, "1.0e-3 (not in top-3)"),
        ("entropy", None, "entropy (nats)", 2.5, "2.5"),
        ("kl_to_final", None, "KL to final (nats)", 1.25, "1.25"),
        ("cross_entropy", None, "cross-entropy (nats)", "nan", "–"),
        ("agrees_with_final", None, "top-1 = final top-1", 0.0, "no"),
        ("target_probs", 0, "p(␣Paris)", 0.25, "0.250"),
        ("target_ranks", 0, "rank of ␣Paris", 1234.0, "1,234"),
        ("target_probs", 1, "p(␣Rome)", 0.5, "0.500"),
        ("target_ranks", 1, "rank of ␣Rome", 1.0, "1"),
    ]


def test_hover_cell_with_the_final_top1(hov):
    cell = vm.hover_records(hov, 0)[0][0]
    assert (cell.row, cell.column, cell.position, cell.token, cell.next_token) == (
        "embed",
        0,
        0,
        "The",
        "␣Paris",
    )
    assert (cell.final_top1, cell.final_in_topk) == ("␣Paris", True)
    assert cell.top == [("The", 0.5), ("␣Paris", 0.25), ("␣Rome", 0.125)]  # token id 0 is listed
    assert _values(cell)[:5] == [
        ("final_probs", None, "p(final top-1 ␣Paris)", 0.25, "0.250"),
        ("entropy", None, "entropy (nats)", 3.0, "3"),
        ("kl_to_final", None, "KL to final (nats)", 4.0, "4"),
        ("cross_entropy", None, "cross-entropy (nats)", 5.0, "5"),
        ("agrees_with_final", None, "top-1 = final top-1", 0.0, "no"),
    ]
    middle = vm.hover_records(hov, 0)[2][1]
    assert (middle.row, middle.next_token, middle.final_top1, middle.final_in_topk) == ("1", ".", ".", True)
    assert _values(middle)[4] == ("agrees_with_final", None, "top-1 = final top-1", 1.0, "yes")
    assert [c.final_top1 for c in vm.hover_records(hov)[0]] == ["␣Paris", ".", "␣is"]
    assert [c.final_in_topk for c in vm.hover_records(hov)[1]] == [True, True, False]


def test_hover_value_lookup(hov):
    cell = vm.hover_records(hov)[1][2]
    assert cell.value("kl") == 1.25 and cell.value("entropy") == 2.5
    assert cell.value("prob", 1) == 0.5 and cell.value("target_ranks", 0) == 1234.0
    with pytest.raises(KeyError) as err:
        cell.value("target_probs")
    assert err.value.args == (("target_probs", None),)
    with pytest.raises(KeyError) as err:
        cell.value("rank", 2)
    assert err.value.args == (("rank", 2),)


def test_hover_k_and_columns(hov):
    assert [c.top for c in vm.hover_records(hov, 0, k=1)[2]] == [
        [("␣Paris", 0.5)],
        [(".", 0.5)],
        [("␣is", 0.5)],
    ]
    assert [len(c.top) for c in vm.hover_records(hov, 0, k=2)[0]] == [2, 2, 2]
    assert [len(c.top) for c in vm.hover_records(hov, 0, k=50)[0]] == [3, 3, 3]
    only = vm.hover_records(hov, 0, columns=[2])
    assert [[(c.row, c.column, c.final_top1) for c in row] for row in only] == [
        [("embed", 2, "␣is")],
        [("0", 2, "␣is")],
        [("1", 2, "␣is")],
    ]
    assert _values(only[1][0]) == _values(vm.hover_records(hov)[1][2])
    wide = make(k=12)  # keeps 12 tokens: a hover box lists HOVER_K of them
    cells = vm.hover_records(wide, 1)
    assert {len(c.top) for row in cells for c in row} == {10}
    assert cells[0][0].top == [
        (wide.token(i), p)
        for i, p in zip(
            wide.top_ids[1, 0, 0, :10].tolist(), wide.top_probs[1, 0, 0, :10].tolist(), strict=True
        )
    ]
    assert [c.position for c in cells[0]] == [0, 1, 2]


def test_hover_positions_are_the_decoded_positions():
    r = make(inputs=((0, 7, 8, 5),), positions=torch.tensor([[1, 3]]))
    row = vm.hover_records(r, 0)[0]
    assert [(c.column, c.position, c.token, c.next_token) for c in row] == [
        (0, 1, "␣extraordinarily", "."),
        (1, 3, "␣Paris", None),
    ]


def test_hover_refuses_top_probabilities_shorter_than_the_top_ids():
    """An inconsistent result (fewer top-k probabilities than ids) fails loudly instead of cutting the list."""
    r = make()
    cut = r.replace(top_probs=r.top_probs[..., :2].contiguous())  # 3 ids per cell, 2 probabilities
    with pytest.raises(ValueError, match="zip"):
        vm.hover_records(cut, 0)


# ---- the heatmap model ----------------------------------------------------------------------------------
def test_heatmap_model_gathers_every_part(res):
    for prompt in (0, 1):
        m = vm.heatmap_model(res, prompt, "target_ranks", " Rome")
        _grids_equal(m.grid, vm.stat_grid(res, prompt, "target_ranks", 1))
        cols = res.columns(prompt)
        assert (m.prompt, m.text, m.model, m.lens, m.lens_label) == (
            prompt,
            res.prompts[prompt],
            "known",
            "logit",
            "",
        )
        assert m.row_names == ["embed", "0", "1", "2"] and m.depths == res.depths
        assert m.columns == cols and m.positions == cols and m.tokens == res.column_tokens(prompt)
        assert m.column_labels == vm.column_labels(res, prompt)
        assert m.cells == res.top_tokens(prompt)
        nexts = vm.next_labels(res, prompt)
        assert m.next_tokens == [t for t, _ in nexts] and m.next_hits == [h for _, h in nexts]
        assert m.summary == vm.prompt_summary(res, prompt)
        assert m.menu == vm.menu_entries(res)
        assert m.row_labels == vm.row_labels(res, m.summary.critical_rows)
        assert [[(c.row, c.column, c.top) for c in row] for row in m.hover] == [
            [(c.row, c.column, c.top) for c in row] for row in vm.hover_records(res, prompt)
        ]
    assert vm.heatmap_model(res, -1).prompt == 1


def test_heatmap_model_defaults(res):
    m = vm.heatmap_model(res)
    _grids_equal(m.grid, vm.stat_grid(res, 0, "top_probs", 0))
    assert m.prompt == 0 and m.hover is not None and len(m.hover) == res.n_rows
    assert vm.heatmap_model(res, 0, "entropy", hover=False).hover is None
    assert vm.heatmap_model(res, 0, "target_probs").grid.target == 0


def test_heatmap_model_meta_and_positions():
    r = make(inputs=((0, 7, 8, 5),), positions=torch.tensor([[1, 3]]), meta={"model": 7, "lens": "tuned"})
    m = vm.heatmap_model(r)
    assert (m.model, m.lens, m.lens_label) == ("7", "tuned", "tuned lens")
    assert (m.columns, m.positions, m.tokens) == ([0, 1], [1, 3], ["␣extraordinarily", "␣Paris"])
    bare = vm.heatmap_model(make(meta={}))
    assert (bare.model, bare.lens, bare.lens_label) == (None, "logit", "")
    assert vm.heatmap_model(make(meta={"model": ""})).model is None


def test_heatmap_model_text_is_the_whole_prompt():
    m = vm.heatmap_model(make(prompts=[LONG, "a\nb"]), 0)
    assert m.text == LONG
    assert vm.heatmap_model(make(prompts=[LONG, "a\nb"]), 1).text == "a↵b"


# ---- summaries --------------------------------------------------------------------------------------------
def _profiled(**changes) -> LensResult:
    """One prompt of 5 tokens, rows embed, 0..3, with known profiles at its last column (4)."""
    r = make(inputs=((0, 1, 2, 3, 4),), n_rows=5)
    ids, probs = r.top_ids.clone(), r.top_probs.clone()
    ids[0, -1, 4] = torch.tensor([5, 6, 7])
    probs[0, -1, 4] = torch.tensor([0.5, 0.25, 0.125])
    kl, final, agrees, t_probs, ranks = (
        r.kl_to_final.clone(), r.final_probs.clone(), r.agrees_with_final.clone(), r.target_probs.clone(),
        r.target_ranks.clone(),
    )  # fmt: skip
    kl[0, :, 4] = torch.tensor([6.0, 5.5, 1.5, 0.5, 0.0])  # falls: into block 1 4.0, 2 1.0, 3 0.5
    final[0, :, 4] = torch.tensor([0.125, 0.0625, 0.5, 0.25, 1.0])  # rises: block 1 log 8, block 3 log 4
    agrees[0, :, 4] = torch.tensor([True, False, True, True, True])  # stable from row 2 ("1")
    t_probs[0, -1, 4] = torch.tensor([0.75, 0.125])
    ranks[0, :, 4, 0] = torch.tensor([9, 1, 3, 1, 1])  # top-1 from row 3 ("2")
    ranks[0, :, 4, 1] = torch.tensor([1, 1, 1, 1, 2])  # not top-1 at the end
    base = dict(
        top_ids=ids, top_probs=probs, kl_to_final=kl, final_probs=final, agrees_with_final=agrees,
        target_probs=t_probs, target_ranks=ranks,
    )  # fmt: skip
    return r.replace(**{**base, **changes})


def test_prompt_summary_on_known_profiles():
    r = _profiled()
    s = vm.prompt_summary(r)
    assert s == vm.prompt_summary(r, 0, -1) == vm.prompt_summary(r, -1, 4)
    expected = vm.PromptSummary(
        prompt=0, column=4, position=4, token="␣in", final_top1="␣Paris", final_prob=0.5, first_stable=2,
        first_stable_row="1", first_stable_depth=0.5, critical=2, critical_row="1", kl_drop=4.0,
        targets=[vm.TargetEnd("␣Paris", 0.75, 1, "2", "after block 2"), vm.TargetEnd("␣Rome", 0.125, 2, None, None)],
        first_stable_label="after block 1",
        rises=(vm.Change(2, "1", "after block 1", pytest.approx(math.log(8))),
               vm.Change(4, "3", "after block 3", pytest.approx(math.log(4)))),
        falls=(vm.Change(2, "1", "after block 1", 4.0), vm.Change(3, "2", "after block 2", 1.0),
               vm.Change(4, "3", "after block 3", 0.5)),
        answer=None, at_last_token=True,
    )  # fmt: skip
    assert s == expected
    assert s.critical_rows == [2, 4, 3]
    assert vm.row_labels(r, s.critical_rows) == ["embeddings", "0", "1 ◆", "2 ◆", "3 ◆"]


def test_prompt_summary_at_another_column():
    r = _profiled()
    s = vm.prompt_summary(r, 0, 1)
    assert (s.column, s.position, s.token, s.at_last_token) == (1, 1, "␣Eiffel", False)
    assert s.final_top1 == r.token(r.top_ids[0, -1, 1, 0]) and s.final_prob == float(r.top_probs[0, -1, 1, 0])
    assert [t.prob for t in s.targets] == [float(r.target_probs[0, -1, 1, t]) for t in range(2)]
    assert [t.rank for t in s.targets] == [int(r.target_ranks[0, -1, 1, t]) for t in range(2)]


def test_prompt_summary_changes_at_the_given_column():
    r = _profiled()
    kl, final = r.kl_to_final.clone(), r.final_probs.clone()
    kl[0, :, 1] = torch.tensor([8.0, 7.0, 6.5, 2.5, 0.0])  # falls at column 1: block 2 4.0, 3 2.5, 1 0.5
    final[0, :, 1] = torch.tensor([0.5, 0.5, 0.25, 0.5, 0.5])  # rises at column 1: block 2 log 2
    s = vm.prompt_summary(r.replace(kl_to_final=kl, final_probs=final), 0, 1)
    assert s.falls == (
        vm.Change(3, "2", "after block 2", 4.0), vm.Change(4, "3", "after block 3", 2.5),
        vm.Change(2, "1", "after block 1", 0.5),
    )  # fmt: skip
    assert s.rises == (vm.Change(3, "2", "after block 2", pytest.approx(math.log(2))),)
    assert (s.critical, s.critical_row, s.kl_drop) == (3, "2", 4.0)


def test_prompt_summary_never_stable_and_without_falls():
    agrees = _profiled().agrees_with_final.clone()
    agrees[0, :, 4] = False  # not even the last row: counted from the last row
    kl = _profiled().kl_to_final.clone()
    kl[0, :, 4] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # rises only: the largest step of all
    s = vm.prompt_summary(_profiled(agrees_with_final=agrees, kl_to_final=kl))
    assert (s.first_stable, s.first_stable_row, s.first_stable_label, s.first_stable_depth) == (
        4,
        "3",
        "after block 3",
        1.0,
    )
    assert (s.critical, s.critical_row, s.kl_drop, s.falls) == (1, "0", -1.0, ())
    only_last = agrees.clone()
    only_last[0, -1, 4] = True
    s = vm.prompt_summary(_profiled(agrees_with_final=only_last))
    assert (s.first_stable, s.first_stable_row) == (4, "3")


def test_prompt_summary_when_the_last_token_is_not_decoded():
    r = make(inputs=((0, 7, 8, 5, 6),), positions=torch.tensor([[0, 2, 3]]))
    s = vm.prompt_summary(r)
    assert (s.column, s.position, s.token, s.at_last_token) == (2, 3, "␣Paris", False)
    last = make(inputs=((0, 7, 8, 5, 6),), positions=torch.tensor([[0, 2, 4]]))
    assert (vm.prompt_summary(last).position, vm.prompt_summary(last).at_last_token) == (4, True)


def test_prompt_summary_answers():
    r = _profiled()
    answer_probs = torch.tensor([[0.0625, 0.125, 0.25, 0.375, 0.5]])
    logprobs = torch.tensor([[-9.0, -7.0, -5.0, -3.0, -1.5]])
    ranks = torch.tensor([[7, 3, 1, 2, 1]])
    r = r.replace(
        answers=[" Paris."],
        answer_ids=[[5, 8]],
        answer_logprobs=logprobs,
        answer_probs=answer_probs,
        answer_ranks=ranks,
    )
    assert vm.prompt_summary(r).answer == vm.AnswerEnd("␣Paris.", 2, -1.5, 0.5, 1, "after block 1")
    never = r.replace(answer_ranks=torch.tensor([[7, 3, 2, 2, 4]]))
    assert vm.prompt_summary(never).answer == vm.AnswerEnd("␣Paris.", 2, -1.5, 0.5, 4, None)
    empty = r.replace(answers=[""], answer_ids=[[]])
    assert vm.prompt_summary(empty).answer == vm.AnswerEnd("", 0, -1.5, 0.5, 1, "after block 1")
    two = make(answers=[None, " Rome"], answer_ids=[[], [6]])
    assert vm.prompt_summary(two, 0).answer is None
    assert vm.prompt_summary(two, 1).answer.text == "␣Rome"
    assert vm.prompt_summary(make()).answer is None


def test_summary_dataclass_defaults():
    s = vm.PromptSummary(0, 4, 4, "␣in", "␣Paris", 0.5, 2, "1", 0.5, 2, "1", 4.0, [])
    assert (s.first_stable_label, s.rises, s.falls, s.answer, s.at_last_token) == ("", (), (), None, True)
    assert s.critical_rows == []
    assert vm.TargetEnd("␣Paris", 0.5, 1, "2").first_label is None
    both = vm.PromptSummary(
        0, 4, 4, "␣in", "␣Paris", 0.5, 2, "1", 0.5, 2, "1", 4.0, [],
        rises=(vm.Change(3, "2", "", 1.0), vm.Change(1, "0", "", 0.5)),
        falls=(vm.Change(1, "0", "", 2.0), vm.Change(4, "3", "", 1.0), vm.Change(3, "2", "", 0.5)),
    )  # fmt: skip
    assert both.critical_rows == [3, 1, 4]


def test_row_labels():
    r = make().replace(row_names=["embed", "0.attn", "0", "1"])
    assert vm.row_labels(r) == ["embeddings", "0.attn", "0", "1"]
    assert vm.row_labels(r, [1, 3]) == ["embeddings", "0.attn ◆", "0", "1 ◆"]
    assert vm.row_labels(r, (0,)) == ["embeddings ◆", "0.attn", "0", "1"]


# ---- curves -----------------------------------------------------------------------------------------------
def test_curve_values_at_a_position(res):
    np.testing.assert_array_equal(
        vm.curve(res, 0, "target_probs"), res.target_probs[0, :, 4, 0].numpy().astype(float)
    )
    np.testing.assert_array_equal(
        vm.curve(res, 1, "rank", 1, 1), res.target_ranks[1, :, 1, 1].numpy().astype(float)
    )
    np.testing.assert_array_equal(
        vm.curve(res, 1, "rank", " Paris", -3), res.target_ranks[1, :, 0, 0].numpy().astype(float)
    )
    np.testing.assert_array_equal(
        vm.curve(res, 0, "entropy", 0, -2), res.entropy[0, :, 3].numpy().astype(float)
    )
    np.testing.assert_array_equal(vm.curve(res, -1, "kl"), res.kl_to_final[1, :, 2].numpy().astype(float))
    y = vm.curve(res, 1, "top_probs", position=0)
    assert y.shape == (4,) and y.dtype == np.float64
    np.testing.assert_array_equal(y, res.top_probs[1, :, 0, 0].numpy().astype(float))


def test_curve_mean_over_positions_skips_nan():
    values = torch.tensor([[1.0, 3.0], [2.0, math.nan], [math.nan, math.nan], [0.5, 1.5]])
    r = _with("entropy", values, inputs=((0, 1),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy: the all-NaN row is a mean of nothing
        y = vm.curve(r, 0, "entropy", position="mean")
    np.testing.assert_array_equal(y, [2.0, 2.0, math.nan, 1.0])
    r = _with("entropy", values[[0, 1, 3, 3]], inputs=((0, 1),))
    np.testing.assert_array_equal(vm.curve(r, 0, "entropy", position="mean"), [2.0, 2.0, 1.0, 1.0])
    one = _with("entropy", values[:, :1], inputs=((0,),))
    np.testing.assert_array_equal(vm.curve(one, 0, "entropy", position="mean"), [1.0, 2.0, math.nan, 0.5])


def test_curve_of_one_all_nan_column_gives_no_warning(recwarn):
    """One column is read as it is: no numpy "Mean of empty slice" warning for a NaN column."""
    r = _with("cross_entropy", torch.full((4, 1), math.nan), inputs=((0,),))
    assert np.isnan(vm.curve(r, 0, "cross_entropy")).all()
    assert np.isnan(vm.curve(r, 0, "cross_entropy", position="mean")).all()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_curve_mean_of_infinities_gives_no_warning(recwarn):
    """The mean over positions is quiet about inf - inf (NaN) and keeps an infinite mean."""
    values = torch.tensor([[math.inf, -math.inf], [1.0, 2.0], [math.inf, 1.0], [0.5, 1.5]])
    y = vm.curve(_with("entropy", values, inputs=((0, 1),)), 0, "entropy", position="mean")
    np.testing.assert_array_equal(y, [math.nan, 1.5, math.inf, 1.0])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize(
    ("position", "prompt", "n"), [(3, 1, 3), (-4, 1, 3), (5, 0, 5), (True, 0, 5), ("last", 1, 3), (1.0, 0, 5)]
)
def test_curve_position_out_of_range(res, position, prompt, n):
    message = (
        f"position {position!r} is out of range for prompt {prompt + 1}, which has {n} decoded columns; give an "
        "index such as -1 (the last) or 'mean' (the average over positions)"
    )
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.curve(res, prompt, "entropy", position=position)


def test_curve_of_a_target_needs_one_position(res):
    message = "a target's probability and rank need one position, not 'mean'"
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.curve(res, 0, "target_ranks", 0, "mean")


def test_trajectory_model_defaults(res):
    m = vm.trajectory_model(res)
    assert (m.title, m.where, m.row_names) == (
        "target probability and rank across rows (last position)",
        "last position",
        res.row_names,
    )
    assert [(p.stat, p.kind, p.label) for p in m.panels] == [
        ("target_probs", "prob", "probability"),
        ("target_ranks", "rank", "rank (log)"),
    ]
    rows = [(c.name, c.prompt, c.target) for c in m.panels[0].curves]
    assert rows == [
        ("␣Paris · The Eiffel Tower is in", 0, 0), ("␣Rome · The Eiffel Tower is in", 0, 1),
        ("␣Paris · The extraordinarily.", 1, 0), ("␣Rome · The extraordinarily.", 1, 1),
    ]  # fmt: skip
    assert [(c.name, c.prompt, c.target) for c in m.panels[1].curves] == rows
    for panel, stat in zip(m.panels, ("target_probs", "target_ranks"), strict=True):
        for c in panel.curves:
            last = res.columns(c.prompt)[-1]
            np.testing.assert_array_equal(
                c.y, res.stats[stat][c.prompt, :, last, c.target].numpy().astype(float)
            )
            assert (c.row_names, c.depths) == (res.row_names, res.depths)


def test_trajectory_model_of_a_statistic_without_targets():
    r = make(prompts=[LONG, "short"])
    m = vm.trajectory_model(r, stat="entropy", position=1)
    assert (m.title, m.where) == ("entropy (nats) across rows (column 1)", "column 1")
    assert [(p.stat, p.kind, p.label) for p in m.panels] == [("entropy", "nats", "entropy (nats)")]
    assert [(c.name, c.prompt, c.target) for c in m.panels[0].curves] == [
        (LONG[:39] + "…", 0, None),
        ("short", 1, None),
    ]
    for c in m.panels[0].curves:
        np.testing.assert_array_equal(c.y, r.entropy[c.prompt, :, 1].numpy().astype(float))
        assert (c.row_names, c.depths) == (r.row_names, r.depths)
    one = vm.trajectory_model(r, prompts=[-1], stat="kl", position="mean")
    assert (one.title, one.where) == (
        "KL to final (nats) across rows (mean over positions)",
        "mean over positions",
    )
    assert [c.prompt for c in one.panels[0].curves] == [1]
    np.testing.assert_allclose(
        one.panels[0].curves[0].y, r.kl_to_final[1, :, :3].double().mean(-1).numpy(), rtol=1e-6
    )
    assert vm.trajectory_model(make(targets=()), stat="entropy").panels[0].curves[0].target is None


def test_trajectory_model_row_names_without_targets():
    r = make().replace(row_names=["embed", "0.attn", "0", "1"])
    for stat in ("entropy", "target_probs"):
        assert vm.trajectory_model(r, stat=stat).row_names == ["embed", "0.attn", "0", "1"]


def test_trajectory_model_of_ranks_and_chosen_targets():
    r = make(prompts=[LONG, "short"])
    m = vm.trajectory_model(r, targets=[" Rome"], prompts=[0], stat="rank", position=2)
    assert m.title == "rank of target across rows (column 2)"
    assert [(p.stat, p.kind, p.label) for p in m.panels] == [("target_ranks", "rank", "rank (log)")]
    (c,) = m.panels[0].curves
    assert (c.name, c.prompt, c.target) == ("␣Rome", 0, 1)  # one prompt: no prompt in the name
    np.testing.assert_array_equal(c.y, r.target_ranks[0, :, 2, 1].numpy().astype(float))
    two = vm.trajectory_model(r, targets=[1], stat="target_probs")
    assert [c.name for c in two.panels[0].curves] == ["␣Rome · " + LONG[:29] + "…", "␣Rome · short"]


def test_trajectory_model_without_targets():
    message = (
        "this result has no targets to follow; run the lens with targets=[' Paris', ...] (or answers, drawn with "
        "answers=True) or use stat='kl_to_final' or stat='entropy'"
    )
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.trajectory_model(make(targets=()))
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        vm.trajectory_model(make(targets=()), stat="target_ranks", answers=True)


def _answered(targets=(" Paris", " Rome")) -> LensResult:
    """Two prompts, the first without an answer, the second answering " Rome" (id 6)."""
    probs = torch.tensor([[NAN] * 4, [0.125, 0.25, 0.5, 0.75]])
    ranks = torch.tensor([[-1] * 4, [9, 4, 2, 1]])
    return make(
        targets=targets, answers=[None, " Rome"], answer_ids=[[], [6]], answer_probs=probs, answer_ranks=ranks,
        answer_logprobs=torch.zeros(2, 4),
    )  # fmt: skip


def test_trajectory_model_with_answers():
    r = _answered()
    m = vm.trajectory_model(r, answers=True)
    assert m.title == "target and answer probability and rank across rows (last position)"
    probs, ranks = m.panels
    assert [(c.name, c.prompt, c.target) for c in probs.curves][-1] == (
        "answer ␣Rome · The extraordinarily.",
        1,
        -2,
    )
    assert len(probs.curves) == 5 and len(ranks.curves) == 5
    np.testing.assert_array_equal(probs.curves[-1].y, [0.125, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(ranks.curves[-1].y, [9.0, 4.0, 2.0, 1.0])
    assert ranks.curves[-1].name == "answer ␣Rome · The extraordinarily."
    assert (probs.curves[-1].row_names, probs.curves[-1].depths) == (r.row_names, r.depths)
    one = vm.trajectory_model(r, prompts=[1], answers=True)
    assert [(c.name, c.target) for c in one.panels[0].curves] == [
        ("␣Paris", 0),
        ("␣Rome", 1),
        ("answer ␣Rome", -2),
    ]
    alone = vm.trajectory_model(_answered(targets=()), answers=True)
    assert alone.title == "answer probability and rank across rows (last position)"
    assert [c.name for p in alone.panels for c in p.curves] == ["answer ␣Rome · The extraordinarily."] * 2
    first = make(answers=[" Paris", None], answer_ids=[[5], []], answer_probs=torch.full((2, 4), 0.5))
    assert [c.name for c in vm.trajectory_model(first, targets=[], answers=True).panels[0].curves] == [
        "answer ␣Paris · The Eiffel Tower is in"
    ]


def test_trajectory_answer_names_cut_the_prompt_to_30_characters():
    r = _answered().replace(prompts=["short", LONG])
    m = vm.trajectory_model(r, answers=True)
    assert [c.name for p in m.panels for c in p.curves if c.target < 0] == [
        "answer ␣Rome · " + LONG[:29] + "…"
    ] * 2


@pytest.mark.parametrize(
    ("kwargs", "title"),
    [({"answers": False}, "target probability and rank across rows (last position)"),
     ({"answers": True, "position": 1}, "target probability and rank across rows (column 1)"),
     ({"answers": True, "stat": "target_ranks"}, "rank of target across rows (last position)")],
)  # fmt: skip
def test_trajectory_model_answers_only_when_asked_at_the_last_position(kwargs, title):
    m = vm.trajectory_model(_answered(), **kwargs)
    assert m.title == title
    assert all(c.target >= 0 for p in m.panels for c in p.curves) and all(
        len(p.curves) == 4 for p in m.panels
    )
    plain = vm.trajectory_model(make(), answers=True)  # no answers in the result
    assert plain.title == "target probability and rank across rows (last position)"
    assert all(len(p.curves) == 4 for p in plain.panels)


def test_trajectory_model_leaves_answers_out_by_default():
    m = vm.trajectory_model(_answered())
    assert m.title == "target probability and rank across rows (last position)"
    assert [len(p.curves) for p in m.panels] == [4, 4]


def test_trajectory_model_of_a_registered_per_target_statistic():
    stat = Statistic(
        "target_logits", torch.float32, math.nan, "logit of {target}", "nats", "Greens", per_target=True,
        compute=lambda c: c,
    )  # fmt: skip
    register_statistic(stat)
    try:
        r = make()
        values = torch.rand(r.target_probs.shape, generator=torch.Generator().manual_seed(2))
        r = r.replace(target_logits=values)
        m = vm.trajectory_model(r, stat="target_logits", position=0, answers=True)
        assert m.title == "logit of target across rows (column 0)"
        assert [(p.stat, p.kind, p.label) for p in m.panels] == [("target_logits", "nats", "logit of target")]
        c = m.panels[0].curves[3]
        assert (c.prompt, c.target) == (1, 1)
        np.testing.assert_array_equal(c.y, values[1, :, 0, 1].numpy().astype(float))
    finally:
        unregister_statistic("target_logits")


# ---- comparisons ------------------------------------------------------------------------------------------
def test_distinct_names():
    a, b, c = make(meta={"model": "m"}), make(meta={}), make(meta={"model": ""})
    assert vm.distinct_names([a, b, c, a, a], None) == ["m", "model 1", "model 2", "m (2)", "m (3)"]
    assert vm.distinct_names([a, b], ("x", "x")) == ["x", "x (2)"]
    assert vm.distinct_names([a, b, c], ["x", "y", "x"]) == ["x", "y", "x (2)"]
    with pytest.raises(LogitLensError, match=r"^got 2 results but 3 names; give one name per result$"):
        vm.distinct_names([a, b], ["x", "y", "z"])
    with pytest.raises(LogitLensError, match=r"^got 2 results but 1 names; give one name per result$"):
        vm.distinct_names([a, b], ["x"])


def test_shared_target():
    a = make()  # ' Paris', ' Rome'
    b = make(targets=(" Rome",))
    assert vm.shared_target([a, b], " Rome") == [1, 0]
    assert vm.shared_target([a, b], "␣Rome") == [1, 0]
    assert vm.shared_target([a, b], 0) is None  # ' Paris' and ' Rome': not one target
    assert vm.shared_target([a, b], " Paris") is None  # b does not track it
    assert vm.shared_target([a, make(targets=())], 0) is None
    assert vm.shared_target([a, a], -1) == [1, 1]
    assert vm.shared_target([b], 0) == [0]
    assert vm.shared_target([], 0) is None


def test_compare_grids():
    a, b = make(), make(targets=(" Rome",), seed=1)
    grids = vm.compare_grids([a, b], [0, 1], [1, 0], "target_probs", 0)
    _grids_equal(grids[0], vm.stat_grid(a, 0, "target_probs", 1))
    _grids_equal(grids[1], vm.stat_grid(b, 1, "target_probs", 0))
    assert [g.label for g in grids] == ["p(␣Rome)", "p(␣Rome)"]
    plain = vm.compare_grids([a, a], [1, 0], None, "target_ranks", 1)
    _grids_equal(plain[0], vm.stat_grid(a, 1, "target_ranks", 1))
    _grids_equal(plain[1], vm.stat_grid(a, 0, "target_ranks", 1))
    ent = vm.compare_grids([a, b], [0, 0], [1, 0], "entropy", 0)
    _grids_equal(ent[1], vm.stat_grid(b, 0, "entropy"))
    assert [g.target for g in ent] == [None, None]
    assert [g.target for g in vm.compare_grids([a], [0], None, "kl", " Rome")] == [None]


def test_compare_grids_refuses_a_prompt_list_of_another_length():
    """One prompt index per result: a shorter or longer list is an error, not a silently cut comparison."""
    a = make()
    with pytest.raises(ValueError, match="zip"):
        vm.compare_grids([a, a], [0], None, "entropy", 0)
    with pytest.raises(ValueError, match="zip"):
        vm.compare_grids([a], [0, 1], None, "entropy", 0)


@pytest.fixture(scope="module")
def pair() -> tuple[LensResult, LensResult]:
    a = make(prompts=[LONG, "short"], meta={"model": "alpha"})
    b = make(inputs=((0, 5), (0, 1, 2, 3)), n_rows=6, targets=(" Rome",), seed=3, meta={"model": "beta"})
    return a, b


def test_compare_model_with_a_shared_target(pair):
    a, b = pair
    m = vm.compare_model([a, b], prompt=[0, -1], stat="prob", target=" Rome", position=1)
    assert (m.names, m.prompts, m.targets, m.where, m.title) == (
        ["alpha", "beta"],
        [0, 1],
        [1, 0],
        "column 1",
        LONG,
    )
    for h, r, p, t in zip(m.heatmaps, (a, b), (0, 1), (1, 0), strict=True):
        assert h.prompt == p
        _grids_equal(h.grid, vm.stat_grid(r, p, "target_probs", t))
    assert [(p.stat, p.kind, p.label) for p in m.panels] == [
        ("kl_to_final", "nats", "KL to final (nats)"), ("entropy", "nats", "entropy (nats)"),
        ("target_probs", "prob", "p(␣Rome)"),
    ]  # fmt: skip
    for panel in m.panels:
        assert [(c.name, c.prompt) for c in panel.curves] == [("alpha", 0), ("beta", 1)]
        for c, r, t in zip(panel.curves, (a, b), (1, 0), strict=True):
            assert c.target == (t if panel.stat == "target_probs" else None)
            assert (c.row_names, c.depths) == (r.row_names, r.depths)
            col = r.columns(c.prompt)[1]
            want = r.stats[panel.stat][c.prompt, :, col]
            want = want[:, t] if panel.stat == "target_probs" else want
            np.testing.assert_array_equal(c.y, want.numpy().astype(float))
    assert m.menu == [e.stat for e in PLAIN_MENU] + ["target_probs", "target_ranks"]


def test_compare_model_defaults_and_without_a_shared_target(pair):
    a, b = pair
    m = vm.compare_model([a, b])
    assert (m.names, m.prompts, m.targets, m.where, m.title) == (
        ["alpha", "beta"],
        [0, 0],
        None,
        "last position",
        LONG,
    )
    assert [h.grid.stat for h in m.heatmaps] == ["top_probs", "top_probs"]
    _grids_equal(m.heatmaps[1].grid, vm.stat_grid(b, 0, "top_probs"))
    assert [p.stat for p in m.panels] == ["kl_to_final", "entropy"]
    for c, r in zip(m.panels[0].curves, (a, b), strict=True):
        np.testing.assert_array_equal(c.y, r.kl_to_final[0, :, r.columns(0)[-1]].numpy().astype(float))
    assert m.menu == [e.stat for e in PLAIN_MENU]
    named = vm.compare_model([a, a], ["x", "x"], 1, stat="entropy", target=0, position=-2)
    assert (named.names, named.prompts, named.targets, named.where) == (
        ["x", "x (2)"],
        [1, 1],
        [0, 0],
        "column -2",
    )
    assert named.title == "short"
    c = named.panels[2].curves[0]
    np.testing.assert_array_equal(c.y, a.target_probs[1, :, 1, 0].numpy().astype(float))
    assert named.panels[2].label == "p(␣Paris)" and [c.target for c in named.panels[2].curves] == [0, 0]


def test_compare_model_of_one_result_and_the_default_target(pair):
    a, b = pair
    one = vm.compare_model([b])
    assert (one.names, one.prompts, one.targets) == (["beta"], [0], [0])
    assert one.menu == [e.stat for e in PLAIN_MENU] + ["target_probs", "target_ranks"]
    same = vm.compare_model([a, a], stat="target_probs")  # target 0, ' Paris', in both
    assert same.targets == [0, 0] and same.panels[2].label == "p(␣Paris)"
    assert [h.grid.target for h in same.heatmaps] == [0, 0]


def test_compare_model_targets_at_index_0_in_the_first_result(pair):
    a, b = pair
    m = vm.compare_model([b, a], prompt=1, stat="target_ranks", target="␣Rome")
    assert m.targets == [0, 1] and m.panels[2].label == "p(␣Rome)"
    _grids_equal(m.heatmaps[0].grid, vm.stat_grid(b, 1, "target_ranks", 0))
    _grids_equal(m.heatmaps[1].grid, vm.stat_grid(a, 1, "target_ranks", 1))
    for c, r, t in zip(m.panels[2].curves, (b, a), (0, 1), strict=True):
        np.testing.assert_array_equal(c.y, r.target_probs[1, :, r.columns(1)[-1], t].numpy().astype(float))


def test_compare_model_of_a_target_statistic_without_a_shared_target(pair):
    a, b = pair
    m = vm.compare_model([a, b], stat="target_ranks", target=0)  # ' Paris' in a, ' Rome' in b
    assert m.targets is None and [p.stat for p in m.panels] == ["kl_to_final", "entropy"]
    _grids_equal(m.heatmaps[0].grid, vm.stat_grid(a, 0, "target_ranks", 0))
    _grids_equal(m.heatmaps[1].grid, vm.stat_grid(b, 0, "target_ranks", 0))
    assert [h.grid.label for h in m.heatmaps] == ["rank of ␣Paris", "rank of ␣Rome"]


def test_compare_model_menu_holds_only_common_statistics(pair):
    a, b = pair
    register_statistic(
        Statistic("max_logprob", torch.float32, math.nan, "max log p", "nats", "Greens", compute=lambda c: c)
    )
    try:
        fresh = make(targets=(" Rome",))
        assert vm.compare_model([fresh, b], target=0).menu == [e.stat for e in PLAIN_MENU] + [
            "target_probs",
            "target_ranks",
        ]
        assert vm.compare_model([fresh, fresh], target=0).menu[-3:] == [
            "max_logprob",
            "target_probs",
            "target_ranks",
        ]
    finally:
        unregister_statistic("max_logprob")


def test_compare_model_errors(pair):
    a, b = pair
    with pytest.raises(LogitLensError, match=r"^compare needs at least one result$"):
        vm.compare_model([])
    with pytest.raises(LogitLensError, match=r"^got 2 results but 3 prompt indices$"):
        vm.compare_model([a, b], prompt=[0, 1, 0])
    with pytest.raises(LogitLensError, match=r"^got 2 results but 1 prompt indices$"):
        vm.compare_model([a, b], prompt=(0,))
    with pytest.raises(LogitLensError, match=r"^prompt index 2 is out of range: this result has 2$"):
        vm.compare_model([a, b], prompt=2)
