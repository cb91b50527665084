"""Terminal views of a LensResult with rich: the rows x positions grid, the top-k at one position and a
summary line. A thin renderer over ``views.model``.

Example:
    >>> print_result(res)
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from logitlens.core.tokens import visible
from logitlens.engine.result import LensResult
from logitlens.errors import LogitLensError
from logitlens.views.model import (
    ROW_AXIS,
    check_prompt,
    clip,
    heatmap_model,
    hover_records,
    prob_text,
    prompt_summary,
    row_labels,
)

__all__ = [
    "LEGEND",
    "cell_style",
    "check_window",
    "grid_table",
    "legend_line",
    "print_result",
    "render",
    "summary_line",
    "topk_table",
    "topk_tables",
    "window_columns",
]


def cell_style(prob: float) -> str:
    """Background from dark (unsure) to bright green (sure); dark text on bright cells."""
    p = min(max(prob, 0.0), 1.0) if prob == prob else 0.0
    g = int(40 + 170 * p)
    r = b = int(30 + 30 * p)
    fg = "black" if p > 0.55 else "white"
    return f"{fg} on rgb({r},{g},{b})"


def window_columns(positions: list[int], n_tokens: int, size: int, start: int | None = None) -> list[int]:
    """Which of a prompt's decoded columns (given as their input ``positions``) a grid window shows.

    size: how many columns at most; start: the first input position shown (negative counts from the end of
    the prompt, ``n_tokens`` long), None for the last ``size`` columns. A bad size or start raises a
    LogitLensError that names the option.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise LogitLensError(f"--window must be at least 1 (positions shown), got {size!r}")
    if start is None:
        return list(range(len(positions)))[-size:]
    if isinstance(start, bool) or not isinstance(start, int) or not -n_tokens <= start < n_tokens:
        raise LogitLensError(
            f"--window-start {start!r} is outside the prompt's {n_tokens} positions: give 0..{n_tokens - 1} "
            f"or -{n_tokens}..-1 (from the end)"
        )
    first = start % n_tokens
    shown = [c for c, pos in enumerate(positions) if pos >= first][:size]
    if not shown:
        raise LogitLensError(
            f"--window-start {start}: no decoded position at or after {first} (check --positions)"
        )
    return shown


def check_window(result: LensResult, window: int | None = None, window_start: int | None = None) -> None:
    """Raise the LogitLensError that ``grid_table`` would raise for any prompt of ``result``, before printing."""
    for prompt in range(result.n_prompts):
        positions = [p for p in result.positions[prompt].tolist() if p >= 0]  # no padding columns
        window_columns(positions, len(result.tokens[prompt]), window or 1, window_start)


def grid_table(
    result: LensResult,
    prompt: int = 0,
    max_columns: int = 12,
    cell_width: int = 9,
    *,
    window: int | None = None,
    window_start: int | None = None,
) -> Table:
    """Rows (embed at the top) x a window of positions; each cell the top-1 token, coloured by its
    probability; the header holds the input token, the footer the actual next token.

    The window: ``window`` positions (default ``max_columns``, what fits the width) from the input position
    ``window_start`` (negative counts from the end; default: the last positions).
    """
    m = heatmap_model(result, prompt, "top_probs", hover=False)
    n_cols = len(m.columns)
    size = max_columns if window is None else window
    shown = window_columns(m.positions, len(result.tokens[m.prompt]), size, window_start)
    if len(shown) == n_cols:
        where = ""
    elif shown[-1] == n_cols - 1:
        where = f", last {len(shown)} of {n_cols} positions"
    else:
        where = f", positions {m.positions[shown[0]]}-{m.positions[shown[-1]]} of {n_cols}"
    title = f"top-1 token per row x position (prompt {m.prompt + 1}{where})"
    title += f" · {m.lens_label}" if m.lens_label else ""
    table = Table(title=title, show_footer=True, header_style="bold", footer_style="dim", pad_edge=False)
    table.caption = ROW_AXIS.replace("after block", "rows: after block")
    table.add_column("row", justify="right", style="bold", footer="next →", min_width=6, no_wrap=True)
    for c in shown:
        table.add_column(
            clip(m.tokens[c], cell_width),
            footer=clip(m.next_tokens[c], cell_width),
            justify="center",
            no_wrap=True,
        )
    probs = m.grid.values  # (R, C) probability of each cell's top-1
    for r, name in enumerate(m.row_labels):
        cells = [Text(clip(m.cells[r][c], cell_width), style=cell_style(float(probs[r, c]))) for c in shown]
        table.add_row(name, *cells)
    return table


