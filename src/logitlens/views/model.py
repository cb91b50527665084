"""The view model: everything the views show of a LensResult, computed once as plain data.

No plotting or terminal library is imported here. The Plotly figures (``plotly.py``), the matplotlib image
(``png.py``), the rich tables (``terminal.py``) and the offline HTML pages (``report.py``) render what these
functions return and never read a result's tensors themselves.

Statistics are named as in the registry (``logitlens.stats``); older names ("kl", "top_prob",
"final_prob", "target_prob", "target_rank", "prob", "rank") resolve through ``stats.get_statistic``. A
statistic added with ``stats.register_statistic`` appears in every menu (``menu_entries``) and hover box
(``hover_records``) with no change here.

Colour rule for every statistic: its registry scale, dark at the high end unless ``reverse`` (low entropy,
low KL, rank 1 are dark), so that darker always reads as more certain / closer to the final prediction.

Shapes: R rows (embedding first), C existing (non-padding) decoded columns of one prompt, k top tokens.

Example:
    >>> m = heatmap_model(res, prompt=0, stat="kl")   # same grid as res.plot(stat="kl_to_final")
    >>> m.cells[-1]                                   # the last row's top-1 token at each column
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from logitlens.core.stats import Statistic, drawable, drawable_names, get_statistic
from logitlens.core.tokens import visible
from logitlens.engine.result import LensResult, first_stable, largest_drop
from logitlens.errors import LogitLensError

__all__ = [
    "CELL_CHARS",
    "CRITICAL_MARK",
    "ROW_AXIS",
    "HOVER_K",
    "LABEL_CHARS",
    "AnswerEnd",
    "Cell",
    "Change",
    "CompareModel",
    "Curve",
    "HeatmapModel",
    "MenuEntry",
    "Panel",
    "PromptSummary",
    "StatGrid",
    "StatValue",
    "TargetEnd",
    "TrajectoryModel",
    "check_prompt",
    "clip",
    "column_labels",
    "compare_grids",
    "compare_model",
    "curve",
    "distinct_names",
    "format_value",
    "heatmap_model",
    "hover_records",
    "menu_entries",
    "next_labels",
    "position_text",
    "prompt_label",
    "prompt_summary",
    "rank_ticks",
    "row_labels",
    "shared_target",
    "stat_grid",
    "statistic",
    "target_index",
    "trajectory_model",
]

CELL_CHARS = 8  # a heatmap cell shows at most this many characters of its token
LABEL_CHARS = 9  # axis labels: at most this many characters of a token
HOVER_K = 10  # a hover box lists at most this many top tokens


# ---- names, indices and text ----------------------------------------------------------------------------
def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with … when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def statistic(name: str) -> Statistic:
    """The drawable registry statistic called ``name`` (older aliases accepted); one-line error otherwise."""
    stat = get_statistic(name)
    if stat.kind == "ids" or stat.scale is None:
        raise LogitLensError(
            f"statistic {stat.name!r} holds token ids and is not drawn; choose one of: "
            f"{', '.join(drawable_names())}"
        )
    return stat


def check_prompt(result: LensResult, prompt: int) -> int:
    """A prompt index (negative counts from the end) -> 0..N-1; one-line error when out of range."""
    n = result.n_prompts
    if isinstance(prompt, bool) or not isinstance(prompt, int) or not -n <= prompt < n:
        raise LogitLensError(f"prompt index {prompt!r} is out of range: this result has {n}")
    return prompt % n


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


def _label(result: LensResult, stat: Statistic, target: int | None) -> str:
    return stat.label_for(visible(result.target_names[target]) if target is not None else None)


def prompt_label(result: LensResult, prompt: int, width: int | None = 70) -> str:
    """The prompt's text (or its tokens joined), newlines as ↵, cut to ``width`` characters (None: all)."""
    text = (result.prompts[prompt] if result.prompts else None) or "".join(result.tokens[prompt])
    text = text.replace("\n", "↵")
    return text if width is None else clip(text, width)


def column_labels(result: LensResult, prompt: int = 0, width: int = LABEL_CHARS) -> list[str]:
    """(C,) distinct plain labels of the existing columns: the input token and its position, "␣Tower·3"."""
    pos = result.positions[prompt].tolist()
    return [
        f"{clip(tok, width)}·{pos[j]}"
        for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=True)
    ]


