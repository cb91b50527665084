"""Several models (or lenses) on one prompt, side by side on relative depth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from logitlens.core.stats import drawable, get_statistic
from logitlens.engine.result import LensResult
from logitlens.errors import LogitLensError
from logitlens.views.model.curves import Curve, Panel, curve
from logitlens.views.model.grid import StatGrid, menu_entries, stat_grid
from logitlens.views.model.heatmap import HeatmapModel, heatmap_model
from logitlens.views.model.text import check_prompt, prompt_label, stat_label, statistic, target_index

__all__ = ["CompareModel", "compare_grids", "compare_model", "distinct_names", "shared_target"]


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
        label = stat_label(results[0], s, targets[0] if s.per_target and targets is not None else None)
        panels.append(Panel(s.name, s.kind, label, curves))
    common = set.intersection(*(set(r.stats) for r in results))
    menu = [m.stat for m in menu_entries(results[0], targets=False) if m.stat in common]
    if targets is not None:
        menu += [s.name for s in drawable() if s.per_target and s.name in common]
    where = "last position" if position == -1 else f"column {position}"
    return CompareModel(
        names, prompts, targets, heatmaps, menu, panels, prompt_label(results[0], prompts[0], None), where
    )
