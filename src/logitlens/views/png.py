"""A static heatmap image of one prompt with matplotlib (Agg; no display, no browser, no pyplot state).

Same picture as ``views.plotly.heatmap``: rows (embedding at the bottom) x input positions, the top-1 token
written in each cell, colour = one statistic, the actual next token above each column (green with ✓ where
the final row's top-1 equals it). Sized so that 40 positions x 40 rows read at 100% zoom. A thin renderer
over ``views.model.heatmap_model``.

Example:
    >>> write_png(res, "eiffel.png", stat="top_probs")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LogitLensError
from ..result import LensResult
from .model import CELL_CHARS, LABEL_CHARS, HeatmapModel, clip, heatmap_model

__all__ = ["CELL_H", "CELL_W", "FONTS", "MATCH", "figure", "subtitle", "write_png"]

CELL_W = 0.78  # inches per position (about 8 characters of 9 pt text)
CELL_H = 0.26  # inches per row
FONT_SIZE = 9  # points, cell text and tick labels
# DejaVu Sans (bundled with matplotlib) has ␣ ↵ ⇥ ✓; the others, where installed, add CJK and more.
FONTS = ["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans", "Arial Unicode MS"]
MATCH = "#1a7f37"  # next-token labels the final top-1 gets right
MAX_TARGET_LINES = 3  # at most this many target lines under the title


def _fonts() -> list[str]:
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    return [f for f in FONTS if f in have] or ["sans-serif"]


def subtitle(m: HeatmapModel) -> str:
    """The grey lines under the title: model · colour · lens, then how each target ends at the last position."""
    sub = " · ".join(x for x in (m.model or "", f"colour: {m.grid.label}", f"{m.lens} lens") if x)
    for t in m.summary.targets[:MAX_TARGET_LINES]:
        sub += f"\n{t.name} at the last position: p {t.prob:.3f}, rank {t.rank:,} in the last row"
        sub += f", top-1 from row {t.first_row}" if t.first_row is not None else ", never top-1"
    return sub


def figure(
    result: LensResult, prompt: int = 0, stat: str = "top_probs", target: int | str = 0, *, dpi: int = 100
):
    """The matplotlib Figure of ``write_png`` (not attached to pyplot)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    m = heatmap_model(result, prompt, stat, target, hover=False)
    grid = m.grid
    n_rows, n_cols = grid.z.shape
    fonts = _fonts()

    n_lines = min(MAX_TARGET_LINES, len(m.summary.targets))  # a line per target under the title
    left, right, bottom = 0.9, 1.5, 0.85  # inches of margin: row names | colour bar, tick labels
    top = 1.45 + 0.2 * max(0, n_lines - 1)  # titles, target lines, next-token axis
    plot_w, plot_h = CELL_W * max(n_cols, 4), CELL_H * max(n_rows, 6)  # tiny grids get wider cells
    width, height = left + right + plot_w, top + bottom + plot_h
    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, plot_h / height))

    cmap = colormaps[grid.colorscale + ("_r" if grid.reverse else "")].with_extremes(bad="#f0f0f0")
    norm = Normalize(grid.zmin, grid.zmax)
    z = np.ma.masked_invalid(grid.z)
    mesh = ax.pcolormesh(
        np.arange(n_cols + 1) - 0.5,
        np.arange(n_rows + 1) - 0.5,
        z,
        cmap=cmap,
        norm=norm,
        edgecolors="white",
        linewidth=0.6,
    )
    rgba = cmap(norm(np.nan_to_num(grid.z, nan=grid.zmin)))  # (R, C, 4) to pick a readable text colour
    lum = 0.2126 * rgba[..., 0] + 0.7152 * rgba[..., 1] + 0.0722 * rgba[..., 2]
    text_kw: dict[str, Any] = {
        "ha": "center",
        "va": "center",
        "fontsize": FONT_SIZE,
        "family": fonts,
        "parse_math": False,
    }
    for r in range(n_rows):
        for c in range(n_cols):
            ax.text(
                c, r, clip(m.cells[r][c], CELL_CHARS), color="white" if lum[r, c] < 0.5 else "#111", **text_kw
            )

    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(-0.5, n_rows - 0.5)
    ax.set_yticks(range(n_rows), m.row_names, fontsize=FONT_SIZE, family=fonts)
    labels = [f"{clip(t, LABEL_CHARS)}\n{p}" for t, p in zip(m.tokens, m.positions, strict=True)]
    ax.set_xticks(range(n_cols), labels, fontsize=FONT_SIZE, family=fonts)
    ax.set_ylabel("row (layer)", fontsize=FONT_SIZE + 1, family=fonts)
    ax.set_xlabel("input token / position", fontsize=FONT_SIZE + 1, family=fonts)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)

    top_ax = ax.secondary_xaxis("top")
    nexts = list(zip(m.next_tokens, m.next_hits, strict=True))
    top_ax.set_xticks(range(n_cols), [("✓" if hit else "") + clip(t, LABEL_CHARS) for t, hit in nexts])
    top_ax.tick_params(length=0, labelsize=FONT_SIZE)
    for label, (_, hit) in zip(top_ax.get_xticklabels(), nexts, strict=True):
        label.set_fontfamily(fonts)
        if hit:
            label.set_color(MATCH)
            label.set_fontweight("bold")
    top_ax.set_xlabel(
        "actual next token (✓ green: the final top-1 equals it)" if n_cols >= 6 else "next token",
        fontsize=FONT_SIZE,
        family=fonts,
        color="#444",
    )
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels(), *top_ax.get_xticklabels()]:
        label.set_parse_math(False)

    cax = fig.add_axes(((left + plot_w + 0.25) / width, bottom / height, 0.16 / width, plot_h / height))
    bar = fig.colorbar(mesh, cax=cax)
    bar.set_label(grid.label, fontsize=FONT_SIZE + 1, family=fonts, parse_math=False)
    bar.ax.tick_params(labelsize=FONT_SIZE)
    if grid.tickvals is not None:
        bar.set_ticks(grid.tickvals, labels=grid.ticktext)
    bar.outline.set_visible(False)

    fig.text(
        0.5 / width,
        1 - 0.2 / height,
        clip(m.text, 110),
        fontsize=FONT_SIZE + 3,
        family=fonts,
        weight="bold",
        va="top",
        parse_math=False,
    )
    fig.text(
        0.5 / width,
        1 - 0.5 / height,
        subtitle(m),
        fontsize=FONT_SIZE,
        family=fonts,
        color="#555",
        va="top",
        linespacing=1.5,
        parse_math=False,
    )
    return fig


def write_png(
    result: LensResult,
    path: str | Path,
    prompt: int = 0,
    stat: str = "top_probs",
    target: int | str = 0,
    *,
    dpi: int = 100,
) -> Path:
    """Write a static PNG heatmap of ``prompt`` coloured by ``stat`` and return its path.

    stat: any drawable statistic ("top_probs", "final_probs", "entropy", "kl_to_final", "target_probs",
    "target_ranks", ...; older names such as "kl" work too; see ``views.model.stat_grid``). dpi=100 is
    readable at 100% zoom (about 78 px per position, 26 px per row); raise it for print.
    """
    fig = figure(result, prompt, stat, target, dpi=dpi)
    path = Path(path)
    try:
        fig.savefig(path, dpi=dpi, facecolor="white", metadata={"Software": "logitlens"})
    except OSError as exc:
        raise LogitLensError(f"cannot write the PNG to {path}: {exc.strerror or exc}") from None
    return path
