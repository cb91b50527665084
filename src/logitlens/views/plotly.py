"""Plotly figures of a LensResult: the rows x positions heatmap, the per-row trajectories and the side by
side comparison of models. A thin renderer over ``views.model``: every number, text and colour range comes
from there; this module only lays it out. plotly is imported inside the functions that build figures, so
importing this module stays cheap.

Example:
    >>> fig = heatmap(res, stat="kl_to_final")      # same as res.plot(stat="kl_to_final")
    >>> fig = trajectory(res, stat="target_probs")  # same as res.plot_trajectory()
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from logitlens.engine.result import LensResult
from logitlens.views.model import (
    CELL_CHARS,
    ROW_AXIS,
    Cell,
    HeatmapModel,
    Panel,
    StatGrid,
    clip,
    column_labels,
    compare_grids,
    compare_model,
    heatmap_model,
    rank_ticks,
    stat_grid,
    trajectory_model,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "COLORS",
    "FONT",
    "colorbar",
    "compare_figure",
    "esc",
    "heatmap",
    "hover_text",
    "json_z",
    "restyle",
    "trajectory",
]

FONT = "DejaVu Sans, Segoe UI, Helvetica, Arial, sans-serif"  # DejaVu has the glyphs ␣ ↵ ⇥
MATCH = "#1a7f37"  # next-token labels the final top-1 gets right
PAGE_WIDTH = 1336  # pixels a figure may take: a 1400-pixel window less the report's margins
WINDOW_COLUMNS = 40  # positions a heatmap shows at first (the last 40); drag sideways for the others
CELL_PX = 66  # the widest heatmap cell; narrower ones when more positions than 17 share the page
TEXT_CELL_PX = 50  # narrower cells drop their text (unreadable), keep their hover
HEADER_CHARS = 7  # column headers: at most this many characters, so that neighbours never touch
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f"]


def esc(text: str) -> str:
    """Escape &, <, > so that plotly shows a token literally instead of reading it as markup."""
    return html.escape(text, quote=False)


def json_z(z: np.ndarray) -> list[list[float | None]]:
    """(R, C) colour values as JSON-ready lists, NaN and inf as None (an empty cell)."""
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in z.tolist()]


def colorbar(grid: StatGrid) -> dict[str, Any]:
    bar: dict[str, Any] = {"title": {"text": esc(grid.label), "side": "right"}, "thickness": 14}
    if grid.tickvals is not None:
        bar.update(tickvals=grid.tickvals, ticktext=grid.ticktext)
    return bar


def restyle(grid: StatGrid) -> dict[str, Any]:
    """The trace attributes a statistic sets (the statistic menu's buttons)."""
    return {
        "z": [json_z(grid.z)],
        "zmin": [grid.zmin],
        "zmax": [grid.zmax],
        "colorscale": [grid.colorscale],
        "reversescale": [grid.reverse],
        "colorbar.title.text": [esc(grid.label)],
        "colorbar.tickvals": [grid.tickvals],
        "colorbar.ticktext": [grid.ticktext],
    }


def hover_text(cell: Cell) -> str:
    """A hover box: row, position, token and next token; every statistic of the cell; its top-k."""
    nxt = f" → next <b>{esc(cell.next_token)}</b>" if cell.next_token else ""
    head = f"<b>row {esc(cell.row)}</b> · position {cell.position} <b>{esc(cell.token)}</b>{nxt}"
    plain = [f"{esc(v.label)} {esc(v.text)}" for v in cell.values if v.target is None]
    lines = [" · ".join(plain[i : i + 2]) for i in range(0, len(plain), 2)]
    targets: dict[int, list[str]] = {}
    for v in cell.values:
        if v.target is not None:
            targets.setdefault(v.target, []).append(f"{esc(v.label)} {esc(v.text)}")
    lines += [" · ".join(parts) for parts in targets.values()]
    top = "<br>".join(f"{i + 1:>2}. {esc(tok)}  {p:.3f}" for i, (tok, p) in enumerate(cell.top))
    return "<br>".join([head, *lines, top])


# ---- the heatmap --------------------------------------------------------------------------------------
def heatmap(
    result: LensResult,
    prompt: int = 0,
    stat: str = "top_probs",
    target: int | str = 0,
    *,
    menu: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Rows (embedding at the bottom, last layer at the top) x input positions of one prompt.

    Each cell shows its top-1 token and is coloured by ``stat`` (any drawable statistic; see
    ``views.model.stat_grid``); hovering shows every statistic of the cell and its top-k. The bottom axis
    holds the input tokens (with their positions, so repeated tokens stay distinct columns), the top axis
    the actual next token, bold green with ✓ where the final row's top-1 equals it. menu=True adds a
    drop-down to switch between statistics. title: plotly markup (escape tokens with ``esc``); None = the
    prompt, "" = only the model / statistic line.
    """
    m = heatmap_model(result, prompt, stat, target)
    return _heatmap_figure(result, m, menu=menu, title=title)


def _heatmap_figure(result: LensResult, m: HeatmapModel, *, menu: bool, title: str | None) -> go.Figure:
    import plotly.graph_objects as go

    n_rows, n_cols = len(m.row_names), len(m.columns)
    # A window of the last positions that fits a 1400-pixel page with readable cells; dragging the heatmap
    # sideways moves it (double-click: every position). The figure never outgrows the page, so the row
    # labels, the colour bar and the statistic menu stay in view.
    window = min(n_cols, WINDOW_COLUMNS)
    cell_w = max(1, min(CELL_PX, (PAGE_WIDTH - 190) // window))  # up to 40 positions in a 1336-pixel figure
    show_text = cell_w >= TEXT_CELL_PX
    narrow = not show_text  # headers stand upright, one line each, so that neighbours never overlap
    fig = go.Figure(_heatmap_traces(m, show_text))
    width = max(620, 190 + cell_w * window)
    n_menu = len(m.menu) if menu else 0
    windowed = window < n_cols
    height = max(210 + 22 * n_rows, 130 + 34 * n_menu) + (110 if narrow else 0)  # the open drop-down
    if title is None:
        title = esc(clip(m.text, max(20, (width - 250) // 9)))
    title_for = _heatmap_caption(m, title, window if windowed else None)
    fig.update_layout(
        title={
            "text": title_for(m.grid.label),
            "x": 0.01,
            "y": 1 - 14 / height,
            "yref": "container",
            "yanchor": "top",
        },
        font={"family": FONT, "size": 12},
        width=width,
        height=height,
        margin={
            "l": 110,
            "r": 40,
            "t": (140 if title else 120) + (18 if windowed else 0) + (60 if narrow else 0),
            "b": 130 if narrow else 80,
        },
        dragmode="pan" if windowed else "zoom",
        plot_bgcolor="white",
        hoverlabel={"font": {"family": FONT, "size": 12}, "align": "left"},
        **_heatmap_axes(m, window, narrow),
    )
    if menu:  # its top 40 px below the figure's top
        plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
        y = 1 + (fig.layout.margin.t - 40) / plot_h
        fig.update_layout(updatemenus=[_stat_menu(result, m, y, title_for)])
    return fig


def _heatmap_traces(m: HeatmapModel, show_text: bool) -> list:
    """The heatmap (top-1 token text, hover records) and an invisible trace that makes plotly draw the top
    axis of next tokens."""
    import plotly.graph_objects as go

    grid = m.grid
    n_rows, n_cols = len(m.row_names), len(m.columns)
    assert m.hover is not None
    cells = go.Heatmap(
        z=json_z(grid.z),
        x=list(range(n_cols)),
        y=list(range(n_rows)),
        text=[[esc(clip(t, CELL_CHARS)) for t in row] for row in m.cells],
        texttemplate="%{text}" if show_text else None,
        textfont={"size": 11, "family": FONT},
        hovertext=[[hover_text(c) for c in row] for row in m.hover],
        hoverinfo="text",
        zmin=grid.zmin,
        zmax=grid.zmax,
        colorscale=grid.colorscale,
        reversescale=grid.reverse,
        colorbar=colorbar(grid),
        xgap=1,
        ygap=1,
        name=grid.stat,
    )
    top_axis = go.Scatter(
        x=list(range(n_cols)),
        y=[0] * n_cols,
        xaxis="x2",
        mode="markers",
        marker={"opacity": 0},
        hoverinfo="skip",
        showlegend=False,
    )
    return [cells, top_axis]


def _heatmap_caption(m: HeatmapModel, title: str, window: int | None):
    """label -> the figure's title text: ``title``, then a grey line (model · colour: label · lens, the
    answer, the window of positions). The statistic menu rewrites it with each entry's label."""
    colour = f"colour: {esc(m.grid.label)}"
    sub = " · ".join(x for x in (esc(m.model) if m.model else "", colour, esc(m.lens_label)) if x)
    if m.summary.answer is not None:
        a = m.summary.answer
        tokens = f"{a.n_tokens} token{'s' if a.n_tokens != 1 else ''}"
        sub += f"<br>answer {esc(a.text)}: log p {a.logprob:.2f} ({tokens}), first token rank {a.rank:,}"
        sub += f", top-1 first {esc(a.first_top1)}" if a.first_top1 else ", never top-1"
    if window is not None:
        sub += (
            f"<br>the last {window} of {len(m.columns)} positions: drag the heatmap sideways for the others"
        )
    head = f"{title}<br>" if title else ""

    def title_for(label: str) -> str:
        grey = sub.replace(colour, f"colour: {esc(label)}", 1)
        return f"{head}<span style='font-size:12px;color:#555'>{grey}</span>"

    return title_for


def _heatmap_axes(m: HeatmapModel, window: int, narrow: bool) -> dict[str, Any]:
    """The layout's x axis (input token and position), x axis 2 (next token, ✓ green where the final top-1
    equals it) and y axis (row labels) of a heatmap showing the last ``window`` columns."""
    n_rows, n_cols = len(m.row_names), len(m.columns)
    xs, axis_font = list(range(n_cols)), {"family": FONT, "size": 12}
    marks = []
    for tok, hit in zip(m.next_tokens, m.next_hits, strict=True):
        text = esc(clip(tok, HEADER_CHARS))
        marks.append(f"<span style='color:{MATCH}'><b>✓{text}</b></span>" if hit else text)
    return {
        "xaxis": {
            "tickmode": "array",
            "tickvals": xs,
            "ticktext": [  # token and position, so that repeated tokens stay distinct labels
                f"{esc(clip(tok, HEADER_CHARS))}{' ' if narrow else '<br>'}"
                f"<span style='font-size:10px;color:#777'>{pos}</span>"
                for tok, pos in zip(m.tokens, m.positions, strict=True)
            ],
            "tickangle": -90 if narrow else 0,
            "tickfont": axis_font,
            "title": {"text": "input token (position)"},
            "range": [n_cols - window - 0.5, n_cols - 0.5],
            "showgrid": False,
            "zeroline": False,
        },
        "xaxis2": {
            "overlaying": "x",
            "side": "top",
            "matches": "x",
            "tickmode": "array",
            "tickvals": xs,
            "ticktext": marks,
            "tickfont": axis_font,
            "title": {"text": "next token (✓ green: the final top-1 equals it)", "font": {"size": 11}},
            "tickangle": -90 if narrow else 0,
            "showgrid": False,
            "zeroline": False,
        },
        "yaxis": {
            "tickmode": "array",
            "tickvals": list(range(n_rows)),
            "ticktext": [esc(r) for r in m.row_labels],
            "tickfont": axis_font,
            "title": {"text": ROW_AXIS},
            "range": [-0.5, n_rows - 0.5],
            "showgrid": False,
            "zeroline": False,
            "fixedrange": window < n_cols,  # dragging moves the window sideways only
        },
    }


def _stat_menu(result: LensResult, m: HeatmapModel, y: float = 1.2, title_for=None) -> dict[str, Any]:
    """The statistic drop-down: each entry recolours the heatmap and, with ``title_for`` (label -> title
    text), rewrites the caption's "colour: ..." to match."""
    buttons = []
    active = 0
    for i, entry in enumerate(m.menu):
        grid = stat_grid(result, m.prompt, entry.stat, entry.target if entry.target is not None else 0)
        if entry.stat == m.grid.stat and entry.target == m.grid.target:
            active = i
        if title_for is None:
            buttons.append({"label": esc(entry.label), "method": "restyle", "args": [restyle(grid), [0]]})
        else:
            layout = {"title.text": title_for(grid.label)}
            buttons.append(
                {"label": esc(entry.label), "method": "update", "args": [restyle(grid), layout, [0]]}
            )
    return {
        "buttons": buttons,
        "active": active,
        "direction": "down",
        "showactive": True,
        "x": 1.0,
        "xanchor": "right",
        "y": y,  # paper units; above 1 is the top margin, beside the title and above the next-token axis
        "yanchor": "top",
        "font": {"size": 12},
    }


# ---- trajectories -------------------------------------------------------------------------------------
def _yaxis(panel: Panel) -> dict[str, Any]:
    if panel.kind == "rank":
        return {"title_text": panel.label, "type": "log", "autorange": "reversed"}
    if panel.kind in ("prob", "bool"):
        return {"title_text": panel.label, "range": [0, 1.02]}
    return {"title_text": panel.label, "rangemode": "tozero"}


def trajectory(
    result: LensResult,
    targets: Sequence[int | str] | None = None,
    prompts: Sequence[int] | None = None,
    stat: str = "target_probs",
    *,
    position: int | str = -1,
    title: str | None = None,
    answers: bool = False,
) -> go.Figure:
    """Statistics across rows, one line per (prompt, target) or per prompt.

    stat="target_probs" (or "prob"): each target's probability (top panel) and rank (bottom panel, log
    scale, rank 1 on top) at ``position`` (a decoded column index, default the last) of each prompt. Any
    other drawable statistic ("kl_to_final", "entropy", "cross_entropy", ...): one line per prompt, at
    ``position`` or averaged over positions ("mean"). targets: indices or names (default all); prompts:
    indices (default all). answers=True adds each prompt's answer (dashed) to the "target_probs" panels.
    A probability panel has a "linear | log" switch. See ``views.model.trajectory_model``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    m = trajectory_model(result, targets, prompts, stat, position, answers=answers)
    rows = list(range(len(m.row_names)))
    axis = {"tickmode": "array", "tickvals": rows, "ticktext": [esc(r) for r in m.row_names]}
    n = len(m.panels)
    if n == 2:
        fig = make_subplots(
            rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.55, 0.45]
        )
    else:
        fig = go.Figure()
    for i in range(len(m.panels[0].curves)):  # a (prompt, target)'s lines in every panel, then the next
        for k, panel in enumerate(m.panels):
            c = panel.curves[i]
            trace: dict[str, Any] = {"x": rows, "y": c.y, "name": esc(c.name)}
            if c.target is not None:
                trace.update(
                    legendgroup=f"{c.prompt}-{c.target}",
                    mode="lines+markers",
                    line={"color": COLORS[i % len(COLORS)], "dash": "dash" if c.target < 0 else "solid"},
                )
                if k > 0:
                    trace["showlegend"] = False
            fig.add_trace(go.Scatter(**trace), **({"row": k + 1, "col": 1} if n == 2 else {}))
    for k, panel in enumerate(m.panels):
        where = {"row": k + 1, "col": 1} if n == 2 else {}
        fig.update_yaxes(**_yaxis(panel), **where)
        fig.update_xaxes(**axis, **({"title_text": "row (layer)"} if k == n - 1 else {}), **where)
    fig.update_layout(
        title={"text": title or esc(m.title), "x": 0.01},
        font={"family": FONT, "size": 12},
        height=560 if n == 2 else 420,
        template="plotly_white",
        legend={"font": {"size": 11}},
        hovermode="x unified",
    )
    if m.panels[0].kind == "prob":
        fig.update_layout(updatemenus=[_log_switch("yaxis", fig.layout.yaxis.domain[1], x=1.0)])
    return fig


def _log_switch(axis: str, y: float, x: float) -> dict[str, Any]:
    """A "linear | log" pair of buttons for a probability ``axis`` ("yaxis4"), its right edge at paper ``x``
    and its bottom at paper ``y`` (a probability spans 1e-10 to 1 across rows: log shows the early rows)."""
    linear = {f"{axis}.type": "linear", f"{axis}.range": [0, 1.02], f"{axis}.autorange": False}
    log = {f"{axis}.type": "log", f"{axis}.autorange": True, f"{axis}.exponentformat": "power"}
    return {
        "type": "buttons",
        "direction": "right",
        "buttons": [
            {"label": "linear", "method": "relayout", "args": [linear]},
            {"label": "log", "method": "relayout", "args": [log]},
        ],
        "active": 0,
        "showactive": True,
        "x": x,
        "xanchor": "right",
        "y": y,
        "yanchor": "bottom",
        "pad": {"b": 24},
        "font": {"size": 11},
    }


# ---- comparing models ---------------------------------------------------------------------------------
def _shared_coloraxis(grids: list[StatGrid]) -> dict[str, Any]:
    g = grids[0]
    axis: dict[str, Any] = {
        "colorscale": g.colorscale,
        "reversescale": g.reverse,
        "cmin": min(x.zmin for x in grids),
        "cmax": max(x.zmax for x in grids),
        "colorbar": {**colorbar(g), "len": 0.5, "y": 1.0, "yanchor": "top"},
    }
    if g.tickvals is not None:
        tickvals, ticktext = rank_ticks(int(axis["cmax"]))
        axis["colorbar"].update(tickvals=tickvals, ticktext=ticktext)
    return axis


def compare_figure(
    results: Sequence[LensResult],
    names: Sequence[str] | None = None,
    prompt: int | Sequence[int] = 0,
    *,
    stat: str = "top_probs",
    target: int | str = 0,
    position: int = -1,
) -> go.Figure:
    """Several models (or checkpoints) on one prompt: heatmaps side by side, curves on relative depth.

    Top: one heatmap per result (rows x positions, top-1 token per cell) on one shared colour scale, with a
    drop-down for the statistic. Bottom: KL to final, entropy and (when every result tracks ``target``) the
    target's probability at ``position`` (default: the last token), against each row's relative depth
    (0 = embeddings, 1 = the last block, from the row specs) so that models of different depth line up.
    ``prompt``: an index into every result, or one index per result. Names default to each result's
    ``meta["model"]``. See ``views.model.compare_model``.
    """
    from plotly.subplots import make_subplots

    m = compare_model(results, names, prompt, stat=stat, target=target, position=position)
    n, k = len(results), len(m.panels)
    max_rows = max(len(h.row_names) for h in m.heatmaps)
    max_cols = max(len(h.columns) for h in m.heatmaps)
    heat_h, curve_h = 22 * max_rows + 90, 300
    # The last positions that fit a 1400-pixel page at readable 45-pixel cells; drag sideways for the rest.
    window = max(1, min(max_cols, (PAGE_WIDTH - 200 - n * 90) // (n * 45)))
    width = min(PAGE_WIDTH, max(900, n * (window * 50 + 90) + 200))
    specs = [[{"colspan": k}] + [None] * (k - 1) for _ in range(n)]
    specs_bottom = [[{"colspan": n}] + [None] * (n - 1) for _ in range(k)]
    fig = make_subplots(
        rows=2,
        cols=n * k,
        specs=[sum(specs, []), sum(specs_bottom, [])],
        row_heights=[heat_h, curve_h],
        vertical_spacing=170 / (heat_h + curve_h + 260),
        horizontal_spacing=min(0.9 / (n * k - 1) if n * k > 1 else 0.2, _label_gap(m) / (width - 220)),
        subplot_titles=[esc(clip(x, (width - 220) // (n * 8))) for x in m.names]
        + [esc(p.label) for p in m.panels],
    )
    _compare_heatmaps(fig, results, m, k, window)
    fig.update_layout(coloraxis=_shared_coloraxis([h.grid for h in m.heatmaps]))
    _compare_curves(fig, m, n)
    head = esc(clip(m.title, 90))
    fig.update_layout(
        title={
            "text": f"{head}<br><span style='font-size:12px;color:#555'>curves at the {m.where}"
            + (
                f" · heatmaps: the last {window} of {max_cols} positions, drag sideways for the others"
                if window < max_cols
                else ""
            )
            + "</span>",
            "x": 0.01,
        },
        font={"family": FONT, "size": 12},
        width=width,
        height=heat_h + curve_h + 260,
        plot_bgcolor="white",
        hoverlabel={"font": {"family": FONT, "size": 12}, "align": "left"},
        legend={"orientation": "h", "y": -0.08, "yanchor": "top", "x": 0},
        margin={"t": 130, "l": 110, "r": 110, "b": 60},
        dragmode="pan" if window < max_cols else "zoom",
        updatemenus=[_compare_menu(results, m, stat, target), *_log_menus(fig, m, n)],
    )
    return fig


def _label_gap(m) -> int:
    """Pixels between two heatmaps of ``compare_figure``: room for the right one's row labels (about 7
    pixels a character at 12 px), so that they never run into the left one's cells."""
    longest = max((len(r) for h in m.heatmaps[1:] for r in h.row_labels), default=0)
    return max(75, 7 * longest + 30)


