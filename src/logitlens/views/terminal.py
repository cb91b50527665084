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
from .model import check_prompt, clip, heatmap_model, hover_records, prompt_summary

__all__ = ["cell_style", "grid_table", "print_result", "render", "summary_line", "topk_table"]


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
    title = f"top-1 token per row x position (prompt {m.prompt}"
    title += f", last {len(shown)} of {n_cols} positions)" if len(shown) < n_cols else ")"
    table = Table(title=title, show_footer=True, header_style="bold", footer_style="dim", pad_edge=False)
    table.add_column("row", justify="right", style="bold", footer="next →", min_width=6, no_wrap=True)
    for c in shown:
        table.add_column(
            clip(m.tokens[c], cell_width),
            footer=clip(m.next_tokens[c], cell_width),
            justify="center",
            no_wrap=True,
        )
    probs = m.grid.values  # (R, C) probability of each cell's top-1
    for r, name in enumerate(m.row_names):
        cells = [Text(clip(m.cells[r][c], cell_width), style=cell_style(float(probs[r, c]))) for c in shown]
        table.add_row(name, *cells)
    return table


def topk_table(result: LensResult, prompt: int = 0, position: int = -1, k: int | None = None) -> Table:
    """Each row's top-k tokens with probabilities at one decoded column (default: the last)."""
    prompt = check_prompt(result, prompt)
    j = result.columns(prompt)[position]
    k = min(k or result.top_k, result.top_k)
    cells = [row[0] for row in hover_records(result, prompt, k=k, columns=[j])]  # (R,) one Cell per row
    pos, token = cells[0].position, cells[0].token
    table = Table(title=f"top-{k} per row after {token!r} (position {pos})")
    table.add_column("row", justify="right", style="bold", min_width=5, no_wrap=True)
    for i in range(k):
        table.add_column(f"#{i + 1}", no_wrap=True)
    for name in result.target_names:
        table.add_column(f"p / rank {visible(name)}", justify="right", no_wrap=True)
    for cell in cells:
        row: list[Text | str] = []
        for i in range(k):
            tok, prob = cell.top[i] if i < len(cell.top) else ("", float("nan"))
            row.append(Text(f"{clip(tok, 12)} {prob:.2f}", style=cell_style(prob) if i == 0 else ""))
        for t in range(len(result.target_names)):
            row.append(f"{cell.value('target_probs', t):.3f} / {int(cell.value('target_ranks', t))}")
        table.add_row(cell.row, *row)
    return table


def summary_line(result: LensResult, prompt: int = 0) -> Text:
    """final top-1 (p) · the row it stays top-1 from · the largest KL drop · each target's first top-1 row."""
    s = prompt_summary(result, prompt)
    line = Text.assemble(
        ("final top-1 ", "dim"),
        (f"{s.final_top1} ({s.final_prob:.2f})", "bold"),
        ("  stays top-1 from row ", "dim"),
        (s.first_stable_row, "bold"),
        ("  largest KL drop at row ", "dim"),
        (s.critical_row, "bold"),
    )
    for t in s.targets:
        line.append(f"  {t.name} top-1 from row ", style="dim")
        line.append(t.first_row if t.first_row is not None else "never", style="bold")
    return line


def render(result: LensResult, prompt: int = 0, max_columns: int | None = None, k: int = 5) -> Group:
    """Grid + top-k table + one summary line for ``prompt``."""
    console_width = Console().width
    if max_columns is None:
        max_columns = max(3, (console_width - 8) // 10)
    k_fit = max(1, (console_width - 8 - 16 * len(result.target_names)) // 16)
    return Group(
        grid_table(result, prompt, max_columns),
        topk_table(result, prompt, k=min(k, k_fit)),
        summary_line(result, prompt),
    )


def print_result(result: LensResult, console: Console | None = None, k: int = 5) -> None:
    """Print every prompt of ``result``."""
    console = console or Console()
    for i in range(result.n_prompts):
        if result.n_prompts > 1:
            label = result.prompts[i] if result.prompts and result.prompts[i] else f"prompt {i}"
            console.rule(f"[bold]{label}")
        console.print(render(result, i, k=k))
