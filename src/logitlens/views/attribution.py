"""Views of a direct logit attribution (the DataFrame of ``LogitLens.attribute``): a bar per component.

``attribution_model`` computes, as plain data, what every view shows: the components in model order, their
contributions and running total, a colour per bar (blue: pushes the target up, orange: pushes it down;
both readable for red-green colour blindness), the title and the grey lines. ``figure`` (Plotly),
``png_figure`` / ``write_attribution_png`` (matplotlib, Agg), ``write_attribution_html`` (one offline page)
and ``table`` / ``print_attribution`` (rich) render it. Each library is imported only when used.

The bars run top to bottom in model order (embeddings first, the biases last), component names on the
axis; a narrow panel beside them draws the running total, which ends at the output row's logit difference.

Example:
    >>> df = lens.attribute("The Eiffel Tower is in the city of", " Paris")
    >>> write_attribution_png(df, "attribution.png")
    >>> print_attribution(df)
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logitlens.core.files import write_atomic
from logitlens.core.tokens import visible
from logitlens.errors import LogitLensError
from logitlens.views.png import font_families, save_figure

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    from rich.table import Table

__all__ = [
    "NEGATIVE",
    "POSITIVE",
    "AttributionModel",
    "attribution_html",
    "attribution_model",
    "figure",
    "png_figure",
    "print_attribution",
    "table",
    "write_attribution_html",
    "write_attribution_png",
]

POSITIVE = "#2166ac"  # dark blue: the component raises the target's logit difference
NEGATIVE = "#e66101"  # orange: it lowers it (blue / orange stay apart for colour-blind readers)
TOTAL = "#444444"  # the running total
MARKED = 3  # this many largest bars each way carry their value as text
BAR_H = 0.2  # inches per component in the image
FONTS = ["DejaVu Sans", "Noto Sans", "Arial Unicode MS"]  # DejaVu (bundled with matplotlib) has ␣ ↵
PLOTLY_FONT = "DejaVu Sans, Segoe UI, Helvetica, Arial, sans-serif"
TERMINAL_BAR = 24  # at most this many characters of a terminal bar each way (fewer on a narrow console)


@dataclass(frozen=True)
class AttributionModel:
    """What a view of an attribution shows, in model order (C components)."""

    names: list[str]  # (C,) "embed", "0.attn", "0.mlp", ..., "bias"
    labels: list[str]  # (C,) "embeddings", "block 0 attention", ...
    values: list[float]  # (C,) contribution, logits
    cumulative: list[float]  # (C,) running total; the last is the logit difference
    colours: list[str]  # (C,) POSITIVE or NEGATIVE
    marked: list[bool]  # (C,) among the MARKED largest each way: the value is written beside the bar
    title: str  # the prompt and the target
    lines: list[str]  # grey lines: model, what is explained, the summary
    note: str  # the linearisation in words
    axis: str  # the value axis title


def _check(df: pd.DataFrame) -> None:
    missing = [c for c in ("component", "contribution", "cumulative") if c not in df.columns]
    if missing or "logit_diff" not in df.attrs:
        raise LogitLensError(
            "not an attribution: give the DataFrame that LogitLens.attribute returns (with its attrs)"
        )


def _marked(values: list[float], n: int = MARKED) -> list[bool]:
    up = sorted((i for i, v in enumerate(values) if v > 0), key=lambda i: -values[i])[:n]
    down = sorted((i for i, v in enumerate(values) if v < 0), key=lambda i: values[i])[:n]
    keep = set(up) | set(down)
    return [i in keep for i in range(len(values))]


def attribution_model(df: pd.DataFrame) -> AttributionModel:
    """The plain data of every attribution view (see ``AttributionModel``)."""
    _check(df)
    a = df.attrs
    values = [float(v) for v in df["contribution"]]
    target = visible(str(a.get("target")))
    base = "the mean logit" if a.get("baseline_id") is None else visible(str(a.get("baseline")))
    prompt = a.get("prompt")
    head = f"“{_clip(prompt, 90)}”" if prompt else f"{a.get('n_tokens')} input tokens"
    title = f"{head}  →  {target}"
    explained = (
        f"logit[{target}] - {'mean logit' if a.get('baseline_id') is None else f'logit[{base}]'} "
        f"after {visible(str(a.get('token')))} (position {a.get('position')}) = {a['logit_diff']:+.3f}"
    )
    if a.get("softcap") is not None:
        explained += f" before soft-capping ({a.get('logit_diff_capped', float('nan')):+.3f} after)"
    explained += (
        f"; output row: p({target}) {a.get('target_prob', float('nan')):.3f}, rank {a.get('target_rank')}"
    )
    lines = [" · ".join(str(x) for x in (a.get("model"), f"{len(df)} components") if x), explained]
    lines += _summary_lines(df)
    return AttributionModel(
        names=[str(c) for c in df["component"]],
        labels=[str(c) for c in df["label"]] if "label" in df.columns else [str(c) for c in df["component"]],
        values=values,
        cumulative=[float(v) for v in df["cumulative"]],
        colours=[POSITIVE if v >= 0 else NEGATIVE for v in values],
        marked=_marked(values),
        title=title,
        lines=lines,
        note="linearisation: " + str(a.get("linearisation", "")),
        axis=f"contribution to the logit difference ({a.get('units', 'logits')})",
    )


def _summary_lines(df: pd.DataFrame) -> list[str]:
    ordered = df.sort_values("contribution", ascending=False)
    up = ordered[ordered["contribution"] > 0].head(MARKED)
    down = ordered[ordered["contribution"] < 0].iloc[::-1].head(MARKED)

    def names(part) -> str:
        return ", ".join(f"{r.component} ({r.contribution:+.2f})" for r in part.itertuples()) or "none"

    return [f"up most: {names(up)}", f"down most: {names(down)}"]


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: float) -> str:
    return f"{value:+.2f}"


# ---- Plotly ---------------------------------------------------------------------------------------------
def figure(df: pd.DataFrame) -> go.Figure:
    """Plotly: horizontal bars in model order (top to bottom) and the running total beside them."""
    from plotly.subplots import make_subplots

    m = attribution_model(df)
    n = len(m.names)
    fig = make_subplots(
        rows=1, cols=2, shared_yaxes=True, column_widths=[0.74, 0.26], horizontal_spacing=0.03
    )
    _add_bar_traces(fig, m)
    # the grey lines under the title; "up most" in the raising colour, "down most" in the lowering one
    tones = ["#555"] * (len(m.lines) - 2) + [POSITIVE, NEGATIVE]
    lines = "<br>".join(
        f"<span style='font-size:12px;color:{tone}'>{html.escape(x)}</span>"
        for x, tone in zip(m.lines, tones, strict=True)
    )
    note = "<br>".join(html.escape(x) for x in textwrap.wrap(m.note, 150))
    top, bottom = 72 + 18 * len(m.lines), 90 + 15 * note.count("<br>")  # pixels above / below the bars
    height = top + bottom + max(160, 17 * n)  # 17 pixels a bar
    lo, hi = min([0.0, *m.values]), max([0.0, *m.values])
    pad = 0.12 * (max(abs(lo), abs(hi)) or 1.0)  # room for the values written beside the bars
    fig.update_yaxes(autorange="reversed", type="category", tickfont={"size": 11}, row=1, col=1)
    fig.update_xaxes(
        title_text=html.escape(m.axis),
        range=[lo - pad, hi + pad],
        zeroline=True,
        zerolinecolor="#888",
        row=1,
        col=1,
    )
    fig.update_xaxes(title_text="running total", zeroline=True, zerolinecolor="#888", row=1, col=2)
    fig.update_layout(
        title={
            "text": f"<b>{html.escape(m.title)}</b><br>{lines}",
            "x": 0.01,
            "xanchor": "left",
            "y": 1,
            "yref": "container",
            "yanchor": "top",
            "pad": {"t": 22},
        },
        height=height,
        width=1000,
        template="plotly_white",
        font={"family": PLOTLY_FONT},
        margin={"t": top, "l": 80, "r": 30, "b": bottom},
        bargap=0.25,
        annotations=[_note_annotation(note, -62 / (height - top - bottom))],  # below the axis title
    )
    return fig


def _add_bar_traces(fig: go.Figure, m: AttributionModel) -> None:
    """The bars (values written beside the marked ones) and, in the second column, the running total."""
    import plotly.graph_objects as go

    hover = [
        f"<b>{html.escape(name)}</b> · {html.escape(label)}<br>contribution {v:+.4f}<br>running total {c:+.4f}"
        for name, label, v, c in zip(m.names, m.labels, m.values, m.cumulative, strict=True)
    ]
    fig.add_trace(
        go.Bar(
            x=m.values,
            y=m.names,
            orientation="h",
            marker={"color": m.colours},
            text=[_fmt(v) if mark else "" for v, mark in zip(m.values, m.marked, strict=True)],
            textposition="outside",
            cliponaxis=False,
            hovertext=hover,
            hoverinfo="text",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=m.cumulative,
            y=m.names,
            mode="lines+markers",
            line={"color": TOTAL, "width": 1.5},
            marker={"size": 4},
            hovertext=hover,
            hoverinfo="text",
            showlegend=False,
        ),
        row=1,
        col=2,
    )


def _note_annotation(note: str, y: float) -> dict[str, Any]:
    """The linearisation note under the plot, at paper ``y`` (pixels / plot height below the axis)."""
    return {
        "text": note,
        "xref": "paper",
        "yref": "paper",
        "x": 0,
        "y": y,
        "yanchor": "top",
        "align": "left",
        "showarrow": False,
        "xanchor": "left",
        "font": {"size": 11, "color": "#555"},
    }


def attribution_html(df: pd.DataFrame, title: str = "logitlens attribution") -> str:
    """One self-contained HTML page (plotly.js inline, nothing loaded from the network): the figure, the
    summary and the table of components."""
    from logitlens.views.report import figure_div, page, scrub_text

    m = attribution_model(df)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(label)}</td><td>{v:+.4f}</td><td>{c:+.4f}</td></tr>"
        for name, label, v, c in zip(m.names, m.labels, m.values, m.cumulative, strict=True)
    )
    table_html = (
        '<table class="summary"><tr><th>component</th><th>what</th><th>contribution</th>'
        f"<th>running total</th></tr>{rows}</table>"
    )
    body = (
        f"<h1>{scrub_text(html.escape(title))}</h1>\n"
        f'<p class="meta">{scrub_text(html.escape(str(df.attrs.get("summary", ""))))}</p>\n'
        f"{figure_div(figure(df), div_id='attribution')}\n"
        f"<h2>components</h2>\n{scrub_text(table_html)}"
    )
    return page(title, body)


def write_attribution_html(df: pd.DataFrame, path: str | Path, title: str = "logitlens attribution") -> Path:
    """Write ``attribution_html`` to ``path`` (whole or not at all) and return the path."""
    text = attribution_html(df, title)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the HTML page")


# ---- matplotlib -----------------------------------------------------------------------------------------
def png_figure(df: pd.DataFrame, *, dpi: int = 100):
    """The matplotlib Figure of ``write_attribution_png`` (Agg canvas, not attached to pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = attribution_model(df)
    n = len(m.names)
    fonts = font_families(FONTS)
    width = 10.0
    wrap = int((width - 0.6) * 12)
    # the grey lines, wrapped; "up most" in the raising colour, "down most" in the lowering one (a legend)
    tones = ["#555"] * (len(m.lines) - 2) + [POSITIVE, NEGATIVE]
    lines = [(w, tone) for line, tone in zip(m.lines, tones, strict=True) for w in textwrap.wrap(line, wrap)]
    note = textwrap.wrap(m.note, int((width - 0.6) * 13))
    top = 0.75 + 0.2 * len(lines)  # inches: title and grey lines
    bottom = 0.75 + 0.17 * len(note)  # axis title and the linearisation note
    plot_h = BAR_H * max(n, 8)
    height = top + plot_h + bottom
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    left, gap, right = 0.9, 0.25, 0.3
    main_w = (width - left - gap - right) * 0.74
    side_w = (width - left - gap - right) - main_w
    ax = fig.add_axes((left / width, bottom / height, main_w / width, plot_h / height))
    side = fig.add_axes(
        ((left + main_w + gap) / width, bottom / height, side_w / width, plot_h / height), sharey=ax
    )
    _draw_bars(ax, side, m, fonts)
    _draw_running_total(side, m, fonts)
    for a in (ax, side):
        for spine in ("top", "right"):
            a.spines[spine].set_visible(False)
        for label in [*a.get_xticklabels(), *a.get_yticklabels()]:
            label.set_parse_math(False)
    fig.text(0.3 / width, 1 - 0.2 / height, _clip(m.title, 100), fontsize=12, weight="bold", family=fonts,
             va="top", parse_math=False)  # fmt: skip
    for k, (line, tone) in enumerate(lines):
        fig.text(0.3 / width, 1 - (0.55 + 0.2 * k) / height, line, fontsize=9, color=tone, family=fonts,
                 va="top", parse_math=False)  # fmt: skip
    fig.text(0.3 / width, 0.12 / height, "\n".join(note), fontsize=8, color="#666", family=fonts,
             va="bottom", parse_math=False)  # fmt: skip
    return fig


def _draw_bars(ax, side, m: AttributionModel, fonts: list[str]) -> None:
    """The bars in model order from the top, a light band behind every other block (on ``side`` too), the
    marked values written beside their bars."""
    import numpy as np

    n = len(m.names)
    y = np.arange(n)
    values = np.array(m.values)
    for i, name in enumerate(m.names):  # a light band behind every other block: its attention and MLP
        layer = name.split(".")[0]
        if layer.isdigit() and int(layer) % 2 == 1:
            for a in (ax, side):
                a.axhspan(i - 0.5, i + 0.5, color="#f2f2f2", zorder=0, linewidth=0)
    ax.barh(y, values, color=m.colours, height=0.72, zorder=2)
    ax.axvline(0, color="#888", linewidth=0.8, zorder=1)
    span = float(np.abs(values).max()) if n else 1.0
    span = span or 1.0
    lo, hi = min(0.0, float(values.min())), max(0.0, float(values.max()))
    ax.set_xlim(lo - 0.14 * span, hi + 0.14 * span)  # room for the values written beside the bars
    for i, (v, mark) in enumerate(zip(m.values, m.marked, strict=True)):
        if mark:
            ax.text(
                v + (0.015 if v >= 0 else -0.015) * span,
                i,
                _fmt(v),
                va="center",
                ha="left" if v >= 0 else "right",
                fontsize=8,
                family=fonts,
                color=m.colours[i],
                weight="bold",
            )
    ax.set_yticks(y, m.names, fontsize=8, family=fonts)
    ax.set_ylim(n - 0.5, -0.5)  # model order from the top
    ax.set_xlabel(m.axis, fontsize=9, family=fonts)
    ax.grid(axis="x", alpha=0.3, zorder=0)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelsize=8)