def next_labels(result: LensResult, prompt: int = 0) -> list[tuple[str, bool]]:
    """(C,) the actual next token ("" after the last) and whether the final row's top-1 equals it."""
    ids = result.input_ids[prompt]
    pos = result.positions[prompt].tolist()
    final = result.stats["top_ids"][prompt, -1, :, 0].tolist()  # (P,) the final row's top-1
    out = []
    for j in result.columns(prompt):
        if pos[j] + 1 >= len(ids):
            out.append(("", False))
        else:
            nxt = ids[pos[j] + 1]
            out.append((result.token(nxt), final[j] == nxt))
    return out


def position_text(position: int | str) -> str:
    """How a trajectory's column is described: "last position", "mean over positions", "column 3"."""
    if position == "mean":
        return "mean over positions"
    return "last position" if position == -1 else f"column {position}"


def format_value(stat: Statistic, value: float) -> str:
    """A cell's value as the hover box and tables write it: p 0.123, nats 1.23, rank 1,234, bool yes/no."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if stat.kind == "prob":
        return f"{value:.3f}"
    if stat.kind == "rank":
        return f"{int(value):,}" if value >= 0 else "–"
    if stat.kind == "bool":
        return "yes" if value else "no"
    return f"{value:.3g}"


# ---- the colour grid of one statistic -------------------------------------------------------------------
@dataclass(frozen=True)
class StatGrid:
    """What one statistic looks like on one prompt's heatmap.

    z: (R, C) the colour value of each cell (log10 of the rank for kind "rank"); values: (R, C) the
    statistic itself; zmin / zmax: the colour range; colorscale / reverse: the registry's scale and
    whether its dark end is at zmin; tickvals / ticktext: colour-bar ticks (log scale for ranks), else None.
    """

    stat: str  # the registry name
    label: str  # with the target's name made visible: "p(␣Paris)"
    z: np.ndarray
    values: np.ndarray
    zmin: float
    zmax: float
    colorscale: str
    reverse: bool
    tickvals: list[float] | None = None
    ticktext: list[str] | None = None
    kind: str = "nats"
    target: int | None = None


def _plane(
    result: LensResult, stat: Statistic, prompt: int, cols: list[int], target: int | None
) -> np.ndarray:
    """(R, C) one statistic of one prompt at the given columns, as float (top-1 of per-k statistics)."""
    t = result.stats[stat.name][prompt][:, cols]  # (R, C) [, k] [, T]
    if stat.per_k:
        t = t[..., 0]
    if stat.per_target:
        t = t[..., target]
    return t.numpy().astype(float)


def _finite_max(values: np.ndarray, default: float) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size and finite.max() > 0 else default


def rank_ticks(top: int) -> tuple[list[float], list[str]]:
    """Colour-bar ticks of a log10 rank scale from 0 to ``top``: (0, 1, 2, ...), ("1", "10", "100", ...)."""
    return [float(e) for e in range(top + 1)], [f"{10**e:,}" for e in range(top + 1)]


def stat_grid(
    result: LensResult, prompt: int = 0, stat: str = "top_probs", target: int | str = 0
) -> StatGrid:
    """The (R, C) numbers behind a heatmap of ``stat`` (any drawable statistic) for ``prompt``.

    Colour range by the statistic's kind: "prob" and "bool" 0..1; "nats" 0..the largest value (for
    kl_to_final the 95% quantile, so that a huge embedding-row KL does not wash out the later rows);
    "rank" log10(rank) from 0 to the next power of ten. ``target`` (index or name) picks the target of a
    per-target statistic. "final_probs" is the probability each row gives the final row's top-1 token.
    """
    prompt = check_prompt(result, prompt)
    spec = statistic(stat)
    t = target_index(result, target) if spec.per_target else None
    cols = result.columns(prompt)
    values = _plane(result, spec, prompt, cols, t)  # (R, C)
    label = _label(result, spec, t)
    z, tickvals, ticktext = values, None, None
    if spec.kind in ("prob", "bool"):
        zmin, zmax = 0.0, 1.0
    elif spec.kind == "rank":
        top = max(1, math.ceil(math.log10(max(_finite_max(values, 10.0), 10.0))))
        zmin, zmax = 0.0, float(top)
        tickvals, ticktext = rank_ticks(top)
        z = np.log10(np.clip(values, 1.0, None))
    else:  # nats
        finite = values[np.isfinite(values)]
        zmin = min(0.0, float(finite.min())) if finite.size else 0.0
        zmax = _finite_max(values, 1.0)
        if spec.name == "kl_to_final" and finite.size:  # saturate the top 5%: later rows keep contrast
            q = float(np.quantile(finite, 0.95))
            zmax = q if q > 0 else zmax
        if zmax <= zmin:
            zmax = zmin + 1.0
    return StatGrid(
        stat=spec.name,
        label=label,
        z=z,
        values=values,
        zmin=zmin,
        zmax=zmax,
        colorscale=spec.scale or "Blues",
        reverse=spec.reverse,
        tickvals=tickvals,
        ticktext=ticktext,
        kind=spec.kind,
        target=t,
    )


# ---- the statistic menu ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MenuEntry:
    """One choice of a statistic menu: the statistic, its target (per-target ones) and the label shown."""

    stat: str
    target: int | None
    label: str


def menu_entries(result: LensResult, targets: bool = True) -> list[MenuEntry]:
    """Every (statistic, target) ``result`` can colour a heatmap by, from the registry's ``drawable()``.

    Order: the statistics without targets (registry order, registered ones after the built-ins), then for
    each target its per-target statistics. Statistics the result does not hold are left out.
    """
    stats = [s for s in drawable() if s.name in result.stats]
    out = [MenuEntry(s.name, None, _label(result, s, None)) for s in stats if not s.per_target]
    if targets:
        for t in range(len(result.target_names)):
            out += [MenuEntry(s.name, t, _label(result, s, t)) for s in stats if s.per_target]
    return out


# ---- hover records --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatValue:
    """One statistic of one cell: its name, target (per-target ones), label, value and that value written."""

    stat: str
    target: int | None
    label: str
    value: float
    text: str


@dataclass(frozen=True)
class Cell:
    """What a hover box says about one cell (row x column)."""

    row: str
    column: int  # decoded column index
    position: int  # input position
    token: str  # the input token at that position
    next_token: str | None  # the actual next token (None after the last)
    final_top1: str  # the final row's top-1 token at this column
    final_in_topk: bool  # whether this row's top-k holds it
    values: list[StatValue]  # every drawable statistic but the top-k, then per target
    top: list[tuple[str, float]]  # the top-k (token, probability), most probable first

    def value(self, stat: str, target: int | None = None) -> float:
        name = get_statistic(stat).name
        for v in self.values:
            if v.stat == name and v.target == target:
                return v.value
        raise KeyError((stat, target))


def hover_records(
    result: LensResult, prompt: int = 0, k: int = HOVER_K, columns: Sequence[int] | None = None
) -> list[list[Cell]]:
    """(R, C) one ``Cell`` per row and existing column (or per given decoded ``columns``) of ``prompt``."""
    prompt = check_prompt(result, prompt)
    cols = list(result.columns(prompt) if columns is None else columns)
    pos = result.positions[prompt].tolist()
    toks, ids = result.tokens[prompt], result.input_ids[prompt]
    h = min(k, result.top_k)  # tokens listed per cell
    top_ids = result.stats["top_ids"][prompt][:, cols, :h].tolist()  # (R, C, h)
    top_probs = result.stats["top_probs"][prompt][:, cols, :h].tolist()  # (R, C, h)
    kept = result.stats["top_ids"][prompt][:, cols].tolist()  # (R, C, k) the whole kept top-k
    final = [row[0] for row in kept[-1]]  # (C,) the final row's top-1
    planes: list[tuple[Statistic, int | None, str, list]] = []  # (statistic, target, label, (R, C) values)
    for s in drawable():
        if s.per_k or s.name not in result.stats:
            continue
        for t in range(len(result.target_names)) if s.per_target else [None]:
            planes.append((s, t, _label(result, s, t), _plane(result, s, prompt, cols, t).tolist()))
    planes.sort(key=lambda p: -1 if p[1] is None else p[1])  # statistics without targets first, stable
    out = []
    for r, row in enumerate(result.row_names):
        line = []
        for c, j in enumerate(cols):
            fin = result.token(final[c])
            in_top = final[c] in kept[r][c]
            values = []
            for s, t, label, plane in planes:
                v = plane[r][c]
                text = format_value(s, v)
                if s.name == "final_probs":
                    label = f"p(final top-1 {fin})"
                    if not in_top:
                        text += f" (not in top-{result.top_k})"
                values.append(StatValue(s.name, t, label, v, text))
            nxt = result.token(ids[pos[j] + 1]) if pos[j] + 1 < len(ids) else None
            top = [
                (result.token(i), p) for i, p in zip(top_ids[r][c], top_probs[r][c], strict=True) if i >= 0
            ]
            line.append(Cell(row, j, pos[j], toks[pos[j]], nxt, fin, in_top, values, top))
        out.append(line)
    return out


# ---- one prompt's summary -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetEnd:
    """How a target ends at a prompt's column: its probability and rank in the last row, and the first row
    from which it stays top-1 (None: never)."""

    name: str  # made visible: "␣Paris"
    prob: float
    rank: int
    first_row: str | None
    first_label: str | None = None  # the same row as texts name it: "after block 20"


@dataclass(frozen=True)
class Change:
    """A critical layer: a row where a profile changes most from the row before."""

    row: int  # row index
    name: str  # row name, "12"
    label: str  # "after block 12"
    size: float  # nats, > 0


@dataclass(frozen=True)
class AnswerEnd:
    """A prompt's answer: the teacher-forced log-probability of all its tokens in the last row, its first
    token's probability and rank there, and the first row ranking that token top-1 (None: never)."""

    text: str  # made visible: "␣Paris"
    n_tokens: int
    logprob: float
    prob: float
    rank: int
    first_top1: str | None  # row label, "after block 20"


