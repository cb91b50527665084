"""What the page draws, computed from a held result with the view modules (no model runs here).

``view`` is one prompt's heatmap: the Plotly figure of ``views.plotly.heatmap`` (the same figure as the
HTML report) and, beside it, the plain data of ``views.model.heatmap_model`` that the page needs for clicks
(cells, top tokens, rows, critical layers). ``pin_from_top`` reads a pinned token's probability and rank
across rows from the kept top-k (a result opened from a file, with no model to recompute it).
"""

from __future__ import annotations

import json
import math
from typing import Any

from logitlens import LensResult, LogitLensError
from logitlens.views import model as vm

__all__ = ["answer_rows", "figure_json", "menu", "pin_from_top", "prompt_labels", "summary_lines", "view"]


def figure_json(fig: Any) -> dict[str, Any]:
    """A Plotly figure as the JSON-ready dict plotly.js takes (numpy arrays made lists)."""
    import plotly.io as pio

    return json.loads(pio.to_json(fig, validate=False))


def prompt_labels(result: LensResult, width: int = 80) -> list[str]:
    """A short label per prompt, to pick one."""
    return [vm.prompt_label(result, i, width) for i in range(result.n_prompts)]


def menu(result: LensResult) -> list[dict[str, Any]]:
    """Every (statistic, target) of the registry the result holds, as the selector lists them."""
    return [{"stat": e.stat, "target": e.target, "label": e.label} for e in vm.menu_entries(result)]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def answer_rows(result: LensResult, prompt: int) -> dict[str, Any] | None:
    """The prompt's teacher-forced answer per row (``run(answers=...)``), or None without one."""
    if not result.has_answers or result.answers[prompt] is None:
        return None
    return {
        "text": result.answers[prompt],
        "n_tokens": len(result.answer_ids[prompt]),
        "logprobs": [_finite(v) for v in result.answer_logprobs[prompt].tolist()],
        "probs": [_finite(v) for v in result.answer_probs[prompt].tolist()],
        "ranks": [int(v) if v >= 0 else None for v in result.answer_ranks[prompt].tolist()],
    }


def summary_lines(s: vm.PromptSummary) -> list[str]:
    """What the last position says, in a few short lines."""
    lines = [
        f"last position {s.position} {s.token!r}: final top-1 {s.final_top1!r} (p {s.final_prob:.3f}), "
        f"stable from {s.first_stable_label or s.first_stable_row}"
    ]
    crit = [c.label for c in (*s.rises, *s.falls)]
    if crit:
        lines.append("critical layers (◆): " + ", ".join(dict.fromkeys(crit)))
    for t in s.targets:
        first = f", top-1 from {t.first_label}" if t.first_label else ", never top-1"
        lines.append(f"target {t.name}: p {t.prob:.3f}, rank {t.rank:,}{first}")
    if s.answer is not None:
        a = s.answer
        lines.append(
            f"answer {a.text}: log p {a.logprob:.2f} ({a.n_tokens} tokens), first token rank {a.rank:,}"
        )
    return lines


def view(result_id: str, result: LensResult, prompt: int, stat: str, target: int) -> dict[str, Any]:
    """One prompt of a result as ``ViewResponse``: the heatmap figure and the plain data behind it."""
    from logitlens.views.plotly import heatmap

    spec = vm.statistic(stat)  # one line for an unknown or undrawable statistic
    if spec.per_target:
        if not result.target_names:
            raise LogitLensError(f"statistic {spec.name!r} needs targets; this result tracks none")
        target = vm.target_index(result, target)
    m = vm.heatmap_model(result, prompt, spec.name, target if spec.per_target else 0)
    fig = heatmap(result, prompt, spec.name, target if spec.per_target else 0, menu=False, title="")
    assert m.hover is not None
    return {
        "id": result_id,
        "prompt": m.prompt,
        "n_prompts": result.n_prompts,
        "prompts": prompt_labels(result),
        "model": m.model,
        "lens": m.lens,
        "stat": spec.name,
        "target": target if spec.per_target else None,
        "menu": menu(result),
        "row_names": m.row_names,
        "row_labels": m.row_labels,
        "depths": m.depths,
        "critical": m.summary.critical_rows,
        "positions": m.positions,
        "tokens": m.tokens,
        "cells": m.cells,
        "top": [[[(tok, float(p)) for tok, p in cell.top] for cell in row] for row in m.hover],
        "summary": summary_lines(m.summary),
        "answer": answer_rows(result, m.prompt),
        "figure": figure_json(fig),
    }


def cell_at(result: LensResult, prompt: int, column: int, row: int) -> tuple[int, int, int]:
    """(prompt, decoded column, top-1 token id) of a clicked cell, checked; one line when out of range."""
    prompt = vm.check_prompt(result, prompt)
    cols = result.columns(prompt)
    if not -len(cols) <= column < len(cols):
        raise LogitLensError(f"column {column} is out of range: prompt {prompt + 1} has {len(cols)} columns")
    if not -result.n_rows <= row < result.n_rows:
        raise LogitLensError(f"row {row} is out of range: the result has {result.n_rows} rows")
    j = cols[column]
    return prompt, j, int(result.top_ids[prompt, row, j, 0])


def cell_top(result: LensResult, prompt: int, j: int, row: int) -> list[tuple[str, float]]:
    """The cell's whole kept top-k: (token, probability), most probable first."""
    ids = result.top_ids[prompt, row, j].tolist()
    probs = result.top_probs[prompt, row, j].tolist()
    return [(result.token(i), float(p)) for i, p in zip(ids, probs, strict=True) if i >= 0]


def pin_from_top(result: LensResult, prompt: int, j: int, token_id: int) -> tuple[list, list]:
    """(probs, ranks) of ``token_id`` on every row at decoded column ``j``, read from the kept top-k:
    None where the row's top-k does not hold it."""
    ids = result.top_ids[prompt, :, j].tolist()  # (R, k)
    probs = result.top_probs[prompt, :, j].tolist()
    out_p: list[float | None] = []
    out_r: list[int | None] = []
    for row_ids, row_probs in zip(ids, probs, strict=True):
        k = row_ids.index(token_id) if token_id in row_ids else None
        out_p.append(None if k is None else float(row_probs[k]))
        out_r.append(None if k is None else k + 1)
    return out_p, out_r
