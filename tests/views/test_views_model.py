"""The view model (views/model.py): plain data every view renders, checked against the result's tensors.

Also the summaries it shares with ``LensResult``: ``first_stable``, ``largest_drop``, ``summary()`` and
``first_row()`` on hand-made profiles whose answers are known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_plots import hand_result

from logitlens import LogitLensError
from logitlens.core.stats import Statistic, drawable, register_statistic, unregister_statistic
from logitlens.engine.analysis import first_stable, largest_drop
from logitlens.views import model as vm
from logitlens.views.plotly import compare_figure, heatmap


@pytest.fixture(scope="module")
def res():
    return hand_result()


# ---- colour grids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", [0, 1])
def test_every_drawable_statistic_has_a_grid_from_the_registry(res, prompt):
    cols = res.columns(prompt)
    for stat in drawable():
        grid = vm.stat_grid(res, prompt, stat.name, target=1)
        assert grid.stat == stat.name and grid.colorscale == stat.scale and grid.reverse == stat.reverse
        value = res.stats[stat.name][prompt][:, cols]
        value = value[..., 0] if stat.per_k else value
        value = value[..., 1] if stat.per_target else value
        np.testing.assert_allclose(grid.values, value.numpy().astype(float), rtol=1e-6)
        assert grid.values.shape == (res.n_rows, len(cols))
        if stat.kind in ("prob", "bool"):
            assert (grid.zmin, grid.zmax) == (0.0, 1.0)
            np.testing.assert_array_equal(grid.z, grid.values)
        elif stat.kind == "rank":
            np.testing.assert_allclose(grid.z, np.log10(grid.values))
            top = math.ceil(math.log10(grid.values.max()))
            assert grid.zmax == top and grid.tickvals == list(range(top + 1))
            assert grid.ticktext == [f"{10**e:,}" for e in range(top + 1)]
        else:  # nats: 0 .. the largest value (KL: its 95% quantile)
            assert grid.zmin == 0
            finite = grid.values[np.isfinite(grid.values)]
            expected = np.quantile(finite, 0.95) if stat.name == "kl_to_final" else finite.max()
            assert grid.zmax == pytest.approx(expected)


def test_labels_show_the_target_made_visible(res):
    assert vm.stat_grid(res, 0, "target_probs", " Rome").label == "p(␣Rome)"
    assert vm.stat_grid(res, 0, "target_ranks", "␣Paris").label == "rank of ␣Paris"
    assert vm.stat_grid(res, 0, "kl").label == "KL to final (nats)"


@pytest.mark.parametrize(
    ("old", "new"),
    [("kl", "kl_to_final"), ("top_prob", "top_probs"), ("final_prob", "final_probs"),
     ("target_prob", "target_probs"), ("target_rank", "target_ranks"), ("prob", "target_probs")],
)  # fmt: skip
def test_old_statistic_names_still_work(res, old, new):
    a, b = vm.stat_grid(res, 0, old), vm.stat_grid(res, 0, new)
    assert a.stat == new and a.label == b.label
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(vm.curve(res, 0, old), vm.curve(res, 0, new))


def test_final_prob_grid_reads_the_exact_final_probs(res):
    exact = torch.rand(res.final_probs.shape, generator=torch.Generator().manual_seed(5))
    other = res.replace(final_probs=exact)
    grid = vm.stat_grid(other, 1, "final_prob")
    np.testing.assert_allclose(grid.values, exact[1, :, other.columns(1)].numpy(), rtol=1e-6)
    assert grid.label == "p(final top-1)"


def test_bad_names_give_one_line_errors(res):
    with pytest.raises(LogitLensError, match=r"unknown statistic 'entropie'; choose one of: top_probs"):
        vm.stat_grid(res, 0, "entropie")
    with pytest.raises(LogitLensError, match="'top_ids' holds token ids and is not drawn"):
        vm.stat_grid(res, 0, "top_ids")
    with pytest.raises(LogitLensError, match="unknown target ' Berlin'"):
        vm.stat_grid(res, 0, "target_probs", " Berlin")


# ---- texts ----------------------------------------------------------------------------------------------
def test_heatmap_model_cells_labels_and_next_tokens(res):
    for prompt in (0, 1):
        m = vm.heatmap_model(res, prompt, "entropy")
        cols = res.columns(prompt)
        assert m.columns == cols and m.row_names == res.row_names
        ids = res.top_ids[prompt]
        assert m.cells == [[res.token(ids[r, j, 0]) for j in cols] for r in range(res.n_rows)]
        seq = res.input_ids[prompt]
        assert m.tokens == [res.tokens[prompt][j] for j in cols]
        assert m.column_labels == [f"{vm.clip(res.tokens[prompt][j], vm.LABEL_CHARS)}·{j}" for j in cols]
        assert m.next_tokens == [res.token(seq[j + 1]) if j + 1 < len(seq) else "" for j in cols]
        assert m.next_hits == [j + 1 < len(seq) and int(ids[-1, j, 0]) == seq[j + 1] for j in cols]
        assert m.text == res.prompts[prompt] and m.model == "hand-made" and m.lens == "logit"
    assert vm.heatmap_model(res, 0).next_hits[1]  # hand_result's planted hit


def test_depths_come_from_the_row_specs_not_the_row_index(res):
    sub = res.replace(row_names=["embed", "0.attn", "0", "1"])  # 2 blocks, an "attn" row in the first
    assert vm.heatmap_model(sub, 0).depths == [0.0, 0.25, 0.5, 1.0]
    curves = vm.trajectory_model(sub, stat="kl").panels[0].curves
    assert all(c.depths == [0.0, 0.25, 0.5, 1.0] for c in curves)


def test_hover_records_hold_every_statistic_and_the_topk(res):
    hover = vm.hover_records(res, 0)
    cols = res.columns(0)
    assert len(hover) == res.n_rows and all(len(row) == len(cols) for row in hover)
    cell = hover[2][3]
    j = cols[3]
    assert (cell.row, cell.column, cell.position, cell.token) == ("1", j, j, res.tokens[0][j])
    assert cell.next_token == res.token(res.input_ids[0][j + 1])
    assert cell.top == [
        (res.token(t), pytest.approx(float(p)))
        for t, p in zip(res.top_ids[0, 2, j], res.top_probs[0, 2, j], strict=True)
    ]
    names = {(v.stat, v.target) for v in cell.values}
    expected = {(s.name, None) for s in drawable() if not s.per_k and not s.per_target}
    expected |= {(s.name, t) for s in drawable() if s.per_target for t in (0, 1)}
    assert names == expected
    assert cell.value("entropy") == pytest.approx(float(res.entropy[0, 2, j]))
    assert cell.value("target_rank", 1) == int(res.target_ranks[0, 2, j, 1])
    labels = [v.label for v in cell.values]
    assert "entropy (nats)" in labels and "p(␣Rome)" in labels and "rank of ␣Paris" in labels
    assert f"p(final top-1 {res.token(res.top_ids[0, -1, j, 0])})" in labels
    assert hover[-1][0].top[0][0] == hover[-1][0].final_top1 and hover[-1][0].final_in_topk


def test_prompt_summary_matches_the_result_summary(res):
    df = res.summary()
    for i in range(res.n_prompts):
        s = vm.prompt_summary(res, i)
        row = df.iloc[i]
        assert (s.final_top1, s.first_stable_label) == (row["final_top1"], row["first_stable_row"])
        assert res.rows[s.first_stable].layer == row["first_stable_layer"]
        assert [res.rows[c.row].layer for c in s.falls] == row["kl_fall_layers"]
        assert [res.rows[c.row].layer for c in s.rises] == row["logprob_rise_layers"]
        assert row["kl_falls"] == ", ".join(f"{c.label} (-{c.size:.2f})" for c in s.falls)
        assert s.final_prob == pytest.approx(row["final_prob"])
        if s.falls:
            assert (s.critical, s.kl_drop) == (s.falls[0].row, pytest.approx(s.falls[0].size))
        assert [t.first_row for t in s.targets] == [res.first_row(t)[i] for t in range(2)]
        assert [t.prob for t in s.targets] == [pytest.approx(row[f"p({n})"]) for n in res.target_names]


# ---- the statistic menu ---------------------------------------------------------------------------------
def test_menu_is_generated_from_the_registry(res):
    entries = vm.menu_entries(res)
    plain = [s.name for s in drawable() if not s.per_target]
    assert [e.stat for e in entries[: len(plain)]] == plain
    assert [(e.stat, e.target) for e in entries[len(plain) :]] == [
        (s.name, t) for t in (0, 1) for s in drawable() if s.per_target
    ]
    assert [b.label for b in heatmap(res, 0, menu=True).layout.updatemenus[0].buttons] == [
        e.label for e in entries
    ]


def test_a_registered_statistic_appears_in_every_menu_and_hover():
    stat = Statistic(
        "max_logprob", torch.float32, float("nan"), label="max log p", kind="nats", scale="Greens",
        meaning="log-probability of the top-1 token", compute=lambda ctx: ctx.logp.amax(-1),
    )  # fmt: skip
    register_statistic(stat)
    try:
        base = hand_result()
        value = -torch.rand(base.entropy.shape, generator=torch.Generator().manual_seed(3)) * 4  # (N, R, P)
        res = base.replace(max_logprob=value)
        assert ("max_logprob", None, "max log p") in [
            (e.stat, e.target, e.label) for e in vm.menu_entries(res)
        ]
        buttons = heatmap(res, 0, menu=True).layout.updatemenus[0].buttons
        button = next(b for b in buttons if b.label == "max log p")
        z = np.array(button.args[0]["z"][0], dtype=float)
        np.testing.assert_allclose(z, value[0, :, res.columns(0)].numpy(), rtol=1e-6)
        assert button.args[0]["colorscale"] == ["Greens"]
        grid = vm.stat_grid(res, 0, "max_logprob")
        assert grid.zmin == pytest.approx(float(value[0, :, :5].min())) and grid.zmax > grid.zmin
        assert "max log p" in [v.label for v in vm.hover_records(res, 0)[0][0].values]
        pair = [res, res]
        labels = [b.label for b in compare_figure(pair, ["a", "b"]).layout.updatemenus[0].buttons]
        assert "max log p" in labels
    finally:
        unregister_statistic("max_logprob")
    assert "max log p" not in [e.label for e in vm.menu_entries(hand_result())]


# ---- curves ---------------------------------------------------------------------------------------------
def test_trajectory_model_panels(res):
    m = vm.trajectory_model(res, stat="target_probs")
    assert [p.stat for p in m.panels] == ["target_probs", "target_ranks"]
    assert [p.kind for p in m.panels] == ["prob", "rank"]
    last = res.columns(1)[-1]
    c = m.panels[1].curves[3]  # prompt 1, target 1
    assert (c.prompt, c.target) == (1, 1)
    np.testing.assert_array_equal(c.y, res.target_ranks[1, :, last, 1].numpy())
    one = vm.trajectory_model(res, stat="cross_entropy", position="mean")
    assert [c.prompt for c in one.panels[0].curves] == [0, 1] and one.where == "mean over positions"
    np.testing.assert_allclose(
        one.panels[0].curves[1].y, res.cross_entropy[1, :, :3].mean(-1).numpy(), rtol=1e-6
    )


def test_compare_model_curves_are_on_each_rows_depth():
    small = hand_result(n_rows=4, seed=1, model="small").replace(row_names=["embed", "0.attn", "0", "1"])
    deep = hand_result(n_rows=7, seed=2, model="deep")
    m = vm.compare_model([small, deep], prompt=0)
    assert [p.stat for p in m.panels] == ["kl_to_final", "entropy", "target_probs"]
    for panel in m.panels:
        assert [c.depths for c in panel.curves] == [small.depths, deep.depths]
    assert small.depths == [0.0, 0.25, 0.5, 1.0] and deep.depths == [i / 6 for i in range(7)]


# ---- summaries on hand-made profiles --------------------------------------------------------------------
def test_first_stable_and_largest_drop_on_known_profiles():
    assert first_stable([False, True, False, True, True]) == 3
    assert first_stable([True, True, True]) == 0
    assert first_stable([True, False]) == 2  # never stable: len(flags)
    assert first_stable([]) == 0
    assert largest_drop([5.0, 4.0, 1.0, 0.5]) == (2, 3.0)
    assert largest_drop([1.0, 3.0, 2.0, 2.5]) == (2, 1.0)  # rises do not count as drops
    assert largest_drop([2.0, 3.0, 4.0]) == (1, -1.0)  # no drop at all: the smallest rise
    assert largest_drop([7.0]) == (0, 0.0)


def _profiled() -> object:
    """hand_result with known profiles at prompt 0's last column (4) and prompt 1's last column (2)."""
    res = hand_result(n_rows=5)
    kl, agrees, ranks = res.kl_to_final.clone(), res.agrees_with_final.clone(), res.target_ranks.clone()
    kl[0, :, 4] = torch.tensor([6.0, 5.5, 1.5, 0.5, 0.0])  # falls: into block 1 4.0, block 2 1.0, 3 0.5
    kl[1, :, 2] = torch.tensor([9.0, 2.0, 1.9, 0.1, 0.0])  # block 2 1.8, block 1 and 3 0.1 (embed: 7)
    agrees[0, :, 4] = torch.tensor([True, False, True, True, True])  # stable from row 2 ("1")
    agrees[1, :, 2] = torch.tensor([False, False, False, False, True])  # only the last row ("3")
    ranks[0, :, 4, 0] = torch.tensor([9, 1, 3, 1, 1])  # top-1 from row 3 ("2"); <= 3 from row 1 ("0")
    ranks[1, :, 2, 0] = torch.tensor([1, 1, 1, 1, 1])  # top-1 from the embedding
    ranks[0, :, 4, 1] = torch.tensor([9, 9, 9, 9, 2])  # never top-1
    ranks[1, :, 2, 1] = torch.tensor([2, 1, 2, 2, 1])  # top-1 from the last row only
    final = res.final_probs.clone()
    final[0, :, 4] = torch.tensor([1e-6, 0.001, 0.01, 0.2, 0.6])  # rises: block 2 3.0, 1 2.3, 3 1.1
    final[1, :, 2] = torch.tensor([1e-9, 0.5, 0.4, 0.3, 0.9])  # only block 3 rises (embed step left out)
    return res.replace(kl_to_final=kl, agrees_with_final=agrees, target_ranks=ranks, final_probs=final)


def test_summary_on_known_profiles():
    res = _profiled()
    df = res.summary()
    assert list(df["kl_fall_layers"]) == [[1, 2, 3], [2, 1, 3]]
    assert df["kl_falls"][0] == "after block 1 (-4.00), after block 2 (-1.00), after block 3 (-0.50)"
    assert list(df["logprob_rise_layers"]) == [[2, 1, 3], [3]]
    assert df["logprob_rises"][0] == "after block 2 (+3.00), after block 1 (+2.30), after block 3 (+1.10)"
    assert df["logprob_rises"][1] == "after block 3 (+1.10)"
    assert list(df["first_stable_row"]) == ["after block 1", "after block 3"]
    assert list(df["first_stable_layer"]) == [1, 3]
    assert list(df["rank( Paris)"]) == [1, 1] and list(df["rank( Rome)"]) == [2, 1]
    for i in range(2):
        s = vm.prompt_summary(res, i)
        assert (s.critical_row, s.kl_drop) == (["1", "2"][i], pytest.approx([4.0, 1.8][i]))
        assert s.first_stable_label == df["first_stable_row"][i]
        assert s.critical_rows == [[3, 2, 4], [4, 3, 2]][i]  # rises first, then new falls
        assert vm.row_labels(res, s.critical_rows)[s.critical_rows[0]].endswith(" ◆")


def test_first_row_on_known_profiles():
    res = _profiled()
    assert res.first_row(target=0) == ["2", "embed"]
    assert res.first_row(target=1) == [None, "3"]
    assert res.first_row(target=0, threshold=3) == ["0", "embed"]  # rank 3 counts: <= threshold
    assert res.first_row(target=1, threshold=2) == ["3", "embed"]
    assert [t.first_row for t in vm.prompt_summary(res, 0).targets] == ["2", None]
    assert [t.first_row for t in vm.prompt_summary(res, 1).targets] == ["embed", "3"]
