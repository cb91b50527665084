"""A static image of statistics across rows with matplotlib (Agg; no pyplot state): the PNG twin of
``views.plotly.trajectory``.

"target_probs" draws two panels, each target's probability (linear, or log with ``log_probs=True``) and its
rank (log scale, rank 1 on top); any other drawable statistic one panel. One line per (prompt, target), or
per prompt; x = the rows, embeddings on the left. A thin renderer over ``views.model.trajectory_model``.

Example:
    >>> res = lens.run(prompt, targets=[concept(lens, ["mountain"]), concept(lens, ["montagne"])])
    >>> write_trajectory_png(res, "concepts.png", log_probs=True)
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from logitlens.engine.result import LensResult
from logitlens.views.model import Panel, TrajectoryModel, clip, prompt_label, trajectory_model
from logitlens.views.plotly import COLORS
from logitlens.views.png import font_families, image_format, save_figure

__all__ = ["trajectory_figure", "write_trajectory_png"]

ROW_W = 0.24  # inches per row on the x axis
PANEL_H = 2.9  # inches per panel
FONT_SIZE = 9  # points
PROB_FLOOR = 1e-30  # the log-probability axis starts no lower than this (fp32 zeros sit there)
TITLE_CHARS_PER_INCH = 11  # characters of 11 pt DejaVu Sans per inch of width, with room to spare


def trajectory_figure(
    result: LensResult,
    targets: Sequence[int | str] | None = None,
    prompts: Sequence[int] | None = None,
    stat: str = "target_probs",
    *,
    position: int | str = -1,
    title: str | None = None,
    log_probs: bool = False,
    dpi: int = 100,
    answers: bool = False,
):
    """The matplotlib Figure of ``write_trajectory_png`` (not attached to pyplot)."""
    from matplotlib.figure import Figure

    m = trajectory_model(result, targets, prompts, stat, position, answers=answers)
    fonts = font_families()
    n_rows = len(m.row_names)
    width = max(7.0, 1.6 + ROW_W * n_rows)
    height = 1.3 + PANEL_H * len(m.panels)
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    axes = fig.subplots(len(m.panels), 1, sharex=True, squeeze=False)[:, 0]
    for k, (ax, panel) in enumerate(zip(axes, m.panels, strict=True)):
        _draw_panel(ax, panel, log_probs, fonts)
        if k == 0 and len(panel.curves) > 1:
            ax.legend(loc="upper left", fontsize=FONT_SIZE, prop={"family": fonts})
    last = axes[-1]
    last.set_xticks(range(n_rows), m.row_names, rotation=90 if n_rows > 20 else 0, fontsize=FONT_SIZE)
    last.set_xlabel("row (layer)", fontsize=FONT_SIZE, family=fonts)
    text = title or _title(result, m, prompts)
    chars = max(30, int(width * TITLE_CHARS_PER_INCH))  # wrapped to the figure's width, never cut at its edge
    text = "\n".join(w for line in text.split("\n") for w in (textwrap.wrap(line, chars) or [""]))
    fig.suptitle(text, fontsize=FONT_SIZE + 2, family=fonts, x=0.01, ha="left", parse_math=False)
    return fig


def write_trajectory_png(
    result: LensResult,
    path: str | Path,
    targets: Sequence[int | str] | None = None,
    prompts: Sequence[int] | None = None,
    stat: str = "target_probs",
    *,
    position: int | str = -1,
    title: str | None = None,
    log_probs: bool = False,
    dpi: int = 100,
    answers: bool = False,
) -> Path:
    """Write the lines across rows of ``trajectory_figure`` and return the path; the suffix picks the format
    (.png, .svg, .pdf, .jpg / .jpeg).

    Args:
        result: the ``LensResult``.
        path: the image file.
        targets: target indices or names (default: all).
        prompts: prompt indices (default: all).
        stat: "target_probs" (each target's probability and rank) or a per-row statistic.
        position: a decoded column (default the last) or "mean" (statistics without targets).
        title: the figure's title (default: the model, the lens, where the lines are read, and the prompt
            when there is one).
        log_probs: draw the probability on a log scale, where the early rows' 1e-10 still shows.
        answers: add each prompt's answer (dashed: its first token's probability and rank).
        dpi: resolution.

    Returns:
        The path written.

    Example:
        >>> write_trajectory_png(res, "paris.png", log_probs=True)
    """
    image_format(path)  # before drawing: a bad suffix fails at once
    fig = trajectory_figure(
        result,
        targets,
        prompts,
        stat,
        position=position,
        title=title,
        log_probs=log_probs,
        dpi=dpi,
        answers=answers,
    )
    return save_figure(fig, path, dpi)


def _draw_panel(ax, panel: Panel, log_probs: bool, fonts: list[str]) -> None:
    """One panel's lines and its y axis: probabilities 0..1 (or log), ranks log with 1 on top."""
    import numpy as np

    ys = [np.asarray(c.y, dtype=float) for c in panel.curves]
    log_p = panel.kind == "prob" and log_probs
    if panel.kind == "rank":
        ys = [np.where(y >= 1, y, np.nan) for y in ys]  # -1: a cell that does not exist
    positive = np.concatenate([y[np.isfinite(y) & (y > 0)] for y in ys] + [np.ones(1)])
    floor = max(float(positive.min()) / 10, PROB_FLOOR)
    for i, (c, y) in enumerate(zip(panel.curves, ys, strict=True)):
        color = COLORS[i % len(COLORS)]
        low = log_p & np.isfinite(y) & (y < floor)  # 0 in fp32 (underflow): a ▼ on the axis's floor
        y = np.where(low, floor, y)
        style = "--" if c.target is not None and c.target < 0 else "-"  # an answer: dashed
        ax.plot(range(len(y)), y, style, marker="o", markersize=3, linewidth=1.5, color=color, label=c.name)
        if low.any():
            x = np.flatnonzero(low)
            ax.plot(x, y[x], linestyle="none", marker="v", markersize=7, color=color)
    if log_p and any((np.isfinite(y) & (y < floor)).any() for y in ys):
        note = "▼ p = 0 in fp32 (below the axis)"
        ax.text(0.99, 0.03, note, transform=ax.transAxes, ha="right", fontsize=FONT_SIZE - 1, family=fonts)
    if panel.kind == "rank":
        ax.set_yscale("log")
        ax.invert_yaxis()
        label = "rank (log, 1 on top)"
    elif log_p:
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, 1.5)
        label = "probability (log)"
    elif panel.kind in ("prob", "bool"):
        ax.set_ylim(-0.02, 1.02)
        label = panel.label
    else:
        ax.set_ylim(bottom=0)
        label = panel.label
    ax.set_ylabel(label, fontsize=FONT_SIZE, family=fonts)
    ax.tick_params(labelsize=FONT_SIZE)
    ax.grid(True, which="major", color="#ddd", linewidth=0.6)


def _title(result: LensResult, m: TrajectoryModel, prompts: Sequence[int] | None) -> str:
    """The model, the lens and where the lines are read; the prompt when there is one."""
    meta = result.meta
    head = " · ".join(
        str(x) for x in (meta.get("model"), f"{meta.get('lens', 'logit')} lens", m.title) if x is not None
    )
    shown = list(range(result.n_prompts)) if prompts is None else list(prompts)
    if len(shown) == 1:
        head += "\n" + clip(prompt_label(result, shown[0], None), 110)
    return head
