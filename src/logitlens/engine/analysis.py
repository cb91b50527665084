"""Reading a result: summaries, critical layers and the first row that "knows" a token.

Functions of a ``LensResult`` (its methods ``summary``, ``critical_rows`` and ``first_row`` call them) and
of plain sequences (``first_stable``, ``largest_changes``, ``largest_drop``): no model, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from logitlens.core.rows import Row
from logitlens.errors import LogitLensError

if TYPE_CHECKING:
    from logitlens.engine.result import LensResult

__all__ = [
    "CriticalLayer",
    "critical_row_indices",
    "critical_rows",
    "first_row",
    "first_stable",
    "largest_changes",
    "largest_drop",
    "summary",
]


def summary(res: LensResult, position: int = -1):
    """One line per prompt, at one decoded column (default: each prompt's last one).

    Columns: prompt, position, token, final_top1, final_prob; first_stable_row ("after block 28": the
    first row from which the final top-1 token stays top-1) and first_stable_layer (its block index,
    -1 = embeddings); the critical layers: logprob_rises (the 3 rows where the final top-1's
    log-probability rises most from the row before, with the rise in nats) and kl_falls (the 3 rows
    where the KL to the final distribution falls most), both excluding the step out of the
    embeddings, with their block indices in logprob_rise_layers / kl_fall_layers; p/rank at the
    final row for each target; with answers: answer, answer_logprob (teacher-forced, last row),
    answer_prob / answer_rank (first answer token, last row) and answer_first_top1 (the first row
    ranking that token top-1).
    """
    import pandas as pd

    first_top1 = res.answer_first_top1() if res.has_answers else []
    records = []
    for i in range(res.n_prompts):
        j = res.column_at(i, position)
        stable = min(first_stable(res.stats["agrees_with_final"][i, :, j].tolist()), res.n_rows - 1)
        rises, falls = critical_row_indices(res, i, position)
        rec = {
            "prompt": res.prompts[i] if res.prompts and res.prompts[i] is not None else i,
            "position": int(res.positions[i, j]),
            "token": res.tokens[i][int(res.positions[i, j])],
            "final_top1": res.token(int(res.stats["top_ids"][i, -1, j, 0])),
            "final_prob": float(res.stats["top_probs"][i, -1, j, 0]),
            "first_stable_row": res.rows[stable].label,
            "first_stable_layer": res.rows[stable].layer,
            "logprob_rises": _changes_text(res.rows, rises, "+"),
            "kl_falls": _changes_text(res.rows, falls, "-"),
            "logprob_rise_layers": [res.rows[r].layer for r, _ in rises],
            "kl_fall_layers": [res.rows[r].layer for r, _ in falls],
        }
        for t, name in enumerate(res.target_names):
            rec[f"p({name})"] = float(res.stats["target_probs"][i, -1, j, t])
            rec[f"rank({name})"] = int(res.stats["target_ranks"][i, -1, j, t])
        if res.has_answers:
            first = first_top1[i]
            rec["answer"] = res.answers[i]
            rec["answer_logprob"] = float(res.answer_logprobs[i, -1])
            rec["answer_prob"] = float(res.answer_probs[i, -1])
            rec["answer_rank"] = int(res.answer_ranks[i, -1])
            rec["answer_first_top1"] = (
                res.rows[res.row_names.index(first)].label if first is not None else None
            )
        records.append(rec)
    return pd.DataFrame.from_records(records)


class CriticalLayer(NamedTuple):
    """One critical layer: ``layer`` the block index (-1 = embeddings, as the tables' ``layer`` column),
    ``row`` its row name ("23", "23.attn") and ``nats`` the size of the change."""

    layer: int
    row: str
    nats: float


def critical_rows(
    res, prompt: int = 0, position: int = -1, top: int = 3
) -> tuple[list[CriticalLayer], list[CriticalLayer]]:
    """The critical layers of one prompt at one decoded column, as ``CriticalLayer(layer, row, nats)``
    lists (the block index, as every table and the summary number rows):

    - rises: the ``top`` rows r where log p_r(final top-1) - log p_{r-1}(final top-1) is largest
      (the final row's top-1 token; only rises > 0), in nats;
    - falls: the ``top`` rows r where KL_{r-1} - KL_r (KL to the final distribution) is largest
      (only falls > 0), in nats.

    The steps from the embeddings through block 0 are left out: on tied-embedding models the embedding
    row's KL to the final is huge, so the step into block 0 would always win.
    """
    rises, falls = critical_row_indices(res, prompt, position, top)
    return (
        [CriticalLayer(res.rows[r].layer, res.rows[r].name, size) for r, size in rises],
        [CriticalLayer(res.rows[r].layer, res.rows[r].name, size) for r, size in falls],
    )


def critical_row_indices(
    res, prompt: int = 0, position: int = -1, top: int = 3
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``critical_rows`` as (row index into ``res.rows``, nats) pairs, for code that indexes the rows."""
    if (
        isinstance(prompt, bool)
        or not isinstance(prompt, int)
        or not -res.n_prompts <= prompt < res.n_prompts
    ):
        raise LogitLensError(f"prompt index {prompt!r} is out of range: this result has {res.n_prompts}")
    prompt %= res.n_prompts
    j = res.column_at(prompt, position)
    logp = res.stats["final_probs"][prompt, :, j].clamp_min(1e-30).log().tolist()
    kl = res.stats["kl_to_final"][prompt, :, j].tolist()
    return largest_changes(logp, res.rows, top), largest_changes([-v for v in kl], res.rows, top)


def first_row(res: LensResult, target: int = 0, threshold: int = 1, position: int = -1) -> list[str | None]:
    """Per prompt: the first row from which ``target``'s rank stays <= ``threshold`` (None if never)."""
    target = res.target_at(target)
    out: list[str | None] = []
    for i in range(res.n_prompts):
        j = res.column_at(i, position)
        ok = (res.stats["target_ranks"][i, :, j, target] <= threshold).tolist()
        r = first_stable(ok)
        out.append(res.row_names[r] if r < len(ok) else None)
    return out


def first_stable(flags: Sequence[bool]) -> int:
    """The smallest r with every flag from r on true; ``len(flags)`` when the last one is false."""
    r = len(flags)
    while r > 0 and flags[r - 1]:
        r -= 1
    return r


def largest_changes(values: Sequence[float], rows: Sequence[Row], top: int = 3) -> list[tuple[int, float]]:
    """The ``top`` rows r with the largest positive values[r] - values[r-1], largest first, leaving out
    the steps from the embeddings through block 0 (into rows of layer 0, "0.attn" included) and NaN /
    infinite steps: [(r, size), ...]."""
    steps = []
    for r in range(1, len(values)):
        if rows[r - 1].site == "embed" or rows[r].layer <= 0:
            continue
        d = values[r] - values[r - 1]
        if math.isfinite(d) and d > 0:
            steps.append((r, float(d)))
    return sorted(steps, key=lambda x: -x[1])[:top]


def _changes_text(rows: Sequence[Row], changes: Sequence[tuple[int, float]], sign: str) -> str:
    """'after block 20 (+2.31), after block 25 (+1.05)' ("" when there are none)."""
    return ", ".join(f"{rows[r].label} ({sign}{size:.2f})" for r, size in changes)


def largest_drop(values: Sequence[float]) -> tuple[int, float]:
    """(row r, values[r-1] - values[r]) for the r >= 1 where the value falls most; (0, 0.0) for one row."""
    best, size = 0, 0.0
    for r in range(1, len(values)):
        d = values[r - 1] - values[r]
        if best == 0 or d > size:
            best, size = r, d
    return best, float(size)
