"""Figures of a corpus evaluation table (``logitlens.evaluate``'s DataFrame, several models' tables
concatenated): ``eval_figure`` (Plotly), ``write_eval_html`` (one offline file), ``write_eval_png``
(matplotlib, Agg). Several models line up on relative depth. Plain data in; no model runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from logitlens.core.files import write_atomic
from logitlens.core.stats import CORPUS_METRICS as METRICS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PANELS", "eval_figure", "eval_html", "eval_png_figure", "write_eval_html", "write_eval_png"]

PANELS = (  # (metric, title) of the four panels; "top1" draws agreement and accuracy together
    ("bits_per_token", "cross-entropy vs next token (bits/token)"),
    ("kl_to_final", "KL to final row (nats)"),
    ("entropy", "entropy (nats)"),
    ("top1", "top-1 = final row's (dashed) / = next token (solid)"),
)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One (label, lines sorted by depth) per model (and lens, when several lenses share a model)."""
    if "model" not in df.columns:
        return [("", df.sort_values("depth"))]
    keys = (
        ["model", "lens"]
        if "lens" in df.columns and df.groupby("model")["lens"].nunique().max() > 1
        else ["model"]
    )
    out = []
    for key, part in df.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        label = str(key[0]) + (f" ({key[1]} lens)" if len(key) > 1 else "")
        out.append((label, part.sort_values("depth")))
    return out


