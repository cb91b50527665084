"""The Plotly figures (views/plotly.py) and the static PNG (views/png.py), read back from the figure objects.

Most tests use ``hand_result``: a small LensResult made by hand (2 prompts, one shorter, a repeated input
token, tokens that look like markup, 2 targets) so that every expected value is known.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch

from logitlens import LensResult, LogitLensError
from logitlens.core.stats import get_statistic
from logitlens.views.model import (
    CELL_CHARS,
    LABEL_CHARS,
    clip,
    prob_text,
    prompt_summary,
    row_labels,
    stat_grid,
)
from logitlens.views.plotly import esc, heatmap, trajectory
from markers import needs_default_model

#: every drawable built-in statistic, by its registry name and by the older names that still work
STATS = ("top_probs", "final_probs", "entropy", "kl_to_final", "cross_entropy", "agrees_with_final",
         "target_probs", "target_ranks", "top_prob", "final_prob", "kl", "target_prob", "target_rank")  # fmt: skip

VOCAB = ["The", "␣cat", "␣the", "␣dog", "␣Paris", "␣Rome", "<b>", "&amp", "␣sat", "."]
#: prompt 0: "The cat the dog the" (␣the repeats), prompt 1: "The dog sat" (shorter: padding columns)
INPUTS = [[0, 1, 2, 3, 2], [0, 3, 8]]


def hand_result(
    n_rows: int = 4, k: int = 3, seed: int = 0, inputs=None, model: str = "hand-made"
) -> LensResult:
    """A LensResult with random but valid statistics; cell (prompt 0, last row, column 1) predicts the
    actual next token, so the top axis has one ✓."""
    inputs = inputs or INPUTS
    g = torch.Generator().manual_seed(seed)
    n, n_cols, n_v, n_t = len(inputs), max(map(len, inputs)), len(VOCAB), 2
    top_ids = torch.stack([torch.randperm(n_v, generator=g)[:k] for _ in range(n * n_rows * n_cols)])
    top_ids = top_ids.reshape(n, n_rows, n_cols, k)
    raw = torch.rand(n, n_rows, n_cols, k, generator=g).sort(-1, descending=True).values
    top_probs = raw / (raw.sum(-1, keepdim=True) + torch.rand(n, n_rows, n_cols, 1, generator=g))
    entropy = torch.rand(n, n_rows, n_cols, generator=g) * 3
    kl = torch.rand(n, n_rows, n_cols, generator=g) * 5
    kl[:, -1] = 0
    t_probs = torch.rand(n, n_rows, n_cols, n_t, generator=g)
    t_ranks = torch.randint(1, 5000, (n, n_rows, n_cols, n_t), generator=g)
    t_ranks[:, -1, :, 0] = 1
    top_ids[0, -1, 1, 0] = inputs[0][2]  # the final row at column 1 gets the next token right
    if top_ids[0, -1, 1, 1:].eq(inputs[0][2]).any():  # keep ids distinct within a cell
        top_ids[0, -1, 1, 1:] = torch.tensor([i for i in range(n_v) if i != inputs[0][2]][: k - 1])
    positions = torch.full((n, n_cols), -1, dtype=torch.long)
    for i, seq in enumerate(inputs):
        positions[i, : len(seq)] = torch.arange(len(seq))
        if len(seq) < n_cols:  # padding columns hold NaN / -1
            top_ids[i, :, len(seq) :] = -1
            for x in (top_probs, entropy, kl, t_probs):
                x[i, :, len(seq) :] = float("nan")
            t_ranks[i, :, len(seq) :] = -1
    return LensResult(
        top_ids=top_ids,
        top_probs=top_probs,
        entropy=entropy,
        kl_to_final=kl,
        cross_entropy=torch.rand(n, n_rows, n_cols, generator=g),
        agrees_with_final=top_ids[..., 0] == top_ids[:, -1:, :, 0],
        target_probs=t_probs,
        target_ranks=t_ranks,
        positions=positions,
        row_names=["embed"] + [str(i) for i in range(n_rows - 1)],
        tokens=[[VOCAB[t] for t in seq] for seq in inputs],
        input_ids=[list(seq) for seq in inputs],
        vocab=dict(enumerate(VOCAB)),
        target_names=[" Paris", " Rome"],
        target_ids=[[4], [5]],
        prompts=[" ".join(VOCAB[t] for t in seq).replace("␣", "") for seq in inputs],
        meta={"model": model, "lens": "logit"},
    )


@pytest.fixture(scope="module")
def res() -> LensResult:
    return hand_result()


def _z(fig) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in fig.data[0].z], dtype=float)


def _expected(res: LensResult, stat: str, prompt: int = 0, target: int = 0) -> np.ndarray:
    cols = res.columns(prompt)
    stat = get_statistic(stat).name
    if stat == "top_probs":
        return res.top_probs[prompt, :, cols, 0].numpy()
    if stat in ("entropy", "kl_to_final", "cross_entropy"):
        return res.stat(stat)[prompt, :, cols].numpy()
    if stat == "agrees_with_final":
        return res.agrees_with_final[prompt, :, cols].numpy().astype(float)
    if stat == "target_probs":
        return res.target_probs[prompt, :, cols, target].numpy()
    if stat == "target_ranks":
        return np.log10(res.target_ranks[prompt, :, cols, target].numpy())
    out = np.zeros((res.n_rows, len(cols)))  # final_prob, by a plain loop
    for r in range(res.n_rows):
        for c, j in enumerate(cols):
            final = int(res.top_ids[prompt, -1, j, 0])
            for i, t in enumerate(res.top_ids[prompt, r, j].tolist()):
                if t == final:
                    out[r, c] = float(res.top_probs[prompt, r, j, i])
    return out


@pytest.mark.parametrize("stat", STATS)
@pytest.mark.parametrize("prompt", [0, 1])
def test_cells_hold_top1_tokens_and_colour_is_the_statistic(res, stat, prompt):
    fig = res.plot(stat=stat, prompt=prompt, target=1)
    cells = [[esc(clip(t, CELL_CHARS)) for t in row] for row in res.top_tokens(prompt)]
    assert [list(row) for row in fig.data[0].text] == cells
    assert fig.data[0].texttemplate == "%{text}"
    np.testing.assert_allclose(_z(fig), _expected(res, stat, prompt, target=1), rtol=1e-6)
    n_cols = len(res.columns(prompt))
    assert _z(fig).shape == (res.n_rows, n_cols)  # padding columns are not drawn
    assert not np.isnan(_z(fig)).any()


def test_rows_embed_at_bottom_last_layer_at_top(res):
    fig = res.plot()
    y = fig.layout.yaxis
    assert list(fig.data[0].y) == list(range(res.n_rows))
    labels = row_labels(res, prompt_summary(res, 0).critical_rows)
    assert list(y.tickvals) == list(range(res.n_rows)) and list(y.ticktext) == labels
    assert y.autorange != "reversed" and y.range[0] < y.range[1]  # row 0 (embed) at the bottom


def test_axis_labels_distinct_with_a_repeated_token(res):
    assert res.column_tokens(0).count("␣the") == 2
    ticks = list(heatmap(res, 0).layout.xaxis.ticktext)
    assert len(ticks) == len(set(ticks)) == 5
    assert [t.split("<br>")[0] for t in ticks] == res.column_tokens(0)
    assert [t.split("<br>")[1] for t in ticks] == [
        f"<span style='font-size:10px;color:#777'>{j}</span>" for j in range(5)
    ]
    assert list(heatmap(res, 0).layout.xaxis.tickvals) == list(range(5))


def test_top_axis_shows_next_token_and_marks_the_final_hit(res):
    fig = res.plot()
    top = list(fig.layout.xaxis2.ticktext)
    assert fig.layout.xaxis2.side == "top" and fig.layout.xaxis2.overlaying == "x"
    assert "✓" in top[1] and "␣the" in top[1] and "<b>" in top[1]  # column 1 predicts its next token
    ids = res.input_ids[0]
    hits = [int(res.top_ids[0, -1, j, 0]) == ids[j + 1] for j in range(len(ids) - 1)] + [False]
    assert ["✓" in t for t in top] == hits
    assert "␣cat" in top[0] and top[-1] == ""  # nothing follows the last token
    assert fig.data[1].xaxis == "x2"  # the invisible trace that makes plotly draw the top axis


def test_hover_holds_topk_and_the_statistics(res):
    fig = res.plot(stat="entropy")
    hover = fig.data[0].hovertext
    cols = res.columns(0)
    for r in range(res.n_rows):
        for c, j in enumerate(cols):
            box = hover[r][c]
            assert f"row {res.row_names[r]}" in box and f"position {j}" in box
            for i in range(res.top_k):
                tok, p = res.top_ids[0, r, j, i], float(res.top_probs[0, r, j, i])
                assert f"{i + 1:>2}. {esc(res.token(tok))}  {p:.3f}" in box
            assert f"entropy (nats) {float(res.entropy[0, r, j]):.3g}" in box
            assert f"KL to final (nats) {float(res.kl_to_final[0, r, j]):.3g}" in box
            assert f"p(␣Paris) {float(res.target_probs[0, r, j, 0]):.3f}" in box
            assert f"rank of ␣Rome {int(res.target_ranks[0, r, j, 1]):,}" in box
    assert fig.data[0].hoverinfo == "text"


def test_final_prob_outside_topk_is_zero_and_the_hover_says_so(res):
    fig = res.plot(stat="final_prob")
    z = _z(fig)
    cols = res.columns(0)
    missing = [
        (r, c)
        for r in range(res.n_rows)
        for c, j in enumerate(cols)
        if int(res.top_ids[0, -1, j, 0]) not in res.top_ids[0, r, j].tolist()
    ]
    assert missing, "the hand-made result should have cells whose final top-1 is outside the top-k"
    for r, c in missing:
        assert z[r, c] == 0
        assert "not in top-3" in fig.data[0].hovertext[r][c]
    np.testing.assert_allclose(z[-1], res.top_probs[0, -1, cols, 0].numpy(), rtol=1e-6)


def test_markup_in_tokens_is_escaped(res):
    tid = int(res.top_ids[0, 0, 0, 0])
    fig = res.replace(vocab={**res.vocab, tid: "<b>x&y"}).plot()
    assert fig.data[0].text[0][0] == "&lt;b&gt;x&amp;y"
    assert "&lt;b&gt;x&amp;y" in fig.data[0].hovertext[0][0] and "<b>x" not in fig.data[0].hovertext[0][0]


def test_target_rank_is_log_scaled_with_readable_ticks(res):
    fig = res.plot(stat="target_rank", target="␣Rome")
    bar = fig.data[0].colorbar
    assert list(bar.ticktext[:3]) == ["1", "10", "100"] and list(bar.tickvals[:3]) == [0, 1, 2]
    assert fig.data[0].reversescale  # rank 1 is the dark end
    assert "rank of ␣Rome" in bar.title.text


def test_statistic_menu_switches_z(res):
    fig = heatmap(res, 0, menu=True)
    buttons = fig.layout.updatemenus[0].buttons
    labels = [b.label for b in buttons]
    assert labels[:4] == ["p(top-1)", "p(final top-1)", "entropy (nats)", "KL to final (nats)"]
    assert "p(␣Rome)" in labels and "rank of ␣Paris" in labels
    kl = buttons[labels.index("KL to final (nats)")].args[0]
    np.testing.assert_allclose(np.array(kl["z"][0], dtype=float), _expected(res, "kl"), rtol=1e-6)
    assert list(buttons[0].args[2]) == [0]  # only the heatmap trace is restyled
    assert "colour: KL to final (nats)" in buttons[labels.index("KL to final (nats)")].args[1]["title.text"]


def test_size_scales_with_rows_and_columns():
    small, tall = hand_result(n_rows=4), hand_result(n_rows=30)
    assert tall.plot().layout.height > small.plot().layout.height + 22 * 25
    wide = hand_result(inputs=[list(range(10)) * 3])
    assert wide.plot().layout.width > small.plot().layout.width


def test_errors_say_what_to_do(res):
    with pytest.raises(LogitLensError, match="choose one of: top_probs, final_probs, entropy, kl_to_final"):
        res.plot(stat="probability")
    with pytest.raises(
        LogitLensError, match="'top_ids' holds token ids and is not drawn; choose one of: top_probs"
    ):
        res.plot(stat="top_ids")
    with pytest.raises(LogitLensError, match="this result tracks: ' Paris', ' Rome'"):
        res.plot(stat="target_prob", target=" Berlin")
    with pytest.raises(LogitLensError, match="out of range: this result has 2"):
        res.plot(prompt=2)
    bare = res.replace(target_names=[], target_ids=[], target_probs=res.target_probs[..., :0])
    with pytest.raises(LogitLensError, match=r"no targets; run the lens with targets="):
        bare.plot(stat="target_rank")
    with pytest.raises(LogitLensError, match="stat='kl_to_final'"):
        bare.plot_trajectory()
    with pytest.raises(LogitLensError, match="unknown statistic 'rnak'; choose one of: top_probs"):
        res.plot_trajectory(stat="rnak")


def test_trajectory_prob_and_rank_for_targets_and_prompts(res):
    fig = res.plot_trajectory()
    assert len(fig.data) == 2 * 2 * 2  # prompts x targets x (prob, rank)
    probs = [d for d in fig.data if d.yaxis == "y"]
    ranks = [d for d in fig.data if d.yaxis == "y2"]
    last = res.columns(1)[-1]
    np.testing.assert_allclose(probs[3].y, res.target_probs[1, :, last, 1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(ranks[3].y, res.target_ranks[1, :, last, 1].numpy())
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis2.autorange == "reversed"
    assert probs[3].line.color == ranks[3].line.color
    assert list(fig.layout.xaxis2.ticktext) == res.row_names
    one = res.plot_trajectory(targets=["␣Rome"], prompts=[0])
    assert len(one.data) == 2 and one.data[0].name == "␣Rome"


@pytest.mark.parametrize("stat", ["kl", "entropy"])
def test_trajectory_kl_and_entropy_per_prompt(res, stat):
    fig = trajectory(res, stat=stat)
    assert len(fig.data) == res.n_prompts
    data = res.kl_to_final if stat == "kl" else res.entropy
    np.testing.assert_allclose(fig.data[1].y, data[1, :, res.columns(1)[-1]].numpy(), rtol=1e-6)
    mean = trajectory(res, stat=stat, position="mean")
    np.testing.assert_allclose(mean.data[1].y, data[1, :, :3].mean(-1).numpy(), rtol=1e-6)
    with pytest.raises(LogitLensError, match="out of range for prompt 2"):
        trajectory(res, stat=stat, position=3)


def test_stat_grid_kl_keeps_contrast_under_a_huge_embedding_row():
    res = hand_result(n_rows=30)
    res = res.replace(kl_to_final=res.kl_to_final.clone())
    res.kl_to_final[:, 0] = 100.0
    grid = stat_grid(res, 0, "kl")
    assert grid.zmax < 10 and grid.values[0].max() == 100


def test_on_a_real_lens_run(lens):
    res = lens.run(["Hello world, hello", "one two"], top_k=4, targets=[7])
    fig = res.plot(stat="target_prob", prompt=1)
    assert [list(r) for r in fig.data[0].text] == [
        [esc(clip(t, CELL_CHARS)) for t in row] for row in res.top_tokens(1)
    ]
    np.testing.assert_allclose(_z(fig), res.target_probs[1, :, res.columns(1), 0].numpy(), rtol=1e-6)
    assert len(fig.layout.xaxis.ticktext) == len(res.tokens[1])


# ---- the PNG -------------------------------------------------------------------------------------------
def _png(path):
    from matplotlib.image import imread

    return imread(path)  # (H, W, 4) floats


def test_png_has_the_expected_size_and_is_not_blank(res, tmp_path):
    from logitlens.views.png import CELL_H, CELL_W, figure, write_png

    out = write_png(res, tmp_path / "r.png", stat="kl", dpi=100)
    img = _png(out)
    width = (1.3 + 1.5 + CELL_W * 5) * 100
    lines = len(figure(res, stat="kl").texts[1].get_text().splitlines())  # grey lines, wrapped to the width
    height = (1.45 + 0.2 * (lines - 2) + 0.85 + CELL_H * max(res.n_rows, 6)) * 100
    assert abs(img.shape[1] - width) <= 1 and abs(img.shape[0] - height) <= 1
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.1
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 50  # text, several cell colours


def test_png_of_40_positions_by_40_rows(tmp_path):
    from logitlens.views.png import figure

    big = hand_result(n_rows=40, k=2, inputs=[[i % 10 for i in range(40)]])
    fig = figure(big, stat="target_rank")
    w, h = fig.get_size_inches() * fig.dpi
    assert w / 40 >= 70 and h / 40 >= 24  # px per position / per row at 100 % zoom
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 40 * 40 and texts[0] == clip(big.top_tokens(0)[0][0], CELL_CHARS)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(labels)) == 40  # repeated tokens, distinct labels


def _first_top1_row(res, prompt: int, j: int, t: int) -> str | None:
    """By a plain loop: the first row from which target t stays rank 1 (None: not at the last row)."""
    first = None
    for r in range(res.n_rows - 1, -1, -1):
        if int(res.target_ranks[prompt, r, j, t]) > 1:
            break
        first = res.row_names[r]
    return first


def _label(res, name: str) -> str:
    """A row's label ("after block 2") from its name ("2")."""
    return res.rows[res.row_names.index(name)].label


