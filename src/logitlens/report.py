"""Standalone offline HTML pages: kept as an import path; the code lives in ``logitlens.views.report``
(``compare``, which runs models, in ``logitlens.comparison``).

Example:
    >>> from logitlens.report import write_html; write_html(res, "report.html")
"""

from .comparison import compare
from .views.plotly import compare_figure
from .views.report import (
    CSP,
    PLOT_CONFIG,
    figure_div,
    notebook_html,
    offline_plotlyjs,
    page,
    report_html,
    scrub_js,
    scrub_text,
    summary_table,
    write_compare_html,
    write_html,
)

__all__ = [
    "CSP",
    "PLOT_CONFIG",
    "compare",
    "compare_figure",
    "figure_div",
    "notebook_html",
    "offline_plotlyjs",
    "page",
    "report_html",
    "scrub_js",
    "scrub_text",
    "summary_table",
    "write_compare_html",
    "write_html",
]
