"""Terminal views with rich: kept as an import path; the code lives in ``logitlens.views.terminal``."""

from .views.terminal import cell_style, grid_table, print_result, render, summary_line, topk_table

__all__ = ["cell_style", "grid_table", "print_result", "render", "summary_line", "topk_table"]