@pytest.mark.parametrize("prompt", [0, 1])
def test_png_cells_ticks_and_subtitle(prompt):
    from matplotlib.colors import to_hex

    from logitlens.views.png import MATCH, figure

    res = hand_result()
    fig = figure(res, prompt, stat="kl")
    ax = fig.axes[0]
    cols = res.columns(prompt)
    expected = [
        (c, r, clip(res.token(res.top_ids[prompt, r, j, 0]), CELL_CHARS))
        for r in range(res.n_rows)
        for c, j in enumerate(cols)
    ]
    assert [(*t.get_position(), t.get_text()) for t in ax.texts] == expected  # every cell, its own row
    assert [t.get_text() for t in ax.get_yticklabels()] == row_labels(
        res, prompt_summary(res, prompt).critical_rows
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        f"{clip(res.tokens[prompt][j], LABEL_CHARS)}\n{j}" for j in cols
    ]
    top = ax.child_axes[0]  # the next-token axis
    seq = res.input_ids[prompt]
    hits = [j + 1 < len(seq) and int(res.top_ids[prompt, -1, j, 0]) == seq[j + 1] for j in cols]
    nexts = [res.token(seq[j + 1]) if j + 1 < len(seq) else "" for j in cols]
    labels = top.get_xticklabels()
    assert [t.get_text() for t in labels] == [
        ("✓" if h else "") + clip(n, LABEL_CHARS) for n, h in zip(nexts, hits, strict=True)
    ]
    assert [to_hex(t.get_color()) for t in labels] == [MATCH if h else "#000000" for h in hits]
    assert [t.get_fontweight() for t in labels] == ["bold" if h else "normal" for h in hits]
    if prompt == 0:
        assert any(hits) and not all(hits)  # so that an inverted mark shows
    last = cols[-1]
    lines = ["hand-made · colour: KL to final (nats) · logit lens"]
    for t, name in enumerate(["␣Paris", "␣Rome"]):
        p, rank = float(res.target_probs[prompt, -1, last, t]), int(res.target_ranks[prompt, -1, last, t])
        assert f"{p:.3f}" != f"{float(res.target_probs[prompt, 0, last, t]):.3f}"  # rows tell apart
        first = _first_top1_row(res, prompt, last, t)
        lines.append(
            f"{name} at the last position: p {prob_text(p)}, rank {rank:,} in the last row"
            + (f", top-1 from: {_label(res, first)}" if first is not None else ", never top-1")
        )
    title, sub = (t.get_text() for t in fig.texts)
    assert title == res.prompts[prompt]
    assert " ".join(sub.split()).startswith(" ".join(" ".join(lines).split()))  # wrapped, never cut
    assert max(map(len, sub.splitlines())) <= (fig.get_size_inches()[0] - 0.7) * 12
    assert "◆ log p(final top-1) rises most after block" in " ".join(sub.split())


