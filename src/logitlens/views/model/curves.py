"""Curves across rows: one statistic per prompt and target, on each row's relative depth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from logitlens.core.stats import Statistic, get_statistic
from logitlens.core.tokens import visible
from logitlens.engine.result import LensResult
from logitlens.errors import LogitLensError
from logitlens.views.model.grid import stat_plane
from logitlens.views.model.text import check_prompt, position_text, prompt_label, statistic, target_index

__all__ = ["Curve", "Panel", "TrajectoryModel", "curve", "trajectory_model"]


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
        return stat_plane(result, spec, prompt, cols, target_index(result, target))[:, 0]
    values = stat_plane(result, spec, prompt, cols, None)  # (R, C)
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
    answers: bool = False,
) -> TrajectoryModel:
    """Curves across rows, one per (prompt, target) for per-target statistics, else one per prompt.

    "target_probs" draws two panels: each target's probability and its rank (the registry's
    "target_ranks"). Any other drawable statistic draws one panel, at ``position`` (a decoded column,
    default the last) or, for statistics without targets, averaged over positions ("mean"). answers=True
    adds, to the "target_probs" panels, each prompt's answer (its first token's probability and rank at the
    prompt's last position, teacher-forced) when the result has answers and ``position`` is -1.
    """
    spec = statistic(stat)
    prompt_ids = [check_prompt(result, p) for p in (range(result.n_prompts) if prompts is None else prompts)]
    where = position_text(position)
    if not spec.per_target:
        curves = [
            Curve(
                prompt_label(result, p, 40),
                p,
                None,
                curve(result, p, spec.name, 0, position),
                list(result.row_names),
                result.depths,
            )
            for p in prompt_ids
        ]
        panels = [Panel(spec.name, spec.kind, spec.label, curves)]
        return TrajectoryModel(f"{spec.label} across rows ({where})", where, list(result.row_names), panels)
    with_answers = answers and spec.name == "target_probs" and position == -1 and result.has_answers
    if not result.target_names and not with_answers:
        raise LogitLensError(
            "this result has no targets to follow; run the lens with targets=[' Paris', ...] (or answers, "
            "drawn with answers=True) or use stat='kl_to_final' or stat='entropy'"
        )
    tids = [
        target_index(result, t) for t in (range(len(result.target_names)) if targets is None else targets)
    ]
    specs = [spec, get_statistic("target_ranks")] if spec.name == "target_probs" else [spec]
    panels = [
        _target_panel(result, s, prompt_ids, tids, position, with_answers and s.name in ANSWER_STATS)
        for s in specs
    ]
    if spec.name == "target_probs":
        what = "target and answer" if with_answers and tids else "answer" if with_answers else "target"
        title = f"{what} probability and rank across rows ({where})"
    else:
        title = f"{spec.label_for()} across rows ({where})"
    return TrajectoryModel(title, where, list(result.row_names), panels)


# per-target statistic -> the answer's statistic of the same meaning (first answer token, last position)
ANSWER_STATS = {"target_probs": "answer_probs", "target_ranks": "answer_ranks"}


def _target_panel(
    result: LensResult,
    spec: Statistic,
    prompt_ids: list[int],
    tids: list[int],
    position: int | str,
    answers: bool,
) -> Panel:
    """One panel of a per-target statistic: a curve per (prompt, target), then each prompt's answer."""
    many = len(prompt_ids) > 1
    rows, depths = list(result.row_names), result.depths
    curves = []
    for p in prompt_ids:
        where = f" · {prompt_label(result, p, 30)}" if many else ""
        for t in tids:
            name = visible(result.target_names[t]) + where
            curves.append(Curve(name, p, t, curve(result, p, spec.name, t, position), rows, depths))
    for p in prompt_ids if answers else []:
        text = result.answers[p]
        if text is None:
            continue
        y = getattr(result, ANSWER_STATS[spec.name])[p].detach().float().cpu().numpy()  # (R,)
        name = f"answer {visible(text)}" + (f" · {prompt_label(result, p, 30)}" if many else "")
        curves.append(Curve(name, p, -1 - p, y, rows, depths))  # target < 0: an answer (its own colour)
    label = {"target_probs": "probability", "target_ranks": "rank (log)"}.get(spec.name, spec.label_for())
    return Panel(spec.name, spec.kind, label, curves)
