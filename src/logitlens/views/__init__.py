"""Views of a LensResult: ``model`` computes, as plain data, everything a view shows (cell texts, colour
grids, labels, next tokens, stable and critical rows, hover records, menus, curves); ``plotly``, ``png``,
``terminal`` and ``report`` (offline HTML) render it. Import the submodule you need: each pulls in its own
library (plotly, matplotlib, rich) only when used.
"""

__all__: list[str] = []