@dataclass(frozen=True)
class PromptSummary:
    """One prompt at one decoded column, as ``LensResult.summary()`` computes it."""

    prompt: int
    column: int
    position: int
    token: str
    final_top1: str
    final_prob: float
    first_stable: int  # row index from which the final top-1 stays top-1
    first_stable_row: str
    first_stable_depth: float  # its relative depth (0 = embeddings, 1 = the last block)
    critical: int  # row index where the KL to the final row falls most (not out of the embeddings)
    critical_row: str
    kl_drop: float
    targets: list[TargetEnd]
    first_stable_label: str = ""  # "after block 28"
    rises: tuple[Change, ...] = ()  # the final top-1's log-probability rises most (top 3)
    falls: tuple[Change, ...] = ()  # the KL to the final distribution falls most (top 3)
    answer: AnswerEnd | None = None

    @property
    def critical_rows(self) -> list[int]:
        """Row indices of every critical layer (rises and falls), without repeats."""
        return list(dict.fromkeys([c.row for c in self.rises] + [c.row for c in self.falls]))


def prompt_summary(result: LensResult, prompt: int = 0, position: int = -1) -> PromptSummary:
    """Final top-1, first stable row, critical row (largest KL drop) and targets' ends at one column."""
    prompt = check_prompt(result, prompt)
    j = result.columns(prompt)[position]
    n_rows = result.n_rows
    stable = min(first_stable(result.stats["agrees_with_final"][prompt, :, j].tolist()), n_rows - 1)
    rise_list, fall_list = result.critical_rows(prompt, position)
    rows = result.rows

    def changes(found: list[tuple[int, float]]) -> tuple[Change, ...]:
        return tuple(Change(r, rows[r].name, rows[r].label, size) for r, size in found)

    if fall_list:
        crit, drop = fall_list[0]
    else:  # no fall after the embeddings: the largest step of all, as before
        crit, drop = largest_drop(result.stats["kl_to_final"][prompt, :, j].tolist())
    answer = None
    if result.has_answers and result.answers[prompt] is not None:
        first_name = result.answer_first_top1()[prompt]
        answer = AnswerEnd(
            visible(result.answers[prompt] or ""),
            len(result.answer_ids[prompt]),
            float(result.answer_logprobs[prompt, -1]),
            float(result.answer_probs[prompt, -1]),
            int(result.answer_ranks[prompt, -1]),
            rows[result.row_names.index(first_name)].label if first_name is not None else None,
        )
    targets = []
    for t, name in enumerate(result.target_names):
        ranks = result.stats["target_ranks"][prompt, :, j, t]  # (R,)
        first = first_stable((ranks <= 1).tolist())
        targets.append(
            TargetEnd(
                visible(name),
                float(result.stats["target_probs"][prompt, -1, j, t]),
                int(ranks[-1]),
                result.row_names[first] if first < n_rows else None,
                result.rows[first].label if first < n_rows else None,
            )
        )
    pos = int(result.positions[prompt, j])
    return PromptSummary(
        prompt=prompt,
        column=j,
        position=pos,
        token=result.tokens[prompt][pos],
        final_top1=result.token(int(result.stats["top_ids"][prompt, -1, j, 0])),
        final_prob=float(result.stats["top_probs"][prompt, -1, j, 0]),
        first_stable=stable,
        first_stable_row=result.row_names[stable],
        first_stable_depth=result.depths[stable],
        critical=crit,
        critical_row=result.row_names[crit],
        kl_drop=drop,
        targets=targets,
        first_stable_label=result.rows[stable].label,
        rises=changes(rise_list),
        falls=changes(fall_list),
        answer=answer,
    )


