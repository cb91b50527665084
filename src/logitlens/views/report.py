"""Standalone HTML: the report of one result, the comparison of models, and the notebook view.

Every page is ONE file that opens offline: plotly.js is embedded from the installed plotly package, and a
Content-Security-Policy forbids loading anything from anywhere. plotly.js carries URL strings (SVG
namespaces, map-tile defaults, link targets, licence comments); ``scrub_js`` writes each ``https://`` as
``https\\x3a\\/\\/``, which is the same text inside JavaScript strings and template literals and changes
nothing in comments, so that the file holds no ``http://`` or ``https://`` at all and a scan for URLs is
exact. The report's own text writes the colon as ``&#58;``.

Example:
    >>> write_html(res, "eiffel.html")
    >>> write_compare_html([res_a, res_b], ["small", "large"], "compare.html")
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from logitlens.core.files import write_atomic
from logitlens.core.tokens import visible
from logitlens.engine.result import LensResult
from logitlens.errors import LogitLensError
from logitlens.views.model import check_prompt, distinct_names, prob_text, prompt_label, prompt_summary
from logitlens.views.plotly import FONT, compare_figure, heatmap, trajectory

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "CSP",
    "PLOT_CONFIG",
    "figure_div",
    "notebook_html",
    "offline_plotlyjs",
    "page",
    "report_html",
    "scrub_js",
    "scrub_text",
    "summary_table",
    "write_trajectory_html",
    "write_compare_html",
    "write_html",
]

_URL = re.compile(r"(https?):(?://)", re.IGNORECASE)
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; worker-src blob:"
)
PLOT_CONFIG = {"displaylogo": False, "responsive": False, "toImageButtonOptions": {"scale": 2}}
_STYLE = """
body { font-family: %(font)s; margin: 24px 32px; color: #1f2328; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
p.meta { color: #57606a; margin: 0 0 16px; font-size: 13px; }
table.summary { border-collapse: collapse; font-size: 13px; }
table.summary th, table.summary td { border-bottom: 1px solid #d0d7de; padding: 4px 10px; text-align: left;
  vertical-align: top; max-width: 260px; overflow-wrap: break-word; }
table.summary { max-width: 100%%; }
table.summary th { background: #f6f8fa; }
.figure { overflow-x: auto; margin-bottom: 8px; }
footer { margin-top: 32px; color: #57606a; font-size: 12px; }
"""


# ---- the offline pieces -------------------------------------------------------------------------------
def scrub_js(code: str) -> str:
    """``https://`` written as ``https\\x3a\\/\\/`` (the same string to JavaScript, no URL to a scan).

    Only for JavaScript source in which such text sits in string or template literals and comments (true
    of plotly.js and of plotly's figure JSON); a regular-expression literal cannot hold an unescaped ``//``.
    """
    return _URL.sub(lambda m: m.group(1) + r"\x3a\/\/", code)


def scrub_text(text: str) -> str:
    """``http://`` in HTML text written as ``http&#58;//`` (shown the same, not a URL to a scan)."""
    return _URL.sub(lambda m: m.group(1) + "&#58;//", text)


@lru_cache(maxsize=1)
def offline_plotlyjs() -> str:
    """The installed plotly package's plotly.js, scrubbed (see ``scrub_js``); about 4.8 MB."""
    from plotly.offline import get_plotlyjs

    code = scrub_js(get_plotlyjs())
    if "</script" in code.lower():  # cannot happen with plotly.js as shipped; never write a broken page
        raise LogitLensError("the installed plotly.js contains '</script' and cannot be embedded inline")
    return code


def figure_div(fig: go.Figure, div_id: str | None = None) -> str:
    """A figure as a <div> + inline <script> (no plotly.js), scrubbed of URLs."""
    div = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG, div_id=div_id)
    return f'<div class="figure">{scrub_js(div)}</div>'


def page(title: str, body: str) -> str:
    """A complete offline page: CSP, style, plotly.js inline, then ``body``."""
    from logitlens.core.version import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{scrub_text(html.escape(title))}</title>\n"
        f"<style>{_STYLE % {'font': FONT}}</style>\n"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f"<script>{offline_plotlyjs()}</script>\n</head>\n<body>\n{body}\n"
        f"<footer>Made with logitlens {html.escape(__version__)}. This file is self-contained and loads "
        "nothing from the network.</footer>\n</body>\n</html>\n"
    )


def _meta_line(result: LensResult) -> str:
    m = result.meta
    bits = [
        str(m.get("model", "model ?")),
        f"{m.get('lens', 'logit')} lens",
        f"{result.n_rows} rows",
        f"{result.n_prompts} prompt{'s' if result.n_prompts != 1 else ''}",
        f"top-{result.top_k}",
    ]
    if m.get("dtype"):
        bits.append(str(m["dtype"]))
    return " · ".join(html.escape(b) for b in bits)


def summary_table(result: LensResult) -> str:
    """``result.summary()`` as an HTML table (targets shown with ␣ for spaces)."""
    df = result.summary()
    # the block indices repeat the row labels beside them: the page keeps the words
    df = df.drop(columns=["first_stable_layer", "logprob_rise_layers", "kl_fall_layers"])
    if "answer" in df:
        df["answer"] = [visible(a) if isinstance(a, str) else a for a in df["answer"]]
    for c in df.columns:  # probabilities that read at every size (2.9e-4, not 0.000)
        if c == "final_prob" or c == "answer_prob" or c.startswith("p("):
            df[c] = [prob_text(float(x)) for x in df[c]]
    df = df.rename(
        columns=lambda c: SUMMARY_HEADERS.get(c) or (visible(c) if c.startswith(("p(", "rank(")) else c)
    )
    table = df.to_html(
        index=False, escape=True, border=0, classes="summary", float_format=lambda x: f"{x:.3f}"
    )
    return scrub_text(table)


# result.summary()'s columns as the page's headers: words, not snake_case names
SUMMARY_HEADERS = {
    "prompt": "prompt",
    "position": "position",
    "token": "token",
    "final_top1": "final top-1",
    "final_prob": "its p",
    "first_stable_row": "top-1 from",
    "logprob_rises": "log p rises most",
    "kl_falls": "KL falls most",
    "answer": "answer",
    "answer_logprob": "answer log p",
    "answer_prob": "answer p (first token)",
    "answer_rank": "answer rank (first token)",
    "answer_first_top1": "answer top-1 from",
}


# ---- the report ---------------------------------------------------------------------------------------
def report_html(result: LensResult, title: str | None = None) -> str:
    """The text of ``write_html``'s page."""
    title = title or f"logitlens · {result.meta.get('model', 'result')}"
    parts = [
        f"<h1>{scrub_text(html.escape(title))}</h1>",
        f'<p class="meta">{scrub_text(_meta_line(result))}</p>',
    ]
    parts += ["<h2>Summary (last position of each prompt)</h2>", summary_table(result)]
    for i in range(result.n_prompts):
        label = html.escape(prompt_label(result, i, 120))
        parts.append(f"<h2>Prompt {i + 1}: “{scrub_text(label)}”</h2>")
        parts.append(figure_div(heatmap(result, i, menu=True, title=""), div_id=f"heatmap-{i}"))
    if result.target_names:
        parts.append("<h2>Targets across rows</h2>")
        parts.append(figure_div(trajectory(result, stat="target_probs"), div_id="targets"))
    parts.append("<h2>KL to the final row and entropy across rows</h2>")
    parts.append(figure_div(trajectory(result, stat="kl_to_final"), div_id="kl"))
    parts.append(figure_div(trajectory(result, stat="entropy"), div_id="entropy"))
    return page(title, "\n".join(parts))


def write_html(result: LensResult, path: str | Path, title: str | None = None) -> Path:
    """Write ONE self-contained HTML report of ``result`` and return its path.

    The page holds: the summary table, one heatmap per prompt (top-1 token per cell, a drop-down for the
    colouring statistic, top-k on hover), the targets' probability and rank across rows, and the KL to
    final / entropy curves. plotly.js is embedded; the page opens offline and loads nothing.

    Args:
        result: the ``LensResult``.
        path: the HTML file.
        title: the page's title (default: the model's name).

    Returns:
        The path written.

    Example:
        >>> write_html(res, "report.html")   # what `logitlens run ... --html report.html` writes
    """
    return _write_page(path, report_html(result, title), "the HTML report")


def write_trajectory_html(result: LensResult, path: str | Path, title: str | None = None) -> Path:
    """Write ONE self-contained page of the targets, concepts and answers of ``result`` across rows (their
    probability, with a linear | log switch, and their rank at each prompt's last decoded position) and
    return its path; ``logitlens run --trajectory F.html``."""
    title = title or f"logitlens · {result.meta.get('model', 'result')} · across rows"
    parts = [
        f"<h1>{scrub_text(html.escape(title))}</h1>",
        f'<p class="meta">{scrub_text(_meta_line(result))}</p>',
    ]
    for i in range(result.n_prompts):
        label = html.escape(prompt_label(result, i, 200))
        parts.append(f'<p class="meta">prompt {i + 1}: “{scrub_text(label)}”</p>')
    fig = trajectory(result, stat="target_probs", answers=True)
    parts.append(figure_div(fig, div_id="trajectory"))
    return _write_page(path, page(title, "\n".join(parts)), "the trajectory page")


def _write_page(path: str | Path, text: str, what: str) -> Path:
    """Write a page; a failure is one LogitLensError line naming ``what`` and the path."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what)


_NOTEBOOK = {"plotlyjs_sent": False}  # plotly.js goes into the first notebook output of a session only


def notebook_html(result: LensResult, prompt: int = 0, *, embed_plotlyjs: bool | None = None) -> str:
    """Jupyter output: the heatmap of ``prompt`` (statistic menu included), offline.

    plotly.js (~4.8 MB) is embedded in the first such output of the Python session only; later outputs
    use it from the page (embed_plotlyjs=True forces it, e.g. after clearing that first output). A result
    of several prompts says so and how to show the others.
    """
    embed = not _NOTEBOOK["plotlyjs_sent"] if embed_plotlyjs is None else embed_plotlyjs
    _NOTEBOOK["plotlyjs_sent"] = _NOTEBOOK["plotlyjs_sent"] or embed
    fig = heatmap(result, prompt, menu=True)
    head = f"<script>{offline_plotlyjs()}</script>" if embed else _PLOTLY_MISSING
    note = ""
    if result.n_prompts > 1:
        note = (
            f'<p style="font-size:13px;color:#57606a">prompt {prompt + 1} of {result.n_prompts}; show another '
            "with <code>res.plot(prompt=i)</code> (i from 0), or all with "
            "<code>logitlens.views.report.write_html(res, 'report.html')</code></p>"
        )
    return head + figure_div(fig) + note


# shown by a notebook output whose page lacks plotly.js (the first output, which carried it, was cleared)
_PLOTLY_MISSING = (
    "<script>if (!window.Plotly) { document.currentScript.insertAdjacentHTML('afterend', "
    "'<p>plotly.js is not on this page (the output that carried it was cleared): display the result with "
    "logitlens.views.report.notebook_html(res, embed_plotlyjs=True)</p>'); }</script>"
)


# ---- comparing models ---------------------------------------------------------------------------------
def write_compare_html(
    results: Sequence[LensResult],
    names: Sequence[str] | None,
    path: str | Path,
    prompt: int | Sequence[int] = 0,
    *,
    title: str | None = None,
    target: int | str = 0,
    position: int = -1,
) -> Path:
    """Write ONE self-contained HTML page comparing ``results`` on ``prompt`` (an index, or several: one
    section each) and return its path.

    Each section holds a table (model, rows, final top-1 and its probability, the row from which the final
    top-1 stays top-1, and its relative depth) and ``compare_figure``.
    """
    if not results:
        raise LogitLensError("compare needs at least one result")
    names = distinct_names(results, names)
    title = title or "logitlens · " + " vs ".join(names)
    head = "".join(
        f"<th>{h}</th>"
        for h in ("model", "rows", "final top-1", "p", "final top-1 stays top-1 from", "at relative depth")
    )
    parts = [f"<h1>{scrub_text(html.escape(title))}</h1>"]
    for i, p in enumerate([prompt] if isinstance(prompt, int) else list(prompt)):
        rows = []
        for name, res in zip(names, results, strict=True):
            s = prompt_summary(res, check_prompt(res, p))
            cells = [name, res.n_rows, s.final_top1, f"{s.final_prob:.3f}", s.first_stable_label]
            cells.append(f"{s.first_stable_depth:.2f}")
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
        table = f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        label = prompt_label(results[0], check_prompt(results[0], p), 200)
        parts += [
            f'<p class="meta">“{scrub_text(html.escape(label))}”</p>',
            scrub_text(table),
            figure_div(
                compare_figure(results, names, p, target=target, position=position),
                div_id="compare" if i == 0 else f"compare-{i}",
            ),
        ]
    body = "\n".join(parts)
    return _write_page(path, page(title, body), "the comparison")