def topk_table(
    result: LensResult,
    prompt: int = 0,
    position: int = -1,
    k: int | None = None,
    *,
    ranks: range | None = None,
    targets: bool = True,
) -> Table:
    """Each row's top-k tokens with probabilities at one decoded column (default: the last).

    ranks: which of the top-k to show (default all k, from #1); targets: add each target's p / rank.
    """
    prompt = check_prompt(result, prompt)
    j = result.columns(prompt)[position]
    k = min(k or result.top_k, result.top_k)
    ranks = range(k) if ranks is None else ranks
    cells = [row[0] for row in hover_records(result, prompt, k=k, columns=[j])]  # (R,) one Cell per row
    pos, token = cells[0].position, cells[0].token
    part = "" if (ranks.start, ranks.stop) == (0, k) else f", #{ranks.start + 1}-#{ranks.stop}"
    table = Table(title=f"top-{k} per row after {token!r} (position {pos}{part})")
    table.add_column("row", justify="right", style="bold", min_width=5, no_wrap=True)
    labels = row_labels(result, prompt_summary(result, prompt).critical_rows)
    for i in ranks:
        table.add_column(f"#{i + 1}", no_wrap=True)
    names = result.target_names if targets else []
    for name in names:
        table.add_column(f"p / rank {visible(name)}", justify="right", no_wrap=True, min_width=10)
    for label, cell in zip(labels, cells, strict=True):
        row: list[Text | str] = []
        for i in ranks:
            tok, prob = cell.top[i] if i < len(cell.top) else ("", float("nan"))
            row.append(
                Text(f"{clip(tok, 12)} {prob_text(prob, 2)}", style=cell_style(prob) if i == 0 else "")
            )
        for t in range(len(names)):
            rank = int(cell.value("target_ranks", t))
            row.append(f"{prob_text(cell.value('target_probs', t))} / {rank:,}" if rank >= 0 else "–")
        table.add_row(label, *row)
    return table


def topk_tables(result: LensResult, prompt: int = 0, k: int | None = None, width: int = 80) -> list[Table]:
    """The top-k at the last column as tables that fit ``width`` characters: all k asked for, split over
    several tables when they do not fit one (the targets' columns in the first, never cut)."""
    k = min(k or result.top_k, result.top_k)
    whole = topk_table(result, prompt, k=k)  # measured, then cut into tables of the columns that fit

    def column_width(column) -> int:  # its widest cell or header, with padding and a border
        cells = [c.plain if isinstance(c, Text) else str(c) for c in column._cells]
        return max(len(str(column.header)), *map(len, cells)) + 3

    widths = [column_width(c) for c in whole.columns]
    row_w, rank_w, target_w = widths[0] + 1, widths[1 : k + 1], sum(widths[k + 1 :])
    groups: list[list[int]] = [[]]
    room = width - row_w - target_w
    for i, w in enumerate(rank_w):
        if groups[-1] and w > room:
            groups.append([])
            room = width - row_w
        groups[-1].append(i)
        room -= w
    return [
        topk_table(result, prompt, k=k, ranks=range(g[0], g[-1] + 1), targets=n == 0)
        for n, g in enumerate(groups)
    ]