def _title(df: pd.DataFrame) -> str:
    a = df.attrs
    bits = [f"data: {a['data']}" if a.get("data") else None]
    if a.get("split"):
        bits.append(f"{a['split']} split (seed {a.get('seed')})")
    if a.get("tokens"):
        bits.append(f"{a['tokens']:,} tokens in sequences of {a.get('seq_len')}")
    lenses = list(dict.fromkeys(str(x) for x in df["lens"])) if "lens" in df.columns else ["logit"]
    what = " and ".join(lenses) + (" lenses" if len(lenses) > 1 else " lens")
    return f"{what} over a corpus" + (" · " + ", ".join(b for b in bits if b) if any(bits) else "")


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def eval_figure(df: pd.DataFrame, *, title: bool = True):
    """Plotly figure of an ``evaluate`` table (or several concatenated): four panels against relative
    depth (0 = embeddings, 1 = last block), one line per model, a band of +- 1 standard error.
    title=False leaves the run's description out (a page that shows it already)."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=2, subplot_titles=[t for _, t in PANELS], horizontal_spacing=0.08, vertical_spacing=0.14
    )
    for g, (label, part) in enumerate(_groups(df)):
        colour = COLOURS[g % len(COLOURS)]
        x = part["depth"].to_numpy()
        names = part["row_name"].tolist()
        for p, (metric, _) in enumerate(PANELS):
            r, c = p // 2 + 1, p % 2 + 1
            series = (
                [("accuracy", "solid"), ("agreement", "dash")] if metric == "top1" else [(metric, "solid")]
            )
            for name, dash in series:
                y, se = part[name].to_numpy(), part[f"{name}_se"].fillna(0).to_numpy()
                fig.add_trace(
                    go.Scatter(
                        x=np.concatenate([x, x[::-1]]),
                        y=np.concatenate([y + se, (y - se)[::-1]]),
                        mode="lines",
                        fill="toself",
                        fillcolor=_rgba(colour, 0.15),
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=label,
                    ),
                    row=r,
                    col=c,
                )
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        mode="lines+markers",
                        name=label or "model",
                        legendgroup=label,
                        showlegend=p == 0,
                        line={"color": colour, "dash": dash},
                        marker={"size": 5},
                        customdata=np.stack([names, se], -1),
                        hovertemplate=f"{label}<br>row %{{customdata[0]}} (depth %{{x:.2f}})<br>{name} "
                        "%{y:.4f} ± %{customdata[1]:.4f}<extra></extra>",
                    ),
                    row=r,
                    col=c,
                )
    for p in range(len(PANELS)):
        fig.update_xaxes(title_text="relative depth", range=[-0.02, 1.02], row=p // 2 + 1, col=p % 2 + 1)
    fig.update_yaxes(range=[0, 1.02], row=2, col=2)
    fig.update_layout(
        title={"text": _title(df) if title else "", "font": {"size": 15}},
        height=720,
        width=1100,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.1},
        margin={"t": 90 if title else 40, "l": 60, "r": 30, "b": 80},
    )
    return fig


def _table_html(df: pd.DataFrame) -> str:
    import html

    cols = [
        "model",
        "lens",
        "row_name",
        "depth",
        "tokens",
        "bits_per_token",
        "kl_to_final",
        "entropy",
        "agreement",
        "accuracy",
    ]
    cols = [c for c in cols if c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, line in df.iterrows():
        cells = []
        for c in cols:
            v = line[c]
            if c in METRICS:
                cells.append(f"{v:.4f} ± {line[c + '_se']:.4f}")
            elif c == "depth":
                cells.append(f"{v:.3f}")
            else:
                cells.append(html.escape(str(v)))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="summary"><tr>{head}</tr>{"".join(body)}</table>'


def eval_html(df: pd.DataFrame, title: str = "logitlens eval") -> str:
    """One self-contained HTML page (plotly.js inline, loads nothing from the network): plot + table."""
    import html

    from logitlens.views.report import figure_div, page, scrub_text

    body = (
        f'<h1>{html.escape(title)}</h1>\n<p class="meta">{scrub_text(html.escape(_title(df)))}</p>\n'
        f"{figure_div(eval_figure(df, title=False))}\n<h2>per row (mean ± standard error)</h2>\n{scrub_text(_table_html(df))}"
    )
    return page(title, body)


def write_eval_html(df: pd.DataFrame, path: str | Path, title: str = "logitlens eval") -> Path:
    """``eval_html`` written whole or not at all."""
    text = eval_html(df, title)
    return write_atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), "the HTML")


def eval_png_figure(df: pd.DataFrame, *, dpi: int = 100):
    """The matplotlib Figure of ``write_eval_png`` (Agg canvas, not attached to pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    groups = _groups(df)
    for p, (metric, title) in enumerate(PANELS):
        ax = axes[p // 2][p % 2]
        for g, (label, part) in enumerate(groups):
            colour = COLOURS[g % len(COLOURS)]
            x = part["depth"].to_numpy()
            series = [("accuracy", "-"), ("agreement", "--")] if metric == "top1" else [(metric, "-")]
            for name, style in series:
                y, se = part[name].to_numpy(), part[f"{name}_se"].fillna(0).to_numpy()
                ax.fill_between(x, y - se, y + se, color=colour, alpha=0.18, linewidth=0)
                ax.plot(x, y, style, color=colour, marker="o", markersize=3, linewidth=1.6,
                        label=(label or "model") if (p == 0 and name != "agreement") else None)  # fmt: skip
        outlier = metric != "top1" and _outlier(df[metric])  # e.g. the embeddings' 100+ nats of KL
        if outlier:  # log scale above 1, so that one row does not flatten all the others
            ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
        ax.set_title(title + (" · log scale" if outlier else ""), fontsize=10)
        ax.set_xlabel("relative depth (0 = embeddings, 1 = last block)", fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        if metric == "top1":
            ax.set_ylim(0, 1.02)
        if not outlier:
            ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.legend(loc="lower center", ncol=min(4, max(1, len(groups))), fontsize=9, frameon=False)
    fig.suptitle(_title(df) + "\nbands: ± 1 standard error", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.12, hspace=0.38, wspace=0.18)
    return fig


def _outlier(values: pd.Series) -> bool:
    """True when the largest value is over 5x the median of the positive ones (and over 10)."""
    import numpy as np

    v = values.to_numpy(dtype=float)
    v = v[(v > 0) & np.isfinite(v)]
    return bool(len(v) > 2 and v.max() > 10 and v.max() > 5 * float(np.median(v)))


def write_eval_png(df: pd.DataFrame, path: str | Path, *, dpi: int = 100) -> Path:
    """A PNG of the four panels of ``eval_figure`` (matplotlib, no display needed).

    Args:
        df: ``logitlens.evaluate``'s table, or several concatenated with ``model`` and ``lens`` columns
            (one line per model and lens, on relative depth).
        path: the PNG file.
        dpi: resolution.

    Returns:
        The path written.

    Example:
        >>> write_eval_png(logitlens.evaluate(lens, "sample", tokens=2048), "eval.png")
    """
    fig = eval_png_figure(df, dpi=dpi)
    return write_atomic(
        Path(path),
        lambda tmp: fig.savefig(
            tmp, format="png", dpi=dpi, facecolor="white", metadata={"Software": "logitlens"}
        ),
        "the PNG",
    )
