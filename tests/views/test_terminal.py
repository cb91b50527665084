"""The rich terminal views (views/terminal.py): every cell, its colour, the header and footer, the top-k
table and the summary line, read from the Table objects and from a recording Console."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from test_plots import hand_result

from logitlens.views.model import clip, prob_text, prompt_summary, row_labels
from logitlens.views.terminal import cell_style, grid_table, print_result, render, topk_table


@pytest.fixture(scope="module")
def res():
    return hand_result()


def _next(res, prompt: int, j: int) -> str:
    ids = res.input_ids[prompt]
    return res.token(ids[j + 1]) if j + 1 < len(ids) else ""


@pytest.mark.parametrize("prompt", [0, 1])
def test_grid_cells_colours_header_and_footer(res, prompt):
    table = grid_table(res, prompt, max_columns=12, cell_width=9)
    cols = res.columns(prompt)
    assert len(table.columns) == 1 + len(cols)
    labels = row_labels(res, prompt_summary(res, prompt).critical_rows)
    assert labels[0] == "embeddings" and labels[1].split()[0] == "0"
    assert [str(c) for c in table.columns[0]._cells] == labels  # embed at the top
    assert table.columns[0].footer == "next →"
    for c, j in enumerate(cols):
        column = table.columns[c + 1]
        assert column.header == clip(res.tokens[prompt][j], 9)
        assert column.footer == clip(_next(res, prompt, j), 9)  # the NEXT token, not this one
        for r in range(res.n_rows):
            cell = column._cells[r]
            assert cell.plain == clip(res.token(res.top_ids[prompt, r, j, 0]), 9)
            assert str(cell.style) == cell_style(float(res.top_probs[prompt, r, j, 0]))


def test_grid_differs_between_rows_so_a_wrong_row_shows(res):
    """The checks above can tell rows apart: cells and colours differ from the final row somewhere."""
    table = grid_table(res, 0)
    last = [(c._cells[-1].plain, str(c._cells[-1].style)) for c in table.columns[1:]]
    for r in range(res.n_rows - 1):
        assert [c._cells[r].plain for c in table.columns[1:]] != [x for x, _ in last]
        assert [str(c._cells[r].style) for c in table.columns[1:]] != [y for _, y in last]


def test_grid_keeps_the_last_columns(res):
    table = grid_table(res, 0, max_columns=3)
    assert [c.header for c in table.columns[1:]] == [res.tokens[0][j] for j in (2, 3, 4)]
    assert [c._cells[0].plain for c in table.columns[1:]] == [
        res.token(res.top_ids[0, 0, j, 0]) for j in (2, 3, 4)
    ]
    assert "last 3 of 5 positions" in str(table.title)


@pytest.mark.parametrize(("prompt", "position"), [(0, -1), (0, 1), (1, -1)])
def test_topk_table_probabilities_and_targets_per_row(res, prompt, position):
    table = topk_table(res, prompt, position=position)
    j = res.columns(prompt)[position]
    assert table.title == f"top-3 per row after {res.tokens[prompt][j]!r} (position {j})"
    assert [c.header for c in table.columns] == ["row", "#1", "#2", "#3", "p / rank ␣Paris", "p / rank ␣Rome"]
    assert [str(c) for c in table.columns[0]._cells] == row_labels(
        res, prompt_summary(res, prompt).critical_rows
    )
    for r in range(res.n_rows):
        for i in range(3):
            cell = table.columns[1 + i]._cells[r]
            prob = float(res.top_probs[prompt, r, j, i])
            assert cell.plain == f"{clip(res.token(res.top_ids[prompt, r, j, i]), 12)} {prob_text(prob, 2)}"
            assert str(cell.style) == (cell_style(prob) if i == 0 else "")
        for t in range(2):
            p, rank = float(res.target_probs[prompt, r, j, t]), int(res.target_ranks[prompt, r, j, t])
            assert table.columns[4 + t]._cells[r] == f"{prob_text(p)} / {rank:,}"


def test_render_to_a_recording_console(res):
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render(res, 0, k=3))
    text = console.export_text()
    lines = text.splitlines()
    cols = res.columns(0)
    summary = prompt_summary(res, 0)
    for r, name in enumerate(row_labels(res, summary.critical_rows)):  # grid rows, embed first
        cells = [res.token(res.top_ids[0, r, j, 0]) for j in cols]
        pattern = rf"^│\s*{re.escape(name)}\s*│" + r"│".join(rf"\s*{re.escape(c)}\s*" for c in cells) + "│$"
        assert any(re.match(pattern, line) for line in lines), (name, cells)
    footer = [_next(res, 0, j) for j in cols]
    pattern = r"^│\s*next → │" + r"│".join(rf"\s*{re.escape(c)}\s*" for c in footer) + "│$"
    assert any(re.match(pattern, line) for line in lines)
    s = res.summary().iloc[0]
    firsts = [res.first_row(target=t)[0] for t in range(2)]
    firsts = [res.rows[res.row_names.index(f)].label if f else "never" for f in firsts]
    assert (
        f"final top-1 {s['final_top1']} ({s['final_prob']:.2f})  stays top-1 from: {s['first_stable_row']}"
        f"  ␣Paris top-1 from: {firsts[0]}  ␣Rome top-1 from: {firsts[1]}"
    ) in text
    assert f"◆ KL to final falls most {s['kl_falls']}" in text.replace("\n", " ") or not s["kl_falls"]


def test_print_result_prints_every_prompt(res):
    console = Console(record=True, width=160, file=io.StringIO())
    print_result(res, console=console)
    text = console.export_text()
    assert text.count("top-1 token per row x") == 2  # the narrow grid wraps its title
    assert "The cat the dog the" in text and "The dog sat" in text


def test_topk_shows_every_rank_asked_for_within_80_columns():
    from logitlens.views.terminal import topk_tables

    res = hand_result(k=8)
    console = Console(record=True, width=80, file=io.StringIO())
    print_result(res, console=console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    tables = topk_tables(res, 0, width=80)
    heads = [c.header for t in tables for c in t.columns if c.header.startswith("#")]
    assert heads == [f"#{i}" for i in range(1, 9)]  # all 8, split over tables, none dropped
    assert [c.header for c in tables[0].columns][-2:] == ["p / rank ␣Paris", "p / rank ␣Rome"]  # never cut
    assert "p / rank ␣Paris" in text and "p / rank ␣Rome" in text


@pytest.mark.parametrize(
    ("window", "start", "expected"),
    [
        (2, None, [3, 4]),
        (2, 1, [1, 2]),
        (3, -2, [3, 4]),
        (1, 0, [0]),
        (9, 2, [2, 3, 4]),
        (None, 1, [1, 2, 3]),
    ],
)
def test_grid_window_shows_exactly_the_chosen_positions(res, window, start, expected):
    table = grid_table(res, 0, max_columns=3, window=window, window_start=start)
    assert [c.header for c in table.columns[1:]] == [clip(res.tokens[0][j], 9) for j in expected]
    assert [c._cells[0].plain for c in table.columns[1:]] == [
        clip(res.token(res.top_ids[0, 0, j, 0]), 9) for j in expected
    ]
    if expected[-1] != 4:
        assert f"positions {expected[0]}-{expected[-1]} of 5" in str(table.title)


@pytest.mark.parametrize(
    ("window", "start", "message"),
    [(0, None, "--window must be at least 1"), (2, 5, "--window-start 5 is outside"), (2, -6, "outside")],
)
def test_grid_window_bad_values_raise_one_error(res, window, start, message):
    from logitlens import LogitLensError

    with pytest.raises(LogitLensError, match=message):
        grid_table(res, 0, window=window, window_start=start)


def test_render_and_print_result_take_the_window(res):
    console = Console(file=io.StringIO(), width=200, record=True)
    print_result(res, console=console, window=2, window_start=0)
    text = console.export_text()
    assert "positions 0-1 of 5" in text
    group = render(res, 0, width=200, window=1, window_start=-1)
    assert [c.header for c in group.renderables[0].columns[1:]] == [clip(res.tokens[0][4], 9)]


# ---- issue 19, item 9: readable small probabilities, a short default, a legend ----------------------------
@pytest.mark.parametrize(
    ("p", "text"),
    [(0.656, "0.656"), (0.041, "0.041"), (0.0029, "2.9e-3"), (2.94e-4, "2.9e-4"), (5.1e-13, "5.1e-13"),
     (0.0, "0"), (float("nan"), "–")],
)  # fmt: skip
def test_small_probabilities_read_as_numbers_not_zeros(p, text):
    """Guards: 0.000 / 3206 for every target below 0.0005 (target tracking unreadable in the terminal)."""
    assert prob_text(p) == text


def test_target_column_shows_a_tiny_probability_and_a_grouped_rank():
    res = hand_result()
    res.target_probs[0, 0, -1, 0] = 2.9e-4
    res.target_ranks[0, 0, -1, 0] = 3206
    table = topk_table(res, 0)
    assert table.columns[-2]._cells[0] == "2.9e-4 / 3,206"


def test_default_is_short_and_verbose_shows_every_rank():
    """Guards: 115-300 lines for one prompt (every top-k rank in several tables)."""
    res = hand_result(k=8, n_rows=6)
    short, full = (Console(record=True, width=80, file=io.StringIO()) for _ in range(2))
    print_result(res, console=short)
    print_result(res, console=full, verbose=True)
    s, f = short.export_text(), full.export_text()
    heads = lambda text: re.findall(r"┃ (#\d+)", text)  # noqa: E731
    assert len(s.splitlines()) < len(f.splitlines())
    assert set(heads(f)) == {f"#{i}" for i in range(1, 9)} and "#8" not in heads(s)
    assert re.search(r"#\d+-#8 with --verbose", s)


def test_a_legend_line_explains_the_symbols_shown():
    res = hand_result()
    console = Console(record=True, width=160, file=io.StringIO())
    print_result(res, console=console)
    legend = [line for line in console.export_text().splitlines() if line.startswith("symbols: ")]
    assert legend and "␣ space" in legend[0] and "◆ critical layer" in legend[0]
    assert "↵" not in legend[0]  # only the symbols that appear
