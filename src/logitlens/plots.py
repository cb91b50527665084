"""Plotly figures of a LensResult: the rows x positions heatmap and the per-row trajectories.

Also holds ``stat_grid``, the one place that turns a result into the (rows, positions) numbers a heatmap is
coloured by; the matplotlib view (png.py) and the report (report.py) use it too. plotly is imported inside
the functions that build figures, so ``import logitlens.plots`` stays cheap.

Colour rule for every statistic: darker = more certain / closer to the final prediction (high
probability, low entropy, low KL, rank 1).

Example:
    >>> fig = heatmap(res, stat="kl")          # same as res.plot(stat="kl")
    >>> fig = trajectory(res, stat="prob")     # same as res.plot_trajectory()
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import LogitLensError
from .tokens import visible

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .result import LensResult

STATS = ("top_prob", "final_prob", "entropy", "kl", "target_prob", "target_rank")
TARGET_STATS = ("target_prob", "target_rank")
TRAJECTORY_STATS = ("prob", "kl", "entropy")

# Sequential scales, light (uncertain / far from final) -> dark (certain / close to final).
PROB_SCALE = "Blues"
ENTROPY_SCALE = "Greens"  # used reversed: low entropy is dark
KL_SCALE = "Oranges"  # used reversed: low KL is dark
RANK_SCALE = "Purples"  # used reversed on log10(rank): rank 1 is dark
FONT = "DejaVu Sans, Segoe UI, Helvetica, Arial, sans-serif"  # DejaVu has the glyphs ␣ ↵ ⇥
CELL_CHARS = 8  # a heatmap cell shows at most this many characters of its token
LABEL_CHARS = 9  # axis labels: at most this many characters of a token
HOVER_K = 10  # the hover box lists at most this many top tokens


@dataclass(frozen=True)
class StatGrid:
    """What one statistic looks like on one prompt's heatmap.

    z: (R, C) the colour value of each cell (for target_rank: log10 of the rank); values: (R, C) the
    statistic itself (for target_rank: the rank); zmin / zmax: the colour range; reverse: dark end at
    zmin; tickvals / ticktext: colour-bar ticks (log scale for ranks), else None.
    """

    stat: str
    label: str
    z: np.ndarray
    values: np.ndarray
    zmin: float
    zmax: float
    colorscale: str
    reverse: bool
    tickvals: list[float] | None = None
    ticktext: list[str] | None = None


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with … when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def esc(text: str) -> str:
    """Escape &, <, > so that plotly shows a token literally instead of reading it as markup."""
    return html.escape(text, quote=False)


def target_index(result: LensResult, target: int | str) -> int:
    """A target given by index or by name (as given to ``run``, or with ␣ for spaces) -> its index."""
    if not result.target_names:
        raise LogitLensError("this result has no targets; run the lens with targets=[' Paris', ...]")
    names = result.target_names
    if isinstance(target, str):
        for t, name in enumerate(names):
            if target in (name, visible(name)):
                return t
        raise LogitLensError(f"unknown target {target!r}; this result tracks: {', '.join(map(repr, names))}")
    if isinstance(target, bool) or not isinstance(target, int) or not -len(names) <= target < len(names):
        raise LogitLensError(f"target index {target!r} is out of range: this result tracks {len(names)}")
    return target % len(names)


def check_prompt(result: LensResult, prompt: int) -> int:
    if (
        isinstance(prompt, bool)
        or not isinstance(prompt, int)
        or not -result.n_prompts <= prompt < result.n_prompts
    ):
        raise LogitLensError(f"prompt index {prompt!r} is out of range: this result has {result.n_prompts}")
    return prompt % result.n_prompts


def final_top1_probs(result: LensResult, prompt: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, C) probability at each row of the final row's top-1 token, and (R, C) whether it is known.

    The result keeps only each row's top-k, so the probability is known where the final top-1 is in that
    row's top-k; elsewhere it is below the row's k-th probability and reported as 0.
    """
    cols = result.columns(prompt)
    ids = result.top_ids[prompt][:, cols]  # (R, C, k)
    probs = result.top_probs[prompt][:, cols]  # (R, C, k)
    match = ids == ids[-1:, :, :1]  # (R, C, k) vs the final row's top-1
    p = torch.where(match, probs, torch.zeros_like(probs)).sum(-1)
    return p.numpy().astype(float), match.any(-1).numpy()


