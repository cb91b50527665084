"""One prompt's summary (final top-1, where it settles, critical layers, targets, answer) and row labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from logitlens.core.tokens import visible
from logitlens.engine.analysis import critical_row_indices, first_stable, largest_drop
from logitlens.engine.result import LensResult
from logitlens.views.model.text import check_prompt

__all__ = [
    "AnswerEnd",
    "CRITICAL_MARK",
    "Change",
    "PromptSummary",
    "ROW_AXIS",
    "TargetEnd",
    "prompt_summary",
    "row_labels",
]


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
    at_last_token: bool = (
        True  # False: the prompt's last position was not decoded; this is the last one that was
    )

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
    rise_list, fall_list = critical_row_indices(result, prompt, position)
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
        at_last_token=pos == len(result.input_ids[prompt]) - 1,
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