def _draw_running_total(side, m: AttributionModel, fonts: list[str]) -> None:
    """The running total beside the bars, its last value written at its end."""
    n = len(m.names)
    side.plot(m.cumulative, range(n), color=TOTAL, linewidth=1.4, marker="o", markersize=2.5)
    side.axvline(0, color="#888", linewidth=0.8)
    side.set_xlabel("running total", fontsize=9, family=fonts)
    side.grid(axis="x", alpha=0.3)
    if n:
        side.annotate(
            f"{m.cumulative[-1]:+.2f}",
            (m.cumulative[-1], n - 1),
            xytext=(-6, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=8,
            weight="bold",
            family=fonts,
            color=TOTAL,
            annotation_clip=False,
        )
    side.tick_params(axis="y", left=False, labelleft=False)
    side.tick_params(axis="x", labelsize=8)


def write_attribution_png(df: pd.DataFrame, path: str | Path, *, dpi: int = 100) -> Path:
    """Write the bar chart as an image (.png, .svg or .pdf by suffix) and return its path.

    Args:
        df: ``LogitLens.attribute``'s DataFrame.
        path: the image file.
        dpi: resolution.

    Returns:
        The path written.

    Example:
        >>> write_attribution_png(lens.attribute(prompt, " Paris"), "attribution.png")
    """
    formats = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
    fmt = formats.get(Path(path).suffix.lower())
    if fmt is None:
        raise LogitLensError(f"cannot write an image to {path}: the file name must end in .png, .svg or .pdf")
    return save_figure(png_figure(df, dpi=dpi), path, dpi)


# ---- rich -----------------------------------------------------------------------------------------------
def _bar(value: float, span: float, half: int) -> tuple[str, str]:
    """(left, right) halves of a centred bar, ``half`` characters each: negative values grow left."""
    n = round(abs(value) / span * half) if span > 0 else 0
    n = max(n, 1) if value != 0 else 0
    left = ("█" * n if value < 0 else "").rjust(half)
    return left, ("█" * n if value > 0 else "").ljust(half)


def table(df: pd.DataFrame, width: int = 80) -> Table:
    """A rich table of the components in model order, ``width`` characters wide: each one's contribution,
    a bar (left: lowers the target's logit difference, right: raises it) and the running total; the
    summary as its title, the linearisation as its caption."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    m = attribution_model(df)
    span = max((abs(v) for v in m.values), default=0.0)
    half = max(6, min(TERMINAL_BAR, (width - 36) // 2))  # what fits beside the other columns
    t = Table(
        title=escape(f"{m.title}\n" + "\n".join(m.lines[1:])),
        caption=escape(m.note),
        caption_justify="left",
        pad_edge=False,
    )
    t.add_column("component", justify="right", style="bold", no_wrap=True)
    t.add_column("logits", justify="right", no_wrap=True)
    head = "lowers ◀ │ ▶ raises".center(2 * half + 1)  # left-justified cells keep their spaces
    t.add_column(head, justify="left", no_wrap=True, min_width=2 * half + 1)
    t.add_column("total", justify="right", no_wrap=True)
    for name, v, c, colour, mark in zip(m.names, m.values, m.cumulative, m.colours, m.marked, strict=True):
        left, right = _bar(v, span, half)
        bar = Text.assemble((left, NEGATIVE), ("│", "dim"), (right, POSITIVE))
        value = Text(_fmt(v), style=f"bold {colour}" if mark else colour)
        t.add_row(name, value, bar, f"{c:+.2f}")
    return t


def print_attribution(df: pd.DataFrame, console: Any = None) -> None:
    """Print ``table(df)`` as wide as the console."""
    from rich.console import Console

    console = console or Console()
    console.print(table(df, width=console.width))