def test_png_writes_tokens_literally(tmp_path):
    from logitlens.views.png import figure

    res = hand_result(inputs=[[6, 7, 0]])
    res = res.replace(vocab={**res.vocab, 0: "$x$"})
    fig = figure(res)
    texts = [t for t in fig.axes[0].texts]
    assert all(not t.get_parse_math() for t in texts)
    fig.canvas.draw()  # "$x$" would be mathtext; a parse error would raise here
    assert math.isfinite(fig.get_size_inches()[0])


def test_png_error_names_the_path(res, tmp_path):
    from logitlens.views.png import write_png

    with pytest.raises(LogitLensError, match="cannot write the PNG"):
        write_png(res, tmp_path / "missing" / "r.png")


@pytest.mark.slow
@needs_default_model
def test_default_model_picture_says_paris(tmp_path):
    from logitlens import LogitLens
    from logitlens.views.png import write_png

    res = LogitLens.from_pretrained("default").run("The Eiffel Tower is in the city of", targets=[" Paris"])
    fig = res.plot(stat="target_rank")
    assert fig.data[0].text[-1][-1] == "␣Paris" and fig.data[0].z[-1][-1] == 0  # rank 1
    assert "1. ␣Paris" in fig.data[0].hovertext[-1][-1]
    assert _png(write_png(res, tmp_path / "eiffel.png")).shape[1] > 800


