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
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import LogitLensError
from .plots import (
    FONT,
    _colorbar,
    _json_z,
    available_stats,
    check_prompt,
    clip,
    column_labels,
    curve,
    esc,
    heatmap,
    hover_texts,
    prompt_label,
    stat_grid,
    target_index,
    trajectory,
    visible,
)
from .result import LensResult

if TYPE_CHECKING:
    import plotly.graph_objects as go

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
  vertical-align: top; max-width: 420px; }
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
    from . import __version__

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
    df = df.rename(columns={c: visible(c) for c in df.columns if c.startswith(("p(", "rank("))})
    table = df.to_html(
        index=False, escape=True, border=0, classes="summary", float_format=lambda x: f"{x:.3f}"
    )
    return scrub_text(table)


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
        parts.append(f"<h2>Prompt {i}: “{scrub_text(label)}”</h2>")
        parts.append(figure_div(heatmap(result, i, menu=True, title=""), div_id=f"heatmap-{i}"))
    if result.target_names:
        parts.append("<h2>Targets across rows</h2>")
        parts.append(figure_div(trajectory(result, stat="prob"), div_id="targets"))
    parts.append("<h2>KL to the final row and entropy across rows</h2>")
    parts.append(figure_div(trajectory(result, stat="kl"), div_id="kl"))
    parts.append(figure_div(trajectory(result, stat="entropy"), div_id="entropy"))
    return page(title, "\n".join(parts))


def write_html(result: LensResult, path: str | Path, title: str | None = None) -> Path:
    """Write ONE self-contained HTML report of ``result`` and return its path.

    The page holds: the summary table, one heatmap per prompt (top-1 token per cell, a drop-down for the
    colouring statistic, top-k on hover), the targets' probability and rank across rows, and the KL to
    final / entropy curves. plotly.js is embedded; the page opens offline and loads nothing.
    """
    return _write_page(path, report_html(result, title), "the HTML report")


def _write_page(path: str | Path, text: str, what: str) -> Path:
    """Write a page; a failure is one LogitLensError line naming ``what`` and the path."""
    path = Path(path)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LogitLensError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    return path


def notebook_html(result: LensResult, prompt: int = 0) -> str:
    """Jupyter output: the heatmap of ``prompt`` (statistic menu included) with plotly.js embedded.

    Self-contained on purpose: it renders in JupyterLab, the classic notebook, VS Code and exported HTML,
    online or not, without a notebook extension; the cost is about 4.8 MB per displayed result. For light
    notebooks call ``result.plot().show()``, which goes through plotly's own renderers.
    """
    fig = heatmap(result, prompt, menu=True)
    return f"<script>{offline_plotlyjs()}</script>" + figure_div(fig)


# ---- comparing models ---------------------------------------------------------------------------------
def _names(results: Sequence[LensResult], names: Sequence[str] | None) -> list[str]:
    if names is None:
        names = [str(r.meta.get("model") or f"model {i}") for i, r in enumerate(results)]
    names = list(names)
    if len(names) != len(results):
        raise LogitLensError(f"got {len(results)} results but {len(names)} names; give one name per result")
    seen: dict[str, int] = {}
    out = []
    for n in names:  # distinct names, so that legends and titles stay apart
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _shared_target(results: Sequence[LensResult], target: int | str) -> list[int] | None:
    """Each result's index of ``target``, or None when some result does not track it."""
    out = []
    for r in results:
        try:
            out.append(target_index(r, target))
        except LogitLensError:
            return None
    names = {results[i].target_names[t] for i, t in enumerate(out)}
    return out if len(names) == 1 else None