def stat_grid(result: LensResult, prompt: int = 0, stat: str = "top_prob", target: int | str = 0) -> StatGrid:
    """The (rows, existing columns) numbers behind a heatmap of ``stat`` for ``prompt``.

    stat: "top_prob" (probability of each cell's top-1 token), "final_prob" (probability of the final
    row's top-1 token; 0 where it is not in the row's top-k), "entropy" (nats), "kl" (KL(final || row),
    nats), "target_prob", "target_rank" (of ``target``: an index or a name).
    """
    prompt = check_prompt(result, prompt)
    if stat not in STATS:
        raise LogitLensError(f"unknown statistic {stat!r}; choose one of: {', '.join(STATS)}")
    cols = result.columns(prompt)
    tickvals = ticktext = None
    if stat == "top_prob":
        values = result.top_probs[prompt, :, cols, 0].numpy().astype(float)
        label, scale, reverse, zmin, zmax = "p(top-1)", PROB_SCALE, False, 0.0, 1.0
    elif stat == "final_prob":
        values, _ = final_top1_probs(result, prompt)
        label, scale, reverse, zmin, zmax = "p(final top-1)", PROB_SCALE, False, 0.0, 1.0
    elif stat == "entropy":
        values = result.entropy[prompt, :, cols].numpy().astype(float)
        label, scale, reverse, zmin = "entropy (nats)", ENTROPY_SCALE, True, 0.0
        zmax = _finite_max(values, 1.0)
    elif stat == "kl":
        values = result.kl_to_final[prompt, :, cols].numpy().astype(float)
        label, scale, reverse, zmin = "KL to final (nats)", KL_SCALE, True, 0.0
        # The embedding row's KL is often 10x the rest: saturate the top 5% so later rows keep contrast.
        finite = values[np.isfinite(values)]
        zmax = float(np.quantile(finite, 0.95)) if finite.size else 1.0
        zmax = zmax if zmax > 0 else _finite_max(values, 1.0)
    else:
        t = target_index(result, target)
        name = visible(result.target_names[t])
        if stat == "target_prob":
            values = result.target_probs[prompt, :, cols, t].numpy().astype(float)
            label, scale, reverse, zmin, zmax = f"p({name})", PROB_SCALE, False, 0.0, 1.0
        else:
            values = result.target_ranks[prompt, :, cols, t].numpy().astype(float)
            label, scale, reverse, zmin = f"rank of {name}", RANK_SCALE, True, 0.0
            top = max(1.0, math.ceil(math.log10(max(_finite_max(values, 10.0), 10.0))))
            zmax = top
            tickvals = [float(e) for e in range(int(top) + 1)]
            ticktext = [f"{10**e:,}" for e in range(int(top) + 1)]
            z = np.log10(np.clip(values, 1.0, None))
            return StatGrid(stat, label, z, values, zmin, zmax, scale, reverse, tickvals, ticktext)
    return StatGrid(stat, label, values, values, zmin, zmax, scale, reverse, tickvals, ticktext)


def _finite_max(values: np.ndarray, default: float) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size and finite.max() > 0 else default


def available_stats(result: LensResult) -> list[tuple[str, int]]:
    """Every (stat, target index) this result can colour a heatmap by."""
    out = [(s, 0) for s in STATS if s not in TARGET_STATS]
    for t in range(len(result.target_names)):
        out += [("target_prob", t), ("target_rank", t)]
    return out


# ---- text of axes, cells and hover boxes --------------------------------------------------------------
def column_labels(result: LensResult, prompt: int = 0, width: int = LABEL_CHARS) -> list[str]:
    """Distinct plain labels of the existing columns: the input token and its position, "␣Tower·3"."""
    pos = result.positions[prompt].tolist()
    return [
        f"{clip(tok, width)}·{pos[j]}"
        for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=True)
    ]


def next_labels(result: LensResult, prompt: int = 0) -> list[tuple[str, bool]]:
    """(actual next token, whether the final row's top-1 equals it) per existing column."""
    cols = result.columns(prompt)
    ids = result.input_ids[prompt]
    out = []
    for j in cols:
        pos = int(result.positions[prompt, j])
        if pos + 1 >= len(ids):
            out.append(("", False))
        else:
            nxt = ids[pos + 1]
            out.append((result.token(nxt), int(result.top_ids[prompt, -1, j, 0]) == nxt))
    return out


def prompt_label(result: LensResult, prompt: int, width: int = 70) -> str:
    text = (
        result.prompts[prompt]
        if result.prompts and result.prompts[prompt]
        else "".join(result.tokens[prompt])
    )
    return clip(text.replace("\n", "↵"), width)