# ---- fonts: CJK glyphs (issue 19, item 8) ------------------------------------------------------------------
CJK_VOCAB = ["東京", "␣猫", "は", "␣犬", "␣Paris", "␣Rome", "<b>", "&amp", "で", "。"]


def test_missing_glyphs_give_one_note_naming_the_font_package(tmp_path, monkeypatch):
    """Guards: one matplotlib warning per missing glyph (dozens of lines) and no hint of how to fix it."""
    import warnings

    from matplotlib import font_manager

    from logitlens.views import png

    # A machine without a CJK font, whatever this one has: matplotlib's list without CJK faces, no files.
    no_cjk = [f for f in font_manager.fontManager.ttflist if "CJK" not in f.name]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", no_cjk)
    monkeypatch.setattr(png, "CJK_FONT_FILES", ())
    monkeypatch.setattr(sys.modules[__name__], "VOCAB", CJK_VOCAB)
    cjk = hand_result()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png.write_png(cjk, tmp_path / "cjk.png")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "fonts-noto-cjk" in messages[0] and "東" in messages[0], messages


def test_a_system_cjk_font_draws_cjk_tokens_without_a_note(tmp_path, monkeypatch):
    """Guards: CJK tokens drawn as empty boxes on a machine that has a CJK font matplotlib's cache missed."""
    import warnings

    from logitlens.views import png

    font = os.environ.get("LOGITLENS_TEST_CJK_FONT") or next(
        (f for f in png.CJK_FONT_FILES if os.path.isfile(f)), None
    )
    if font is None:
        if os.environ.get("LOGITLENS_REQUIRE_CJK_FONT") == "1":  # CI: .ci/run installs fonts-noto-cjk
            pytest.fail("no CJK font at the paths of png.CJK_FONT_FILES; apt-get install fonts-noto-cjk")
        pytest.skip("needs a CJK font to draw with (Debian: apt-get install fonts-noto-cjk; CI installs it)")
    monkeypatch.setattr(png, "CJK_FONT_FILES", (font,))
    monkeypatch.setattr(sys.modules[__name__], "VOCAB", CJK_VOCAB)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png.write_png(hand_result(), tmp_path / "cjk.png")
    assert [str(w.message) for w in caught] == []
    assert any("CJK" in f for f in png.font_families())


def test_trajectory_png_title_wraps_inside_the_figure():
    """Guards: the concept picture's title cut at the image's edge (`Français: "fleur" - English:`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from logitlens.views.trajectory import trajectory_figure

    res = hand_result(inputs=[[0, 1, 2]])
    res.prompts = ['Français: "fleur" - English: "flower"\nFrançais: "montagne" - English: "']
    res.meta["model"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    fig = trajectory_figure(res, prompts=[0], log_probs=True)
    FigureCanvasAgg(fig).draw()
    title = fig._suptitle
    box = title.get_window_extent()
    assert "montagne" in title.get_text() and box.x1 <= fig.bbox.x1 and box.x0 >= 0
