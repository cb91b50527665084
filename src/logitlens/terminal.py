"""Terminal views of a LensResult with rich: the rows x positions grid and the top-k at one position."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .result import LensResult
from .tokens import visible


def _cell_style(prob: float) -> str:
    """Background from dark (unsure) to bright green (sure); dark text on bright cells."""
    p = min(max(prob, 0.0), 1.0) if prob == prob else 0.0
    g = int(40 + 170 * p)
    r = b = int(30 + 30 * p)
    fg = "black" if p > 0.55 else "white"
    return f"{fg} on rgb({r},{g},{b})"


def _clip(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "…"


def grid_table(result: LensResult, prompt: int = 0, max_columns: int = 12, cell_width: int = 9) -> Table:
    """Rows (embed at the top) x the last ``max_columns`` positions; each cell the top-1 token,
    coloured by its probability; the header holds the input token, the footer the actual next token."""
    cols = result.columns(prompt)
    shown = cols[-max_columns:]
    toks = result.tokens[prompt]
    ids = result.input_ids[prompt]
    title = f"top-1 token per row x position (prompt {prompt}"
    title += f", last {len(shown)} of {len(cols)} positions)" if len(shown) < len(cols) else ")"
    table = Table(title=title, show_footer=True, header_style="bold", footer_style="dim", pad_edge=False)
    table.add_column("row", justify="right", style="bold", footer="next →", min_width=6, no_wrap=True)
    for j in shown:
        pos = int(result.positions[prompt, j])
        nxt = result.token(ids[pos + 1]) if pos + 1 < len(ids) else ""
        table.add_column(
            _clip(toks[pos], cell_width), footer=_clip(nxt, cell_width), justify="center", no_wrap=True
        )
    for r, name in enumerate(result.row_names):
        cells = []
        for j in shown:
            tid = int(result.top_ids[prompt, r, j, 0])
            prob = float(result.top_probs[prompt, r, j, 0])
            cells.append(Text(_clip(result.token(tid), cell_width), style=_cell_style(prob)))
        table.add_row(name, *cells)
    return table


def topk_table(result: LensResult, prompt: int = 0, position: int = -1, k: int | None = None) -> Table:
    """Each row's top-k tokens with probabilities at one decoded column (default: the last)."""
    cols = result.columns(prompt)
    j = cols[position]
    pos = int(result.positions[prompt, j])
    k = min(k or result.top_k, result.top_k)
    table = Table(title=f"top-{k} per row after {result.tokens[prompt][pos]!r} (position {pos})")
    table.add_column("row", justify="right", style="bold", min_width=5, no_wrap=True)
    for i in range(k):
        table.add_column(f"#{i + 1}", no_wrap=True)
    for t in result.target_names:
        table.add_column(f"p / rank {visible(t)}", justify="right", no_wrap=True)
    for r, name in enumerate(result.row_names):
        cells = []
        for i in range(k):
            prob = float(result.top_probs[prompt, r, j, i])
            tok = result.token(int(result.top_ids[prompt, r, j, i]))
            cells.append(Text(f"{_clip(tok, 12)} {prob:.2f}", style=_cell_style(prob) if i == 0 else ""))
        for t in range(len(result.target_names)):
            p = float(result.target_probs[prompt, r, j, t])
            rank = int(result.target_ranks[prompt, r, j, t])
            cells.append(f"{p:.3f} / {rank}")
        table.add_row(name, *cells)
    return table


def render(result: LensResult, prompt: int = 0, max_columns: int | None = None, k: int = 5) -> Group:
    """Grid + top-k table + one summary line for ``prompt``."""
    console_width = Console().width
    if max_columns is None:
        max_columns = max(3, (console_width - 8) // 10)
    one = result.select(prompt)  # summarise this prompt only, not all of them for each prompt
    s = one.summary().iloc[0]
    line = Text.assemble(
        ("final top-1 ", "dim"),
        (f"{s['final_top1']} ({s['final_prob']:.2f})", "bold"),
        ("  stays top-1 from row ", "dim"),
        (str(s["first_stable_row"]), "bold"),
        ("  largest KL drop at row ", "dim"),
        (str(s["largest_kl_drop_row"]), "bold"),
    )
    for t, name in enumerate(result.target_names):
        first = one.first_row(target=t)[0]
        line.append(f"  {visible(name)} top-1 from row ", style="dim")
        line.append(str(first) if first is not None else "never", style="bold")
    k_fit = max(1, (console_width - 8 - 16 * len(result.target_names)) // 16)
    return Group(grid_table(result, prompt, max_columns), topk_table(result, prompt, k=min(k, k_fit)), line)


def print_result(result: LensResult, console: Console | None = None, k: int = 5) -> None:
    """Print every prompt of ``result``."""
    console = console or Console()
    for i in range(result.n_prompts):
        if result.n_prompts > 1:
            label = result.prompts[i] if result.prompts and result.prompts[i] else f"prompt {i}"
            console.rule(f"[bold]{label}")
        console.print(render(result, i, k=k))