def hover_texts(result: LensResult, prompt: int = 0, k: int = HOVER_K) -> list[list[str]]:
    """(R, C) hover boxes: row, position, every statistic of the cell, then its top-k with probabilities."""
    cols = result.columns(prompt)
    toks = result.column_tokens(prompt)
    nexts = next_labels(result, prompt)
    fprob, fknown = final_top1_probs(result, prompt)
    k = min(k, result.top_k)
    final_ids = result.top_ids[prompt, -1, cols, 0].tolist()
    ids = result.top_ids[prompt][:, cols, :k].tolist()  # (R, C, k)
    probs = result.top_probs[prompt][:, cols, :k].tolist()
    ent = result.entropy[prompt][:, cols].tolist()
    kl = result.kl_to_final[prompt][:, cols].tolist()
    tprobs = result.target_probs[prompt][:, cols].tolist()  # (R, C, T)
    tranks = result.target_ranks[prompt][:, cols].tolist()
    kth = result.top_probs[prompt][:, cols, -1].tolist()  # (R, C) the k-th probability
    out = []
    for r, row in enumerate(result.row_names):
        line = []
        for c, j in enumerate(cols):
            pos = int(result.positions[prompt, j])
            nxt = f" → next <b>{esc(nexts[c][0])}</b>" if nexts[c][0] else ""
            parts = [f"<b>row {esc(row)}</b> · position {pos} <b>{esc(toks[c])}</b>{nxt}"]
            stats = f"entropy {ent[r][c]:.2f} · KL to final {kl[r][c]:.3g}"
            final = esc(result.token(final_ids[c]))
            if fknown[r, c]:
                stats += f"<br>p(final top-1 {final}) {fprob[r, c]:.3f}"
            else:
                stats += f"<br>p(final top-1 {final}) < {kth[r][c]:.3f} (not in top-{result.top_k})"
            for t, name in enumerate(result.target_names):
                stats += f"<br>p({esc(visible(name))}) {tprobs[r][c][t]:.3f} · rank {tranks[r][c][t]:,}"
            parts.append(stats)
            parts.append(
                "<br>".join(
                    f"{i + 1:>2}. {esc(result.token(t))}  {p:.3f}"
                    for i, (t, p) in enumerate(zip(ids[r][c], probs[r][c], strict=True))
                    if t >= 0
                )
            )
            line.append("<br>".join(parts))
        out.append(line)
    return out


# ---- the heatmap --------------------------------------------------------------------------------------
def _colorbar(grid: StatGrid) -> dict[str, Any]:
    bar: dict[str, Any] = {"title": {"text": grid.label, "side": "right"}, "thickness": 14}
    if grid.tickvals is not None:
        bar.update(tickvals=grid.tickvals, ticktext=grid.ticktext)
    return bar


def _restyle(grid: StatGrid) -> dict[str, Any]:
    """The trace attributes a statistic sets (used by the statistic menu's buttons)."""
    return {
        "z": [_json_z(grid.z)],
        "zmin": [grid.zmin],
        "zmax": [grid.zmax],
        "colorscale": [grid.colorscale],
        "reversescale": [grid.reverse],
        "colorbar.title.text": [grid.label],
        "colorbar.tickvals": [grid.tickvals],
        "colorbar.ticktext": [grid.ticktext],
    }


def _json_z(z: np.ndarray) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in z.tolist()]