def compare_figure(
    results: Sequence[LensResult],
    names: Sequence[str] | None = None,
    prompt: int | Sequence[int] = 0,
    *,
    stat: str = "top_prob",
    target: int | str = 0,
    position: int = -1,
) -> go.Figure:
    """Several models (or checkpoints) on one prompt: heatmaps side by side, curves on relative depth.

    Top: one heatmap per result (rows x positions, top-1 token per cell) on one shared colour scale, with a
    drop-down for the statistic. Bottom: KL to final, entropy and (when every result tracks ``target``) the
    target's probability at ``position`` (default: the last token), against relative depth row / (R - 1),
    so that models of different depth line up. ``prompt``: an index into every result, or one index per
    result. Names default to each result's ``meta["model"]``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not results:
        raise LogitLensError("compare needs at least one result")
    names = _names(results, names)
    if isinstance(prompt, int):
        prompt = [prompt] * len(results)
    if len(prompt) != len(results):
        raise LogitLensError(f"got {len(results)} results but {len(prompt)} prompt indices")
    prompts = [check_prompt(r, p) for r, p in zip(results, prompt, strict=True)]
    targets = _shared_target(results, target)
    curves = [("kl", "KL to final (nats)"), ("entropy", "entropy (nats)")]
    if targets is not None:
        curves.append(("prob", f"p({visible(results[0].target_names[targets[0]])})"))
    n, m = len(results), len(curves)
    max_rows = max(r.n_rows for r in results)
    max_cols = max(len(r.columns(p)) for r, p in zip(results, prompts, strict=True))
    heat_h, curve_h = 22 * max_rows + 90, 300
    show_text = max_cols * n <= 48
    width = max(900, n * (max_cols * 50 + 90) + 200) if show_text else 1500
    specs = [[{"colspan": m}] + [None] * (m - 1) for _ in range(n)]
    specs_bottom = [[{"colspan": n}] + [None] * (n - 1) for _ in range(m)]
    fig = make_subplots(
        rows=2,
        cols=n * m,
        specs=[sum(specs, []), sum(specs_bottom, [])],
        row_heights=[heat_h, curve_h],
        vertical_spacing=170 / (heat_h + curve_h + 260),
        horizontal_spacing=min(0.9 / (n * m - 1) if n * m > 1 else 0.2, 75 / width),
        subplot_titles=[esc(x) for x in names] + [esc(label) for _, label in curves],
    )
    grids = []
    for i, (res, p) in enumerate(zip(results, prompts, strict=True)):
        grid = stat_grid(res, p, stat, targets[i] if targets and stat.startswith("target") else target)
        grids.append(grid)
        n_cols = len(res.columns(p))
        fig.add_trace(
            go.Heatmap(
                z=_json_z(grid.z),
                x=list(range(n_cols)),
                y=list(range(res.n_rows)),
                text=[[esc(clip(t, 7)) for t in row] for row in res.top_tokens(p)],
                texttemplate="%{text}" if show_text else None,
                textfont={"size": 10, "family": FONT},
                hovertext=hover_texts(res, p),
                hoverinfo="text",
                coloraxis="coloraxis",
                xgap=1,
                ygap=1,
                name=esc(names[i]),
            ),
            row=1,
            col=i * m + 1,
        )
        fig.update_xaxes(
            tickmode="array",
            tickvals=list(range(n_cols)),
            ticktext=[esc(t) for t in column_labels(res, p, 8)],
            tickangle=-45 if max_cols * n > 12 else 0,
            showgrid=False,
            zeroline=False,
            row=1,
            col=i * m + 1,
        )
        fig.update_yaxes(
            tickmode="array",
            tickvals=list(range(res.n_rows)),
            ticktext=[esc(r) for r in res.row_names],
            showgrid=False,
            zeroline=False,
            title_text="row (layer)" if i == 0 else None,
            row=1,
            col=i * m + 1,
        )
    fig.update_layout(coloraxis=_shared_coloraxis(grids))
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
    for c, (kind, label) in enumerate(curves):
        for i, (res, p) in enumerate(zip(results, prompts, strict=True)):
            y = curve(res, p, kind, targets[i] if kind == "prob" else 0, position)
            depth = np.arange(res.n_rows) / max(1, res.n_rows - 1)
            fig.add_trace(
                go.Scatter(
                    x=depth,
                    y=y,
                    text=[esc(r) for r in res.row_names],
                    name=esc(names[i]),
                    legendgroup=names[i],
                    showlegend=c == 0,
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"color": colours[i % len(colours)]},
                    hovertemplate=f"{esc(names[i])}<br>row %{{text}} (depth %{{x:.2f}})<br>{esc(label)} %{{y:.3f}}<extra></extra>",
                ),
                row=2,
                col=c * n + 1,
            )
        fig.update_xaxes(
            title_text="relative depth",
            range=[-0.02, 1.02],
            row=2,
            col=c * n + 1,
            showgrid=True,
            gridcolor="#eee",
        )
        fig.update_yaxes(rangemode="tozero", row=2, col=c * n + 1, showgrid=True, gridcolor="#eee")
        if kind == "prob":
            fig.update_yaxes(range=[0, 1.02], row=2, col=c * n + 1)
    head = esc(prompt_label(results[0], prompts[0], 90))
    where = "last position" if position == -1 else f"column {position}"
    fig.update_layout(
        title={
            "text": f"{head}<br><span style='font-size:12px;color:#555'>curves at the {where}</span>",
            "x": 0.01,
        },
        font={"family": FONT, "size": 12},
        width=width,
        height=heat_h + curve_h + 260,
        plot_bgcolor="white",
        hoverlabel={"font": {"family": FONT, "size": 12}, "align": "left"},
        legend={"orientation": "h", "y": -0.08, "yanchor": "top", "x": 0},
        margin={"t": 130, "l": 70, "r": 110, "b": 60},
        updatemenus=[_compare_menu(results, prompts, targets, stat, target)],
    )
    return fig


def _shared_coloraxis(grids: list) -> dict[str, Any]:
    g = grids[0]
    axis: dict[str, Any] = {
        "colorscale": g.colorscale,
        "reversescale": g.reverse,
        "cmin": g.zmin,
        "cmax": max(x.zmax for x in grids),
        "colorbar": {**_colorbar(g), "len": 0.5, "y": 1.0, "yanchor": "top"},
    }
    if g.tickvals is not None:
        top = int(axis["cmax"])
        axis["colorbar"].update(
            tickvals=list(range(top + 1)), ticktext=[f"{10**e:,}" for e in range(top + 1)]
        )
    return axis


def _compare_menu(results, prompts, targets, current: str, target) -> dict[str, Any]:
    stats = [
        s
        for s, t in available_stats(results[0])
        if t == 0 and (targets is not None or not s.startswith("target"))
    ]
    buttons = []
    for s in stats:
        grids = [
            stat_grid(r, p, s, targets[i] if targets and s.startswith("target") else target)
            for i, (r, p) in enumerate(zip(results, prompts, strict=True))
        ]
        axis = _shared_coloraxis(grids)
        layout = {f"coloraxis.{k}": v for k, v in axis.items() if k != "colorbar"}
        bar = axis["colorbar"]
        layout.update(
            {
                "coloraxis.colorbar.title.text": bar["title"]["text"],
                "coloraxis.colorbar.tickvals": bar.get("tickvals"),
                "coloraxis.colorbar.ticktext": bar.get("ticktext"),
            }
        )
        data = {"z": [_json_z(g.z) for g in grids]}
        buttons.append(
            {"label": grids[0].label, "method": "update", "args": [data, layout, list(range(len(grids)))]}
        )
    active = stats.index(current) if current in stats else 0
    return {
        "buttons": buttons,
        "active": active,
        "direction": "down",
        "x": 1.0,
        "xanchor": "right",
        "y": 1.0,
        "yanchor": "bottom",
        "pad": {"b": 40},
    }


def compare(
    models: Sequence[Any],
    prompt: str | int = 0,
    *,
    names: Sequence[str] | None = None,
    targets=None,
    top_k: int = 10,
    stat: str = "top_prob",
    target: int | str = 0,
    position: int = -1,
) -> go.Figure:
    """Compare models on one prompt: ``compare_figure`` over LogitLens objects and/or LensResults.

    models: LogitLens objects (each is run on ``prompt``, which must then be a string, with ``targets`` and
    ``top_k``) or LensResults (``prompt``: an index, or a string found in each result's prompts).

    Example:
        >>> fig = logitlens.compare([lens_a, lens_b], "The Eiffel Tower is in the city of", targets=[" Paris"])
    """
    results = []
    for i, m in enumerate(models):
        if isinstance(m, LensResult):
            results.append(m)
        elif hasattr(m, "run"):
            if not isinstance(prompt, str):
                raise LogitLensError("to run models, give the prompt as a string")
            results.append(m.run(prompt, targets=targets, top_k=top_k))
        else:
            raise LogitLensError(
                f"models[{i}] is a {type(m).__name__}: give LogitLens objects or LensResults"
            )
    if names is None:
        names = [
            getattr(m, "name", None) or r.meta.get("model") or f"model {i}"
            for i, (m, r) in enumerate(zip(models, results, strict=True))
        ]
    index = [prompt if isinstance(prompt, int) else _find_prompt(r, prompt) for r in results]
    return compare_figure(results, names, index, stat=stat, target=target, position=position)


def _find_prompt(result: LensResult, prompt: str) -> int:
    if prompt in result.prompts:
        return result.prompts.index(prompt)
    raise LogitLensError(f"prompt {prompt!r} is not in this result; its prompts are {result.prompts}")


def write_compare_html(
    results: Sequence[LensResult],
    names: Sequence[str] | None,
    path: str | Path,
    prompt: int = 0,
    *,
    title: str | None = None,
    target: int | str = 0,
    position: int = -1,
) -> Path:
    """Write ONE self-contained HTML page comparing ``results`` on ``prompt`` and return its path.

    The page holds a table (model, rows, final top-1 and its probability, first row from which the final
    top-1 stays top-1, as a row name and as relative depth) and ``compare_figure``.
    """
    if not results:
        raise LogitLensError("compare needs at least one result")
    names = _names(results, names)
    title = title or "logitlens · " + " vs ".join(names)
    rows = []
    for name, res in zip(names, results, strict=True):
        p = check_prompt(res, prompt)
        s = res.summary().iloc[p]
        depth = res.row_names.index(s["first_stable_row"]) / max(1, res.n_rows - 1)
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(x))}</td>"
                for x in (
                    name,
                    res.n_rows,
                    s["final_top1"],
                    f"{s['final_prob']:.3f}",
                    s["first_stable_row"],
                    f"{depth:.2f}",
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("model", "rows", "final top-1", "p", "final top-1 stable from row", "at relative depth")
    )
    table = f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    body = "\n".join(
        [
            f"<h1>{scrub_text(html.escape(title))}</h1>",
            f'<p class="meta">“{scrub_text(html.escape(prompt_label(results[0], check_prompt(results[0], prompt), 200)))}”</p>',
            scrub_text(table),
            figure_div(
                compare_figure(results, names, prompt, target=target, position=position), div_id="compare"
            ),
        ]
    )
    return _write_page(path, page(title, body), "the comparison")