def _log_menus(fig: go.Figure, m, n: int) -> list[dict[str, Any]]:
    """A "linear | log" switch above each probability panel of ``compare_figure``'s bottom row (a
    target's probability spans 1e-10 to 1 across rows: the log scale shows the early rows)."""
    menus = []
    for c, panel in enumerate(m.panels):
        if panel.kind != "prob":
            continue
        sub = fig.get_subplot(2, c * n + 1)
        menus.append(_log_switch(sub.yaxis.plotly_name, sub.yaxis.domain[1], x=sub.xaxis.domain[1]))
    return menus


def _compare_heatmaps(fig: go.Figure, results: Sequence[LensResult], m, k: int, window: int) -> None:
    """The top row of ``compare_figure``: one heatmap per result on the shared colour axis, each showing
    its last ``window`` positions, row labels on its left."""
    import plotly.graph_objects as go

    n = len(results)
    for i, (res, h) in enumerate(zip(results, m.heatmaps, strict=True)):
        n_cols = len(h.columns)
        assert h.hover is not None
        fig.add_trace(
            go.Heatmap(
                z=json_z(h.grid.z),
                x=list(range(n_cols)),
                y=list(range(len(h.row_names))),
                text=[[esc(clip(t, 7)) for t in row] for row in h.cells],
                texttemplate="%{text}",
                textfont={"size": 10, "family": FONT},
                hovertext=[[hover_text(c) for c in row] for row in h.hover],
                hoverinfo="text",
                coloraxis="coloraxis",
                xgap=1,
                ygap=1,
                name=esc(m.names[i]),
            ),
            row=1,
            col=i * k + 1,
        )
        fig.update_xaxes(
            tickmode="array",
            tickvals=list(range(n_cols)),
            ticktext=[esc(t) for t in column_labels(res, h.prompt, 8)],
            tickangle=-45 if window * n > 12 else 0,
            range=[n_cols - min(window, n_cols) - 0.5, n_cols - 0.5],
            showgrid=False,
            zeroline=False,
            row=1,
            col=i * k + 1,
        )
        fig.update_yaxes(
            tickmode="array",
            tickvals=list(range(len(h.row_names))),
            ticktext=[esc(r) for r in h.row_labels],
            showgrid=False,
            zeroline=False,
            fixedrange=True,
            title_text=ROW_AXIS if i == 0 else None,
            row=1,
            col=i * k + 1,
        )