def heatmap(
    result: LensResult,
    prompt: int = 0,
    stat: str = "top_prob",
    target: int | str = 0,
    *,
    menu: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Rows (embedding at the bottom, last layer at the top) x input positions of one prompt.

    Each cell shows its top-1 token and is coloured by ``stat`` (see ``stat_grid``); hovering shows every
    statistic of the cell and its top-k. The bottom axis holds the input tokens (with their positions, so
    repeated tokens stay distinct columns), the top axis the actual next token, bold green with ✓ where
    the final row's top-1 equals it. menu=True adds a drop-down to switch between statistics. title: plotly
    markup (escape tokens with ``esc``); None = the prompt, "" = only the model / statistic line.
    """
    import plotly.graph_objects as go

    prompt = check_prompt(result, prompt)
    grid = stat_grid(result, prompt, stat, target)
    n_rows, n_cols = len(result.row_names), len(result.columns(prompt))
    cell_w = 66 if n_cols <= 60 else max(6, 1800 // n_cols)
    show_text = cell_w >= 40
    xs = list(range(n_cols))
    ys = list(range(n_rows))
    positions = [int(result.positions[prompt, j]) for j in result.columns(prompt)]
    top1 = [[esc(clip(t, CELL_CHARS)) for t in row] for row in result.top_tokens(prompt)]
    marks = []
    for tok, hit in next_labels(result, prompt):
        text = esc(clip(tok, LABEL_CHARS))
        marks.append(f"<span style='color:#1a7f37'><b>✓{text}</b></span>" if hit else text)
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            z=_json_z(grid.z),
            x=xs,
            y=ys,
            text=top1,
            texttemplate="%{text}" if show_text else None,
            textfont={"size": 11, "family": FONT},
            hovertext=hover_texts(result, prompt),
            hoverinfo="text",
            zmin=grid.zmin,
            zmax=grid.zmax,
            colorscale=grid.colorscale,
            reversescale=grid.reverse,
            colorbar=_colorbar(grid),
            xgap=1,
            ygap=1,
            name=grid.stat,
        )
    )
    # An invisible trace on the top axis, so that plotly draws it (the next-token labels).
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[0] * n_cols,
            xaxis="x2",
            mode="markers",
            marker={"opacity": 0},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    model = result.meta.get("model")
    width = max(620, 190 + cell_w * n_cols)
    n_menu = len(available_stats(result)) if menu else 0
    height = max(210 + 22 * n_rows, 130 + 34 * n_menu)  # room for the open drop-down
    if title is None:
        title = esc(prompt_label(result, prompt, max(20, (width - 250) // 9)))
    sub = " · ".join(x for x in (esc(str(model)) if model else "", f"colour: {esc(grid.label)}") if x)
    axis_font = {"family": FONT, "size": 12}
    fig.update_layout(
        title={
            "text": (f"{title}<br>" if title else "")
            + f"<span style='font-size:12px;color:#555'>{sub}</span>",
            "x": 0.01,
            "y": 1 - 14 / height,
            "yref": "container",
            "yanchor": "top",
        },
        font={"family": FONT, "size": 12},
        width=width,
        height=height,
        margin={"l": 70, "r": 20, "t": 140 if title else 120, "b": 80},
        plot_bgcolor="white",
        hoverlabel={"font": {"family": FONT, "size": 12}, "align": "left"},
        xaxis={
            "tickmode": "array",
            "tickvals": xs,
            "ticktext": [  # token over position, so that repeated tokens stay distinct labels
                f"{esc(clip(tok, LABEL_CHARS))}<br><span style='font-size:10px;color:#777'>{pos}</span>"
                for tok, pos in zip(result.column_tokens(prompt), positions, strict=True)
            ],
            "tickangle": 0,
            "tickfont": axis_font,
            "title": {"text": "input token (position)"},
            "range": [-0.5, n_cols - 0.5],
            "showgrid": False,
            "zeroline": False,
            "showticklabels": show_text,
        },
        xaxis2={
            "overlaying": "x",
            "side": "top",
            "matches": "x",
            "tickmode": "array",
            "tickvals": xs,
            "ticktext": marks,
            "tickfont": axis_font,
            "title": {"text": "next token (✓ green: the final top-1 equals it)", "font": {"size": 11}},
            "showgrid": False,
            "zeroline": False,
            "showticklabels": show_text,
        },
        yaxis={
            "tickmode": "array",
            "tickvals": ys,
            "ticktext": [esc(r) for r in result.row_names],
            "tickfont": axis_font,
            "title": {"text": "row (layer)"},
            "range": [-0.5, n_rows - 0.5],
            "showgrid": False,
            "zeroline": False,
        },
    )
    if menu:  # its top 40 px below the figure's top
        plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
        y = 1 + (fig.layout.margin.t - 40) / plot_h
        fig.update_layout(updatemenus=[_stat_menu(result, prompt, grid, y)])
    return fig


def _stat_menu(result: LensResult, prompt: int, current: StatGrid, y: float = 1.2) -> dict[str, Any]:
    buttons = []
    active = 0
    for i, (stat, t) in enumerate(available_stats(result)):
        grid = stat_grid(result, prompt, stat, t)
        if grid.label == current.label:
            active = i
        buttons.append({"label": grid.label, "method": "restyle", "args": [_restyle(grid), [0]]})
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
def _column(result: LensResult, prompt: int, position: int | str) -> list[int]:
    cols = result.columns(prompt)
    if position == "mean":
        return cols
    if isinstance(position, bool) or not isinstance(position, int) or not -len(cols) <= position < len(cols):
        raise LogitLensError(
            f"position {position!r} is out of range for prompt {prompt}, which has {len(cols)} decoded "
            "columns; give an index such as -1 (the last) or 'mean' (the average over positions)"
        )
    return [cols[position]]


def curve(
    result: LensResult, prompt: int, stat: str, target: int = 0, position: int | str = -1
) -> np.ndarray:
    """(R,) one statistic across rows at one decoded column (or averaged over columns with "mean").

    stat: "prob" (of ``target``), "rank" (of ``target``), "kl", "entropy", "top_prob".
    """
    cols = _column(result, prompt, position)
    if stat in ("prob", "rank"):
        if position == "mean":
            raise LogitLensError("a target's probability and rank need one position, not 'mean'")
        data = result.target_probs if stat == "prob" else result.target_ranks
        return data[prompt, :, cols[0], target].numpy().astype(float)
    tensor = {"kl": result.kl_to_final, "entropy": result.entropy, "top_prob": result.top_probs[..., 0]}
    if stat not in tensor:
        raise LogitLensError(f"unknown curve {stat!r}; choose one of: prob, rank, kl, entropy, top_prob")
    return np.nanmean(tensor[stat][prompt][:, cols].numpy().astype(float), axis=1)


def trajectory(
    result: LensResult,
    targets: Sequence[int | str] | None = None,
    prompts: Sequence[int] | None = None,
    stat: str = "prob",
    *,
    position: int | str = -1,
    title: str | None = None,
) -> go.Figure:
    """Statistics across rows, one line per (prompt, target) or per prompt.

    stat="prob": each target's probability (top panel) and rank (bottom panel, log scale, rank 1 on top)
    at ``position`` (a decoded column index, default the last) of each prompt. stat="kl" or "entropy":
    KL to the final row / entropy per prompt, at ``position`` or averaged over positions ("mean").
    targets: indices or names (default all); prompts: indices (default all).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if stat not in TRAJECTORY_STATS:
        raise LogitLensError(f"unknown trajectory {stat!r}; choose one of: {', '.join(TRAJECTORY_STATS)}")
    prompt_ids = [check_prompt(result, p) for p in (range(result.n_prompts) if prompts is None else prompts)]
    rows = list(range(result.n_rows))
    axis = {"tickmode": "array", "tickvals": rows, "ticktext": [esc(r) for r in result.row_names]}
    many_prompts = len(prompt_ids) > 1
    where = {"mean": "mean over positions", -1: "last position"}.get(position, f"column {position}")
    if stat == "prob":
        if not result.target_names:
            raise LogitLensError(
                "this result has no targets to follow; run the lens with targets=[' Paris', ...] or use "
                "stat='kl' or stat='entropy'"
            )
        target_ids = [
            target_index(result, t) for t in (range(len(result.target_names)) if targets is None else targets)
        ]
        fig = make_subplots(
            rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.55, 0.45]
        )
        for p in prompt_ids:
            for t in target_ids:
                name = esc(visible(result.target_names[t]))
                if many_prompts:
                    name += f" · {esc(prompt_label(result, p, 30))}"
                prob = curve(result, p, "prob", t, position)
                rank = curve(result, p, "rank", t, position)
                group = f"{p}-{t}"
                line = {"color": _COLORS[(len(fig.data) // 2) % len(_COLORS)]}
                fig.add_trace(
                    go.Scatter(x=rows, y=prob, name=name, legendgroup=group, mode="lines+markers", line=line),
                    row=1,
                    col=1,
                )
                fig.add_trace(
                    go.Scatter(
                        x=rows,
                        y=rank,
                        name=name,
                        legendgroup=group,
                        showlegend=False,
                        mode="lines+markers",
                        line=line,
                    ),
                    row=2,
                    col=1,
                )
        fig.update_yaxes(title_text="probability", range=[0, 1.02], row=1, col=1)
        fig.update_yaxes(title_text="rank (log)", type="log", autorange="reversed", row=2, col=1)
        fig.update_xaxes(**axis, row=1, col=1)
        fig.update_xaxes(**axis, title_text="row (layer)", row=2, col=1)
        head = title or f"target probability and rank across rows ({where})"
        height = 560
    else:
        fig = go.Figure()
        for p in prompt_ids:
            fig.add_trace(
                go.Scatter(
                    x=rows, y=curve(result, p, stat, 0, position), name=esc(prompt_label(result, p, 40))
                )
            )
        label = "KL to final (nats)" if stat == "kl" else "entropy (nats)"
        fig.update_yaxes(title_text=label, rangemode="tozero")
        fig.update_xaxes(**axis, title_text="row (layer)")
        head = title or f"{label} across rows ({where})"
        height = 420
    fig.update_layout(
        title={"text": head, "x": 0.01},
        font={"family": FONT, "size": 12},
        height=height,
        template="plotly_white",
        legend={"font": {"size": 11}},
        hovermode="x unified",
    )
    return fig


_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f"]