CRITICAL_MARK = "◆"  # marks a critical layer's row label in the grids
ROW_AXIS = "after block (◆ critical layer)"  # the grids' row axis title


def row_labels(result: LensResult, critical: Sequence[int] = ()) -> list[str]:
    """(R,) row labels of the grids: "embeddings", then the block index ("12", "12.attn"), with the
    critical layers (``PromptSummary.critical_rows``) marked "12 ◆"."""
    marked = set(critical)
    out = []
    for r, row in enumerate(result.rows):
        text = "embeddings" if row.site == "embed" else row.name
        out.append(f"{text} {CRITICAL_MARK}" if r in marked else text)
    return out


# ---- the heatmap of one prompt --------------------------------------------------------------------------
@dataclass(frozen=True)
class HeatmapModel:
    """Everything a heatmap of one prompt shows; lists are (C,) per column or (R, C) rows x columns."""

    prompt: int
    text: str  # the prompt (newlines as ↵), uncut
    model: str | None  # meta["model"]
    lens: str  # meta["lens"], "logit" by default
    grid: StatGrid
    row_names: list[str]  # (R,) embedding first
    depths: list[float]  # (R,) relative depth from the row specs
    columns: list[int]  # (C,) decoded column indices
    positions: list[int]  # (C,) input position of each column
    tokens: list[str]  # (C,) input token of each column
    column_labels: list[str]  # (C,) "token·position"
    cells: list[list[str]]  # (R, C) top-1 token of each cell, uncut
    next_tokens: list[str]  # (C,) the actual next token, "" after the last
    next_hits: list[bool]  # (C,) the final row's top-1 equals the next token
    summary: PromptSummary  # at the last column
    hover: list[list[Cell]] | None  # (R, C), None when not asked for
    menu: list[MenuEntry]
    row_labels: list[str] = field(default_factory=list)  # (R,) "embeddings", "12", "12 ◆" (critical)

    @property
    def lens_label(self) -> str:
        """The lens, for a title: "tuned lens"; "" for the logit lens (the default goes unsaid)."""
        return "" if self.lens == "logit" else f"{self.lens} lens"


