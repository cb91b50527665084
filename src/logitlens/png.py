"""A static PNG heatmap with matplotlib: kept as an import path; the code lives in ``logitlens.views.png``.

Example:
    >>> from logitlens.png import write_png; write_png(res, "lens.png")
"""

from .views.png import CELL_H, CELL_W, FONTS, MATCH, figure, subtitle, write_png

__all__ = ["CELL_H", "CELL_W", "FONTS", "MATCH", "figure", "subtitle", "write_png"]
