"""Terminal views of a LensResult with rich: the rows x positions grid, the top-k at one position and a
summary line. A thin renderer over ``views.model``.

Example:
    >>> print_result(res)
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..result import LensResult
from ..tokens import visible
from .model import ROW_AXIS, check_prompt, clip, heatmap_model, hover_records, prompt_summary, row_labels

__all__ = ["cell_style", "grid_table", "print_result", "render", "summary_line", "topk_table", "topk_tables"]


def cell_style(prob: float) -> str:
    """Background from dark (unsure) to bright green (sure); dark text on bright cells."""
    p = min(max(prob, 0.0), 1.0) if prob == prob else 0.0
    g = int(40 + 170 * p)
    r = b = int(30 + 30 * p)
    fg = "black" if p > 0.55 else "white"
    return f"{fg} on rgb({r},{g},{b})"


def grid_table(result: LensResult, prompt: int = 0, max_columns: int = 12, cell_width: int = 9) -> Table:
    """Rows (embed at the top) x the last ``max_columns`` positions; each cell the top-1 token,
    coloured by its probability; the header holds the input token, the footer the actual next token."""
    m = heatmap_model(result, prompt, "top_probs", hover=False)
    n_cols = len(m.columns)
    shown = list(range(n_cols))[-max_columns:]  # indices into the model's columns
    title = f"top-1 token per row x position (prompt {m.prompt + 1}"
    title += f", last {len(shown)} of {n_cols} positions)" if len(shown) < n_cols else ")"
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
            row.append(Text(f"{clip(tok, 12)} {prob:.2f}", style=cell_style(prob) if i == 0 else ""))
        for t in range(len(names)):
            row.append(f"{cell.value('target_probs', t):.3f} / {int(cell.value('target_ranks', t))}")
        table.add_row(label, *row)
    return table


def topk_tables(result: LensResult, prompt: int = 0, k: int | None = None, width: int = 80) -> list[Table]:
    """The top-k at the last column as tables that fit ``width`` characters: all k asked for, split over
    several tables when they do not fit one (the targets' columns in the first, never cut)."""
    k = min(k or result.top_k, result.top_k)
    target_w = sum(max(10, 11 + len(visible(n))) + 3 for n in result.target_names)
    first = max(1, (width - 16 - target_w) // 19)  # a top-k column: 12 characters of token, p, borders
    rest = max(1, (width - 16) // 19)
    tables = [topk_table(result, prompt, k=k, ranks=range(0, min(first, k)))]
    for start in range(min(first, k), k, rest):
        tables.append(
            topk_table(result, prompt, k=k, ranks=range(start, min(start + rest, k)), targets=False)
        )
    return tables


def summary_line(result: LensResult, prompt: int = 0) -> Text:
    """final top-1 (p) · where it stays top-1 from · the critical layers · each target's and the answer's
    first top-1 row."""
    s = prompt_summary(result, prompt)
    line = Text.assemble(
        ("final top-1 ", "dim"),
        (f"{s.final_top1} ({s.final_prob:.2f})", "bold"),
        ("  stays top-1 from: ", "dim"),
        (s.first_stable_label, "bold"),
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
        line.append(f"  first token p {a.prob:.3f}, rank {a.rank:,}", style="bold")
        line.append("  top-1 first ", style="dim")
        line.append(a.first_top1 or "never", style="bold")
    return line


def render(
    result: LensResult,
    prompt: int = 0,
    max_columns: int | None = None,
    k: int | None = None,
    width: int | None = None,
) -> Group:
    """Grid + the top-k tables (all k kept, default) + the summary lines for ``prompt``, ``width`` wide."""
    console_width = width or Console().width
    if max_columns is None:
        max_columns = max(3, (console_width - 14) // 10)
    return Group(
        grid_table(result, prompt, max_columns),
        *topk_tables(result, prompt, k=k, width=console_width),
        summary_line(result, prompt),
    )


def print_result(result: LensResult, console: Console | None = None, k: int | None = None) -> None:
    """Print every prompt of ``result``: the grid, the top-k asked for (default all kept), the summary."""
    console = console or Console()
    for i in range(result.n_prompts):
        if result.n_prompts > 1:
            label = result.prompts[i] if result.prompts and result.prompts[i] else f"prompt {i + 1}"
            console.rule(f"[bold]{label}")
        console.print(render(result, i, k=k, width=console.width))