def heatmap_model(
    result: LensResult, prompt: int = 0, stat: str = "top_probs", target: int | str = 0, *, hover: bool = True
) -> HeatmapModel:
    """The view model of one prompt's heatmap coloured by ``stat`` (see ``stat_grid``)."""
    prompt = check_prompt(result, prompt)
    grid = stat_grid(result, prompt, stat, target)
    cols = result.columns(prompt)
    pos = result.positions[prompt].tolist()
    nexts = next_labels(result, prompt)
    model = result.meta.get("model")
    summary = prompt_summary(result, prompt)
    return HeatmapModel(
        prompt=prompt,
        text=prompt_label(result, prompt, None),
        model=str(model) if model else None,
        lens=str(result.meta.get("lens", "logit")),
        grid=grid,
        row_names=list(result.row_names),
        depths=result.depths,
        columns=cols,
        positions=[pos[j] for j in cols],
        tokens=result.column_tokens(prompt),
        column_labels=column_labels(result, prompt),
        cells=result.top_tokens(prompt),
        next_tokens=[t for t, _ in nexts],
        next_hits=[h for _, h in nexts],
        summary=summary,
        hover=hover_records(result, prompt) if hover else None,
        menu=menu_entries(result),
        row_labels=row_labels(result, summary.critical_rows),
    )


