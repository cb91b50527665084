"""Plotly figures of a LensResult: kept as an import path; the code lives in ``logitlens.views.plotly``
(figures) and ``logitlens.views.model`` (the numbers and texts they show)."""

from .views.model import (
    CELL_CHARS,
    LABEL_CHARS,
    StatGrid,
    check_prompt,
    clip,
    column_labels,
    curve,
    next_labels,
    prompt_label,
    stat_grid,
    target_index,
)
from .views.plotly import (
    COLORS,
    FONT,
    colorbar,
    compare_figure,
    esc,
    heatmap,
    hover_text,
    json_z,
    restyle,
    trajectory,
)

__all__ = [
    "CELL_CHARS",
    "COLORS",
    "FONT",
    "LABEL_CHARS",
    "StatGrid",
    "check_prompt",
    "clip",
    "colorbar",
    "column_labels",
    "compare_figure",
    "curve",
    "esc",
    "heatmap",
    "hover_text",
    "json_z",
    "next_labels",
    "prompt_label",
    "restyle",
    "stat_grid",
    "target_index",
    "trajectory",
]