def summary_line(result: LensResult, prompt: int = 0) -> Text:
    """final top-1 (p) · where it stays top-1 from · the critical layers · each target's and the answer's
    first top-1 row."""
    s = prompt_summary(result, prompt)
    line = Text()
    if not s.at_last_token:
        line.append(
            f"at position {s.position} {visible(s.token)} (the prompt's last position was not decoded)\n",
            style="dim",
        )
    line.append_text(
        Text.assemble(
            ("final top-1 ", "dim"),
            (f"{s.final_top1} ({s.final_prob:.2f})", "bold"),
            ("  stays top-1 from: ", "dim"),
            (s.first_stable_label, "bold"),
        )
    )
    for t in s.targets:
        line.append(f"  {t.name} top-1 from: ", style="dim")
        line.append(t.first_label or "never", style="bold")
    if s.rises:
        line.append("\n◆ its log-probability rises most ", style="dim")
        line.append(", ".join(f"{c.label} (+{c.size:.2f})" for c in s.rises), style="bold")
    if s.falls:
        line.append("\n◆ KL to final falls most ", style="dim")
        line.append(", ".join(f"{c.label} (-{c.size:.2f})" for c in s.falls), style="bold")
    if s.answer is not None:
        a = s.answer
        line.append(f"\nanswer {a.text} ", style="dim")
        line.append(f"log p {a.logprob:.2f}", style="bold")
        line.append(f" ({a.n_tokens} token{'s' if a.n_tokens != 1 else ''}, last row)", style="dim")
        line.append(f"  first token p {prob_text(a.prob)}, rank {a.rank:,}", style="bold")
        line.append("  top-1 first ", style="dim")
        line.append(a.first_top1 or "never", style="bold")
    return line


# What the symbols in tokens and row labels mean (core.tokens.visible, views.model.CRITICAL_MARK).
LEGEND = {
    "␣": "space",
    "↵": "newline",
    "⇥": "tab",
    "␍": "carriage return",
    "⍽": "no-break space",
    "◆": "critical layer",
    "…": "cut to fit",
}


def legend_line(texts) -> Text | None:
    """One dim line saying what each symbol of ``LEGEND`` found in ``texts`` means (None: none found)."""
    joined = "".join(texts)
    parts = [f"{mark} {meaning}" for mark, meaning in LEGEND.items() if mark in joined]
    return Text("symbols: " + " · ".join(parts), style="dim") if parts else None


def render(
    result: LensResult,
    prompt: int = 0,
    max_columns: int | None = None,
    k: int | None = None,
    width: int | None = None,
    *,
    window: int | None = None,
    window_start: int | None = None,
    verbose: bool = False,
) -> Group:
    """Grid + the top-k at the last position + the summary lines + a legend of the symbols, ``width`` wide.

    verbose=False (default) shows the top-k ranks that fit one table (a caption says how to see the rest);
    verbose=True shows all k kept, over as many tables as they need. window, window_start: which positions
    the grid shows (see ``grid_table``; default the last that fit)."""
    console_width = width or Console().width
    if max_columns is None:
        max_columns = max(3, (console_width - 14) // 10)
    grid = grid_table(result, prompt, max_columns, window=window, window_start=window_start)
    tables = topk_tables(result, prompt, k=k, width=console_width)
    if not verbose and len(tables) > 1:
        shown = sum(1 for c in tables[0].columns if str(c.header).startswith("#"))
        kept = min(k or result.top_k, result.top_k)
        tables[0].caption = f"#{shown + 1}-#{kept} with --verbose (verbose=True)"
        tables = tables[:1]
    texts = [str(c.header) + str(c.footer) for c in grid.columns]
    texts += [
        cell.plain if isinstance(cell, Text) else str(cell)
        for t in [grid, *tables]
        for c in t.columns
        for cell in c._cells
    ]
    legend = legend_line(texts)
    return Group(grid, *tables, summary_line(result, prompt), *([legend] if legend else []))


def print_result(
    result: LensResult,
    console: Console | None = None,
    k: int | None = None,
    *,
    window: int | None = None,
    window_start: int | None = None,
    verbose: bool = False,
) -> None:
    """Print every prompt of ``result``: the grid (its window of positions: see ``grid_table``), the top-k
    at the last position (the ranks that fit one table; all asked for with ``verbose=True``), the summary
    and a legend of the symbols."""
    check_window(result, window, window_start)  # a bad window: one error before anything is printed
    console = console or Console()
    for i in range(result.n_prompts):
        if result.n_prompts > 1:
            label = result.prompts[i] if result.prompts and result.prompts[i] else f"prompt {i + 1}"
            console.rule(f"[bold]{label}")
        console.print(
            render(
                result, i, k=k, width=console.width, window=window, window_start=window_start, verbose=verbose
            )
        )
