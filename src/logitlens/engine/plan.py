"""The batch plan and the run loop: which prompts share a forward pass, which cells each batch decodes, and
how its statistics become a ``LensResult``.

``BatchPlan`` holds everything a run decided before any model work (token ids, columns, rows, targets,
answers, the batch order); ``run_local`` and ``run_remote`` walk it batch by batch. The capture batch
(right-padded ids, mask and gather columns) is built in one place, ``batch_inputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from logitlens.core.rows import Row
from logitlens.core.stats import REGISTRY
from logitlens.core.tokens import TokenNamer
from logitlens.engine.inputs import Target, next_id
from logitlens.engine.reduce import answer_logprobs, decode_stats
from logitlens.engine.result import LensResult

__all__ = ["BatchPlan", "Decode", "batch_inputs", "run_local", "run_remote"]

Answer = tuple[str | None, tuple[int, ...]]  # (readable name or None, token ids)


def batch_inputs(
    seqs: Sequence[Sequence[int]], gathers: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) (B, T) right-padded and the gather columns (B, P), on the CPU."""
    t_max = max(len(s) for s in seqs)
    p_max = max(len(g) for g in gathers)
    input_ids = torch.zeros((len(seqs), t_max), dtype=torch.long)
    mask = torch.zeros((len(seqs), t_max), dtype=torch.long)
    gather = torch.zeros((len(seqs), p_max), dtype=torch.long)
    for b, (seq, cols) in enumerate(zip(seqs, gathers, strict=True)):
        input_ids[b, : len(seq)] = torch.tensor(list(seq))
        mask[b, : len(seq)] = 1
        gather[b, : len(cols)] = torch.tensor(list(cols))
    return input_ids, mask, gather


