"""The view model: everything the views show of a LensResult, computed once as plain data.

No plotting or terminal library is imported here. The Plotly figures (``plotly.py``), the matplotlib image
(``png.py``), the rich tables (``terminal.py``) and the offline HTML pages (``report.py``) render what these
functions return and never read a result's tensors themselves.

Statistics are named as in the registry (``logitlens.core.stats``); older names ("kl", "top_prob",
"final_prob", "target_prob", "target_rank", "prob", "rank") resolve through ``stats.get_statistic``. A
statistic added with ``stats.register_statistic`` appears in every menu (``menu_entries``) and hover box
(``hover_records``) with no change here.

Colour rule for every statistic: its registry scale, dark at the high end unless ``reverse`` (low entropy,
low KL, rank 1 are dark), so that darker always reads as more certain / closer to the final prediction.

Shapes: R rows (embedding first), C existing (non-padding) decoded columns of one prompt, k top tokens.

Example:
    >>> m = heatmap_model(res, prompt=0, stat="kl")   # same grid as res.plot(stat="kl_to_final")
    >>> m.cells[-1]                                   # the last row's top-1 token at each column
"""

from __future__ import annotations

from logitlens.views.model.compare import (
    CompareModel,
    compare_grids,
    compare_model,
    distinct_names,
    shared_target,
)
from logitlens.views.model.curves import Curve, Panel, TrajectoryModel, curve, trajectory_model
from logitlens.views.model.grid import (
    Cell,
    MenuEntry,
    StatGrid,
    StatValue,
    hover_records,
    menu_entries,
    rank_ticks,
    stat_grid,
    stat_plane,
)
from logitlens.views.model.heatmap import HeatmapModel, heatmap_model
from logitlens.views.model.summary import (
    CRITICAL_MARK,
    ROW_AXIS,
    AnswerEnd,
    Change,
    PromptSummary,
    TargetEnd,
    prompt_summary,
    row_labels,
)
from logitlens.views.model.text import (
    CELL_CHARS,
    HOVER_K,
    LABEL_CHARS,
    check_prompt,
    clip,
    column_labels,
    format_value,
    next_labels,
    position_text,
    prob_text,
    prompt_label,
    stat_label,
    statistic,
    target_index,
)

__all__ = [
    "AnswerEnd",
    "CELL_CHARS",
    "CRITICAL_MARK",
    "Cell",
    "Change",
    "CompareModel",
    "Curve",
    "HOVER_K",
    "HeatmapModel",
    "LABEL_CHARS",
    "MenuEntry",
    "Panel",
    "PromptSummary",
    "ROW_AXIS",
    "StatGrid",
    "StatValue",
    "TargetEnd",
    "TrajectoryModel",
    "check_prompt",
    "clip",
    "column_labels",
    "compare_grids",
    "compare_model",
    "curve",
    "distinct_names",
    "format_value",
    "heatmap_model",
    "hover_records",
    "menu_entries",
    "next_labels",
    "position_text",
    "prob_text",
    "prompt_label",
    "prompt_summary",
    "rank_ticks",
    "row_labels",
    "shared_target",
    "stat_grid",
    "stat_label",
    "stat_plane",
    "statistic",
    "target_index",
    "trajectory_model",
]