def _compare_curves(fig: go.Figure, m, n: int) -> None:
    """The bottom row of ``compare_figure``: one panel per curve statistic, a line per result on relative
    depth."""
    import plotly.graph_objects as go

    for c, panel in enumerate(m.panels):
        for i, line in enumerate(panel.curves):
            name = esc(m.names[i])
            fig.add_trace(
                go.Scatter(
                    x=line.depths,
                    y=line.y,
                    text=[esc(r) for r in line.row_names],
                    name=name,
                    legendgroup=m.names[i],
                    showlegend=c == 0,
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"color": COLORS[i % 8]},
                    hovertemplate=f"{name}<br>row %{{text}} (depth %{{x:.2f}})<br>{esc(panel.label)} %{{y:.3f}}<extra></extra>",
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
        if panel.kind == "prob":
            fig.update_yaxes(range=[0, 1.02], row=2, col=c * n + 1)


def _compare_menu(results: Sequence[LensResult], m, current: str, target: int | str) -> dict[str, Any]:
    buttons = []
    for s in m.menu:
        grids = compare_grids(results, m.prompts, m.targets, s, target)
        axis = _shared_coloraxis(grids)
        layout = {f"coloraxis.{key}": v for key, v in axis.items() if key != "colorbar"}
        bar = axis["colorbar"]
        layout.update(
            {
                "coloraxis.colorbar.title.text": bar["title"]["text"],
                "coloraxis.colorbar.tickvals": bar.get("tickvals"),
                "coloraxis.colorbar.ticktext": bar.get("ticktext"),
            }
        )
        data = {"z": [json_z(g.z) for g in grids]}
        buttons.append(
            {
                "label": esc(grids[0].label),
                "method": "update",
                "args": [data, layout, list(range(len(grids)))],
            }
        )
    current_name = m.heatmaps[0].grid.stat
    active = m.menu.index(current_name) if current_name in m.menu else 0
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