# ---- curves across rows ---------------------------------------------------------------------------------
def _curve_columns(result: LensResult, prompt: int, position: int | str) -> list[int]:
    cols = result.columns(prompt)
    if position == "mean":
        return cols
    if isinstance(position, bool) or not isinstance(position, int) or not -len(cols) <= position < len(cols):
        raise LogitLensError(
            f"position {position!r} is out of range for prompt {prompt + 1}, which has {len(cols)} decoded "
            "columns; give an index such as -1 (the last) or 'mean' (the average over positions)"
        )
    return [cols[position]]


def curve(
    result: LensResult, prompt: int, stat: str, target: int | str = 0, position: int | str = -1
) -> np.ndarray:
    """(R,) one statistic across rows at one decoded column (or averaged over columns with "mean").

    stat: any drawable statistic ("target_probs" / "prob" and "target_ranks" / "rank" of ``target``,
    "kl_to_final" / "kl", "entropy", "top_probs" (top-1), ...).
    """
    spec = statistic(stat)
    prompt = check_prompt(result, prompt)
    cols = _curve_columns(result, prompt, position)
    if spec.per_target:
        if position == "mean":
            raise LogitLensError("a target's probability and rank need one position, not 'mean'")
        return _plane(result, spec, prompt, cols, target_index(result, target))[:, 0]
    values = _plane(result, spec, prompt, cols, None)  # (R, C)
    if values.shape[1] == 1:
        return values[:, 0]
    with np.errstate(all="ignore"):
        return np.nanmean(values, axis=1)


@dataclass(frozen=True)
class Curve:
    """One line across rows: y per row, with the row names and relative depths to place it."""

    name: str  # legend text, plain
    prompt: int
    target: int | None
    y: np.ndarray  # (R,)
    row_names: list[str]  # (R,)
    depths: list[float]  # (R,) relative depth of each row, from the row specs


@dataclass(frozen=True)
class Panel:
    """One plot area of curves of one statistic."""

    stat: str
    kind: str  # the statistic's kind: "prob" 0..1, "rank" log scale (rank 1 on top), else from zero
    label: str  # axis label
    curves: list[Curve]


@dataclass(frozen=True)
class TrajectoryModel:
    """Curves across rows of one result: one panel, or two for "target_probs" (probability and rank)."""

    title: str
    where: str  # "last position", "mean over positions", "column 3"
    row_names: list[str]
    panels: list[Panel]


def trajectory_model(
    result: LensResult,
    targets: Sequence[int | str] | None = None,
    prompts: Sequence[int] | None = None,
    stat: str = "target_probs",
    position: int | str = -1,
) -> TrajectoryModel:
    """Curves across rows, one per (prompt, target) for per-target statistics, else one per prompt.

    "target_probs" draws two panels: each target's probability and its rank (the registry's
    "target_ranks"). Any other drawable statistic draws one panel, at ``position`` (a decoded column,
    default the last) or, for statistics without targets, averaged over positions ("mean").
    """
    spec = statistic(stat)
    prompt_ids = [check_prompt(result, p) for p in (range(result.n_prompts) if prompts is None else prompts)]
    many = len(prompt_ids) > 1
    where = position_text(position)
    rows, depths = list(result.row_names), result.depths
    if spec.per_target:
        if not result.target_names:
            raise LogitLensError(
                "this result has no targets to follow; run the lens with targets=[' Paris', ...] or use "
                "stat='kl_to_final' or stat='entropy'"
            )
        tids = [
            target_index(result, t) for t in (range(len(result.target_names)) if targets is None else targets)
        ]
        specs = [spec, get_statistic("target_ranks")] if spec.name == "target_probs" else [spec]
        panels = []
        for s in specs:
            curves = []
            for p in prompt_ids:
                for t in tids:
                    name = visible(result.target_names[t]) + (
                        f" · {prompt_label(result, p, 30)}" if many else ""
                    )
                    curves.append(Curve(name, p, t, curve(result, p, s.name, t, position), rows, depths))
            label = {"target_probs": "probability", "target_ranks": "rank (log)"}.get(s.name, s.label_for())
            panels.append(Panel(s.name, s.kind, label, curves))
        if spec.name == "target_probs":
            title = f"target probability and rank across rows ({where})"
        else:
            title = f"{spec.label_for()} across rows ({where})"
    else:
        curves = [
            Curve(
                prompt_label(result, p, 40), p, None, curve(result, p, spec.name, 0, position), rows, depths
            )
            for p in prompt_ids
        ]
        panels = [Panel(spec.name, spec.kind, spec.label, curves)]
        title = f"{spec.label} across rows ({where})"
    return TrajectoryModel(title, where, rows, panels)