@dataclass
class BatchPlan:
    """A run, decided: per prompt its ids, text and columns (input positions decoded), and its answer.

    Prompts of similar length share a batch (longest first); a batch is a list of prompt indices.
    """

    ids: list[list[int]]
    texts: list[str | None]
    cols: list[list[int]]
    rows: list[Row]
    targets: list[Target]
    top_k: int
    batch_size: int
    meta: dict[str, Any]
    answers: list[Answer] | None = None
    order: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.order = sorted(range(len(self.ids)), key=lambda i: -len(self.ids[i]))

    def answer_ids(self, i: int) -> tuple[int, ...]:
        """Prompt i's answer tokens (empty: none)."""
        return () if self.answers is None else self.answers[i][1]

    def batches(self) -> Iterator[list[int]]:
        """The batches in run order."""
        for start in range(0, len(self.order), self.batch_size):
            yield self.order[start : start + self.batch_size]

    def cells(self, batch: list[int]) -> list[tuple[int, int]]:
        """(batch row, column) of every cell the batch decodes for its prompts."""
        return [(b, j) for b, i in enumerate(batch) for j in range(len(self.cols[i]))]

    def answer_cells(self, batch: list[int]) -> list[tuple[int, int]]:
        """(batch row, gather column) of the position before each answer token, after the prompt's own."""
        return [
            (b, len(self.cols[i]) + t) for b, i in enumerate(batch) for t in range(len(self.answer_ids(i)))
        ]

    def next_ids(self, batch: list[int], cells: list[tuple[int, int]]) -> torch.Tensor:
        """The actual next token of each cell (-1 at a prompt's last position)."""
        return torch.tensor(
            [next_id(self.ids[batch[b]], self.cols[batch[b]][j]) for b, j in cells], dtype=torch.long
        )

    def inputs(self, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The capture batch: each prompt with its answer appended (all but the answer's last token are
        inputs), gathering the prompt's columns, then the position before each answer token."""
        seqs = [self.ids[i] + list(self.answer_ids(i)[:-1]) for i in batch]
        gathers = [
            self.cols[i] + [len(self.ids[i]) - 1 + t for t in range(len(self.answer_ids(i)))] for i in batch
        ]
        return batch_inputs(seqs, gathers)

    def result(
        self, batch: list[int], cells, stats: dict[str, torch.Tensor], namer: TokenNamer
    ) -> LensResult:
        """Scatter one batch's (M, R, ...) statistics into (B, R, P, ...) tensors and wrap them."""
        n, n_rows, n_cols = len(batch), len(self.rows), max(len(self.cols[i]) for i in batch)
        bi = torch.tensor([c[0] for c in cells])
        ji = torch.tensor([c[1] for c in cells])
        full_stats = {}
        for name, value in stats.items():
            stat = REGISTRY[name]
            full = torch.full((n, n_rows, n_cols, *value.shape[2:]), stat.fill, dtype=stat.dtype)
            full[bi, :, ji] = value
            full_stats[name] = full
        positions = torch.full((n, n_cols), -1, dtype=torch.long)
        for b, i in enumerate(batch):
            positions[b, : len(self.cols[i])] = torch.tensor(self.cols[i])
        seqs = [self.ids[i] for i in batch]
        mentioned = set(full_stats["top_ids"][full_stats["top_ids"] >= 0].unique().tolist())
        mentioned.update(t for seq in seqs for t in seq)
        mentioned.update(t for tgt in self.targets for t in tgt.ids)
        return LensResult(
            stats=full_stats,
            positions=positions,
            rows=self.rows,
            row_names=[r.name for r in self.rows],
            tokens=[namer.many(seq) for seq in seqs],
            input_ids=seqs,
            vocab={i: namer(i) for i in sorted(mentioned)},
            target_names=[t.name for t in self.targets],
            target_ids=[list(t.ids) for t in self.targets],
            prompts=[self.texts[i] for i in batch],
            prompt_index=list(batch),
            meta=self.meta,
        )


@dataclass
class Decode:
    """How captured rows become statistics: the decoder's logits function and the run's lens."""

    logits: Callable[[torch.Tensor], torch.Tensor]
    vocab_size: int
    budget_bytes: int
    half_precision: bool
    transform: Any = None  # the lens's chunk transform (None: the logit lens)


def run_local(
    plan: BatchPlan,
    capture: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    decode: Decode,
    namer: TokenNamer,
) -> Iterator[LensResult]:
    """One LensResult per batch: ``capture(input_ids, mask, gather) -> (B, R, P + A, d)``, then the chunked
    decode and reduction of every cell (and of every answer cell when the plan has answers)."""
    for batch in plan.batches():
        captured = capture(*plan.inputs(batch))
        cells, a_cells = plan.cells(batch), plan.answer_cells(batch)
        flat = _gather(captured, cells)  # (M, R, d), a copy
        a_flat = _gather(captured, a_cells) if a_cells else None  # (M_a, R, d)
        del captured  # hold the captured rows once, not twice, while decoding
        stats = decode_stats(
            flat,
            decode.logits,
            vocab_size=decode.vocab_size,
            top_k=plan.top_k,
            next_ids=plan.next_ids(batch, cells),
            targets=[t.ids for t in plan.targets],
            budget_bytes=decode.budget_bytes,
            half_precision=decode.half_precision,
            transform=decode.transform,
        )
        del flat
        res = plan.result(batch, cells, stats, namer)
        if plan.answers is not None:
            res = _with_answers(res, plan, batch, a_flat, decode, namer)
        yield res


def run_remote(
    plan: BatchPlan, backend, budget_bytes: int, remote: bool | str, namer: TokenNamer
) -> Iterator[LensResult]:
    """One LensResult per batch with capture, decode and reduction inside nnsight traces (NDIF or here)."""
    plan.meta = {**plan.meta, "backend": backend.name}
    for batch in plan.batches():
        cells = plan.cells(batch)
        input_ids, mask, gather = plan.inputs(batch)
        stats = backend.remote_stats(
            input_ids, mask, gather, plan.rows, cells, plan.next_ids(batch, cells),
            [t.ids for t in plan.targets], plan.top_k, budget_bytes, None, remote,
        )  # fmt: skip
        yield plan.result(batch, cells, stats, namer)


def _gather(captured: torch.Tensor, cells: list[tuple[int, int]]) -> torch.Tensor:
    bi = torch.tensor([c[0] for c in cells], device=captured.device)
    ji = torch.tensor([c[1] for c in cells], device=captured.device)
    return captured[bi, :, ji]


def _with_answers(res: LensResult, plan: BatchPlan, batch, a_flat, decode: Decode, namer) -> LensResult:
    """Add one batch's teacher-forced answer statistics (N, R) to its result."""
    assert plan.answers is not None
    n, n_rows = len(batch), res.n_rows
    logprobs = torch.full((n, n_rows), float("nan"))
    probs = torch.full((n, n_rows), float("nan"))
    ranks = torch.full((n, n_rows), -1, dtype=torch.long)
    if a_flat is not None:
        a_ids = torch.tensor([t for i in batch for t in plan.answer_ids(i)], dtype=torch.long)
        lp, rk = answer_logprobs(
            a_flat,
            decode.logits,
            a_ids,
            vocab_size=decode.vocab_size,
            budget_bytes=decode.budget_bytes,
            half_precision=decode.half_precision,
            transform=decode.transform,
        )  # (M_a, R) each
        start = 0
        for b, i in enumerate(batch):
            a = len(plan.answer_ids(i))
            if a:
                logprobs[b] = lp[start : start + a].double().sum(0).float()
                probs[b] = lp[start].exp()
                ranks[b] = rk[start]
            start += a
    vocab = dict(res.vocab)
    for i in batch:
        vocab.update({t: namer(t) for t in plan.answer_ids(i)})
    return res.replace(
        answers=[plan.answers[i][0] for i in batch],
        answer_ids=[list(plan.answer_ids(i)) for i in batch],
        answer_logprobs=logprobs,
        answer_probs=probs,
        answer_ranks=ranks,
        vocab=dict(sorted(vocab.items())),
    )
