"""The colour grid of one statistic, the statistic menu and the hover records of a prompt's cells."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from logitlens.core.stats import Statistic, drawable, get_statistic
from logitlens.engine.result import LensResult
from logitlens.views.model.text import (
    HOVER_K,
    check_prompt,
    format_value,
    stat_label,
    statistic,
    target_index,
)

__all__ = [
    "Cell",
    "MenuEntry",
    "StatGrid",
    "StatValue",
    "hover_records",
    "menu_entries",
    "rank_ticks",
    "stat_grid",
    "stat_plane",
]


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


def stat_plane(
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
    values = stat_plane(result, spec, prompt, cols, t)  # (R, C)
    label = stat_label(result, spec, t)
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
    out = [MenuEntry(s.name, None, stat_label(result, s, None)) for s in stats if not s.per_target]
    if targets:
        for t in range(len(result.target_names)):
            out += [MenuEntry(s.name, t, stat_label(result, s, t)) for s in stats if s.per_target]
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
            planes.append((s, t, stat_label(result, s, t), stat_plane(result, s, prompt, cols, t).tolist()))
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