# ---- several models on one prompt -----------------------------------------------------------------------
def distinct_names(results: Sequence[LensResult], names: Sequence[str] | None) -> list[str]:
    """One distinct name per result (default each result's ``meta["model"]``; repeats get " (2)", ...)."""
    if names is None:
        names = [str(r.meta.get("model") or f"model {i}") for i, r in enumerate(results)]
    names = list(names)
    if len(names) != len(results):
        raise LogitLensError(f"got {len(results)} results but {len(names)} names; give one name per result")
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def shared_target(results: Sequence[LensResult], target: int | str) -> list[int] | None:
    """Each result's index of ``target``, or None when some result does not track it (or they differ)."""
    out = []
    for r in results:
        try:
            out.append(target_index(r, target))
        except LogitLensError:
            return None
    names = {results[i].target_names[t] for i, t in enumerate(out)}
    return out if len(names) == 1 else None


def compare_grids(
    results: Sequence[LensResult],
    prompts: Sequence[int],
    targets: list[int] | None,
    stat: str,
    target: int | str,
) -> list[StatGrid]:
    """One ``StatGrid`` of ``stat`` per result (per-target statistics: each result's shared target)."""
    per_target = statistic(stat).per_target
    return [
        stat_grid(r, p, stat, targets[i] if targets is not None and per_target else target)
        for i, (r, p) in enumerate(zip(results, prompts, strict=True))
    ]


@dataclass(frozen=True)
class CompareModel:
    """Several results on one prompt each: heatmaps side by side, curves against relative depth."""

    names: list[str]
    prompts: list[int]
    targets: list[int] | None  # each result's index of the shared target, None if not shared
    heatmaps: list[HeatmapModel]
    menu: list[str]  # statistic names the comparison's menu offers
    panels: list[Panel]  # KL to final, entropy, p(target) when shared; curves' x = Curve.depths
    title: str
    where: str


def compare_model(
    results: Sequence[LensResult],
    names: Sequence[str] | None = None,
    prompt: int | Sequence[int] = 0,
    *,
    stat: str = "top_probs",
    target: int | str = 0,
    position: int = -1,
) -> CompareModel:
    """The view model of ``compare_figure``: ``prompt`` is one index into every result or one per result."""
    if not results:
        raise LogitLensError("compare needs at least one result")
    names = distinct_names(results, names)
    prompt_list = [prompt] * len(results) if isinstance(prompt, int) else list(prompt)
    if len(prompt_list) != len(results):
        raise LogitLensError(f"got {len(results)} results but {len(prompt_list)} prompt indices")
    prompts = [check_prompt(r, p) for r, p in zip(results, prompt_list, strict=True)]
    targets = shared_target(results, target)
    spec = statistic(stat)
    heatmaps = [
        heatmap_model(r, p, spec.name, targets[i] if targets is not None and spec.per_target else target)
        for i, (r, p) in enumerate(zip(results, prompts, strict=True))
    ]
    kinds = [get_statistic("kl_to_final"), get_statistic("entropy")]
    if targets is not None:
        kinds.append(get_statistic("target_probs"))
    panels = []
    for s in kinds:
        curves = [
            Curve(names[i], p, t, curve(r, p, s.name, t or 0, position), list(r.row_names), r.depths)
            for i, (r, p) in enumerate(zip(results, prompts, strict=True))
            for t in [targets[i] if s.per_target and targets is not None else None]
        ]
        label = _label(results[0], s, targets[0] if s.per_target and targets is not None else None)
        panels.append(Panel(s.name, s.kind, label, curves))
    common = set.intersection(*(set(r.stats) for r in results))
    menu = [m.stat for m in menu_entries(results[0], targets=False) if m.stat in common]
    if targets is not None:
        menu += [s.name for s in drawable() if s.per_target and s.name in common]
    where = "last position" if position == -1 else f"column {position}"
    return CompareModel(
        names, prompts, targets, heatmaps, menu, panels, prompt_label(results[0], prompts[0], None), where
    )
