"""LensResult: the statistics of one lens run, with documented shapes, summaries, columnar export and
save/load.

Shapes use N prompts, R rows (``rows``: embed, then each block's output, names in ``row_names``), P
decoded positions (the longest prompt's, or the number asked for with ``positions=``), k top tokens and T
targets. Every statistic of the registry (``logitlens.stats``) is an attribute of the same name: (N, R, P),
then (k,) for the top-k ones and (T,) for the per-target ones. Cells that do not exist (positions past a
shorter prompt's end) hold the statistic's fill value (NaN, -1 or False); ``positions`` says which input
position each column is for each prompt.

``save`` picks the format by suffix: ``.json`` (the versioned schema, ``meta.version`` 2, tensors as
base64 little-endian arrays; version 1 files still load) or ``.parquet`` (the long table of
``to_arrow``, with everything else in the file's schema metadata).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitlens.core.rows import Row, parse_row_name
from logitlens.core.stats import BUILTIN, REGISTRY, Statistic, get_statistic
from logitlens.errors import LogitLensError

__all__ = ["FORMAT", "VERSION", "LensResult"]

FORMAT = "logitlens.result"
VERSION = 2
_PARQUET_KEY = b"logitlens"
_WIRE = {torch.float32: "float32", torch.long: "int32", torch.bool: "uint8"}  # tensor dtype -> JSON dtype
_NUMPY = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "int64": np.int64}
_META_FIELDS = ("row_names", "tokens", "input_ids", "target_names", "target_ids", "prompts")
# per-prompt answers: (N, R) tensors, their dtype and the fill of a prompt without an answer
_ANSWER_TENSORS = {
    "answer_logprobs": (torch.float32, math.nan),
    "answer_probs": (torch.float32, math.nan),
    "answer_ranks": (torch.long, -1),
}
# prompt_index is read separately: version 1 files have none (it is then 0..N-1)


class LensResult:
    """What every row predicts at every decoded position of every prompt.

    Attributes (shapes):
        top_ids, top_probs: (N, R, P, k) the k most probable tokens and their probabilities
        final_probs: (N, R, P) probability of the final row's top-1 token
        entropy: (N, R, P) entropy of each row's distribution, nats
        kl_to_final: (N, R, P) KL(final || row), nats; 0 on the last row
        cross_entropy: (N, R, P) -log p(actual next token), nats; NaN at a prompt's last token
        agrees_with_final: (N, R, P) bool, top-1 equals the final row's top-1
        target_probs, target_ranks: (N, R, P, T) probability (summed over a target's token set) and rank
            (1 = most probable; for a set, its best token) of each target
        any registered statistic: by its name
        positions: (N, P) input position of each column (-1 where a prompt has none)
        rows: R ``Row`` specs (layer, site); row_names: their names; tokens: readable input tokens of each
        prompt (all positions); input_ids: the token ids of each prompt; vocab: readable strings of every
        id the result mentions; meta: model, lens, dtype, ...
        answers: each prompt's answer (None without one; empty list when the run had no answers);
        answer_ids: its token ids; answer_logprobs: (N, R) the whole answer's teacher-forced
        log-probability per row (sum over its tokens); answer_probs, answer_ranks: (N, R) the first answer
        token's probability and rank at the prompt's last position (NaN / -1 without an answer)
    """

    def __init__(
        self,
        *,
        positions: torch.Tensor,
        row_names: Sequence[str],
        tokens: list[list[str]],
        input_ids: list[list[int]],
        vocab: dict[int, str],
        target_names: Sequence[str] | None = None,
        target_ids: Sequence[Sequence[int]] | None = None,
        prompts: Sequence[str | None] | None = None,
        meta: dict[str, Any] | None = None,
        rows: Sequence[Row] | None = None,
        prompt_index: Sequence[int] | None = None,
        stats: dict[str, torch.Tensor] | None = None,
        answers: Sequence[str | None] | None = None,
        answer_ids: Sequence[Sequence[int]] | None = None,
        answer_logprobs: torch.Tensor | None = None,
        answer_probs: torch.Tensor | None = None,
        answer_ranks: torch.Tensor | None = None,
        **tensors: torch.Tensor,
    ):
        self.positions = positions
        self.row_names = list(row_names)
        self.rows = list(rows) if rows is not None else [parse_row_name(n) for n in self.row_names]
        if [r.name for r in self.rows] != self.row_names:
            raise LogitLensError("rows and row_names disagree: give rows whose names are row_names")
        self.tokens = tokens
        self.input_ids = input_ids
        self.vocab = dict(vocab)
        self.target_names = list(target_names or [])
        self.target_ids = [list(t) for t in (target_ids or [])]
        self.prompts = list(prompts or [])
        self.meta = dict(meta or {})
        n = positions.shape[0]
        self.prompt_index = list(range(n)) if prompt_index is None else [int(i) for i in prompt_index]
        if len(self.prompt_index) != n:
            raise LogitLensError(f"prompt_index has {len(self.prompt_index)} entries for {n} prompts")
        data = dict(stats or {})
        for name, value in tensors.items():
            if name not in REGISTRY:
                raise LogitLensError(
                    f"LensResult got an unknown field {name!r}; statistics are: {', '.join(REGISTRY)}"
                )
            data[name] = value
        self.stats: dict[str, torch.Tensor] = data
        self._complete()
        self.answers = list(answers or [])
        self.answer_ids = [list(a) for a in (answer_ids or [[] for _ in self.answers])]
        if self.answers and (len(self.answers) != n or len(self.answer_ids) != n):
            raise LogitLensError(f"answers: give one per prompt ({n}), None for a prompt without one")
        given: dict[str, torch.Tensor | None] = {
            "answer_logprobs": answer_logprobs,
            "answer_probs": answer_probs,
            "answer_ranks": answer_ranks,
        }
        for name, (dtype, fill) in _ANSWER_TENSORS.items():
            got = given[name]
            tensor = torch.full((n, self.n_rows), fill, dtype=dtype) if got is None else got
            if tuple(tensor.shape) != (n, self.n_rows):
                raise LogitLensError(f"{name} must have shape (prompts, rows) = {(n, self.n_rows)}")
            setattr(self, name, tensor.to(dtype))

    def _complete(self) -> None:
        """Fill statistics a hand-made or older result lacks: final_probs from the top-k, the rest empty."""
        data = self.stats
        if "final_probs" not in data and "top_ids" in data and "top_probs" in data:
            ids, probs = data["top_ids"], data["top_probs"]  # (N, R, P, k)
            match = ids == ids[:, -1:, :, :1]
            data["final_probs"] = torch.where(match, probs, torch.zeros_like(probs)).sum(-1)
            data["final_probs"][~(self.positions >= 0).unsqueeze(1).expand_as(data["final_probs"])] = math.nan
        n, p = self.positions.shape
        k = data["top_ids"].shape[-1] if "top_ids" in data else 0
        for stat in REGISTRY.values():
            if stat.name not in data:
                shape = (
                    (n, self.n_rows, p)
                    + ((k,) if stat.per_k else ())
                    + ((len(self.target_names),) if stat.per_target else ())
                )
                data[stat.name] = torch.full(shape, stat.fill, dtype=stat.dtype)

    def __getattr__(self, name: str) -> Any:
        stats = self.__dict__.get("stats")
        if stats is not None and name in stats:
            return stats[name]
        raise AttributeError(f"'LensResult' has no attribute {name!r}")

    # ---- shapes and lookups -------------------------------------------------------------------------
    @property
    def has_answers(self) -> bool:
        """Whether some prompt of this result has an answer (``run(..., answers=[...])``)."""
        return any(a is not None for a in self.answers)

    def answer_first_top1(self) -> list[str | None]:
        """Per prompt: the name of the first row that ranks the answer's first token top-1 (None: no row
        does, or no answer)."""
        out: list[str | None] = []
        for i in range(self.n_prompts):
            hits = (self.answer_ranks[i] == 1).nonzero().flatten().tolist()
            out.append(self.row_names[hits[0]] if hits else None)
        return out

    @property
    def n_prompts(self) -> int:
        return self.positions.shape[0]

    @property
    def n_rows(self) -> int:
        return len(self.row_names)

    @property
    def n_positions(self) -> int:
        return self.positions.shape[1]

    @property
    def top_k(self) -> int:
        return self.stats["top_ids"].shape[3]

    @property
    def n_layers(self) -> int:
        """Blocks of the model (from meta, else the highest block index among the rows, + 1)."""
        n = self.meta.get("n_layers")
        return int(n) if n else max((r.layer + 1 for r in self.rows if r.site != "embed"), default=1)

    @property
    def depths(self) -> list[float]:
        """Relative depth of each row: 0 = embeddings, 1 = the last block's output."""
        return [r.depth(self.n_layers) for r in self.rows]

    def stat(self, name: str) -> torch.Tensor:
        """The tensor of a statistic by its name (older aliases such as "kl" accepted)."""
        return self.stats[get_statistic(name).name]

    def token(self, token_id: int) -> str:
        """Readable string of a token id that appears in this result."""
        return self.vocab.get(int(token_id), f"#{int(token_id)}")

    def columns(self, prompt: int = 0) -> list[int]:
        """Indices of the decoded columns that exist for ``prompt`` (drops padding columns)."""
        return [j for j, p in enumerate(self.positions[prompt].tolist()) if p >= 0]

    def column_tokens(self, prompt: int = 0) -> list[str]:
        """Readable input token at each existing column of ``prompt``."""
        pos = self.positions[prompt].tolist()
        return [self.tokens[prompt][pos[j]] for j in self.columns(prompt)]

    def next_tokens(self, prompt: int = 0) -> list[str | None]:
        """The actual next input token after each existing column (None after the last token)."""
        ids = self.input_ids[prompt]
        pos = self.positions[prompt].tolist()
        return [self.token(ids[pos[j] + 1]) if pos[j] + 1 < len(ids) else None for j in self.columns(prompt)]

    def top_tokens(self, prompt: int = 0, rank: int = 0) -> list[list[str]]:
        """(R, existing columns) readable top-``rank`` token of each cell."""
        cols = self.columns(prompt)
        ids = self.stats["top_ids"][prompt, :, cols, rank].tolist()
        return [[self.token(i) for i in row] for row in ids]

    def column_at(self, prompt: int, position: int) -> int:
        """The decoded column of ``prompt`` at ``position`` (an index into its existing columns, -1 = last)."""
        cols = self.columns(prompt)
        if (
            isinstance(position, bool)
            or not isinstance(position, int)
            or not -len(cols) <= position < len(cols)
        ):
            raise LogitLensError(
                f"position {position!r} is out of range for prompt {prompt + 1}, which has {len(cols)} decoded "
                "columns; give an index such as -1 (the last)"
            )
        return cols[position]

    def target_at(self, target: int) -> int:
        """A target index, checked (negative counts from the end)."""
        n = len(self.target_names)
        if n == 0:
            raise LogitLensError("this result has no targets; run the lens with targets=[...]")
        if isinstance(target, bool) or not isinstance(target, int) or not -n <= target < n:
            raise LogitLensError(f"target {target!r} is out of range: this result tracks {n} targets")
        return target % n

    # ---- immutable transforms -----------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        return {
            "positions": self.positions,
            "row_names": self.row_names,
            "rows": self.rows,
            "tokens": self.tokens,
            "input_ids": self.input_ids,
            "vocab": self.vocab,
            "target_names": self.target_names,
            "target_ids": self.target_ids,
            "prompts": self.prompts,
            "prompt_index": self.prompt_index,
            "meta": self.meta,
            "answers": self.answers,
            "answer_ids": self.answer_ids,
            **{name: getattr(self, name) for name in _ANSWER_TENSORS},
        }

    def replace(self, **changes: Any) -> LensResult:
        """A copy with some fields or statistics replaced (results are treated as immutable)."""
        fields = self._fields()
        stats = dict(self.stats)
        for name, value in changes.items():
            if name in fields:
                fields[name] = value
            elif name == "stats":
                stats = dict(value)
            elif name in REGISTRY:
                stats[name] = value
            else:
                raise LogitLensError(f"LensResult has no field {name!r}")
        if "row_names" in changes and "rows" not in changes:
            fields["rows"] = None
        n_rows = len(fields["row_names"])
        for name in _ANSWER_TENSORS:  # new rows: answer statistics without answers are re-made empty
            if name not in changes and not self.has_answers and fields[name].shape[1] != n_rows:
                fields[name] = None
        return LensResult(stats=stats, **fields)

    def select(self, prompts: int | list[int]) -> LensResult:
        """A result holding only some prompts, in the given order."""
        idx = [prompts] if isinstance(prompts, int) else list(prompts)
        if any(isinstance(i, bool) or not 0 <= i < self.n_prompts for i in idx):
            raise LogitLensError(f"prompt index out of range: {idx} (this result has {self.n_prompts})")
        pick = torch.as_tensor(idx, dtype=torch.long)
        changes: dict[str, Any] = {"stats": {k: v[pick] for k, v in self.stats.items()}}
        changes["positions"] = self.positions[pick]
        changes["prompt_index"] = [self.prompt_index[i] for i in idx]
        for name in ("tokens", "input_ids", "prompts", "answers", "answer_ids"):
            seq = getattr(self, name)
            changes[name] = [seq[i] for i in idx] if seq else seq
        for name in _ANSWER_TENSORS:
            changes[name] = getattr(self, name)[pick]
        return self.replace(**changes)

    @classmethod
    def concat(cls, results: Sequence[LensResult]) -> LensResult:
        """One result holding the prompts of several (same rows, top-k and targets), in order.

        Results with fewer decoded columns are padded with each statistic's fill value.
        """
        if not results:
            raise LogitLensError("concat needs at least one result")
        first = results[0]
        for r in results[1:]:
            if (
                r.row_names != first.row_names
                or r.target_names != first.target_names
                or r.top_k != first.top_k
            ):
                raise LogitLensError("concat takes results with the same rows, targets and top_k")
        width = max(r.n_positions for r in results)

        def pad(t: torch.Tensor, fill) -> torch.Tensor:
            if t.shape[2] == width:
                return t
            extra = torch.full(
                (t.shape[0], t.shape[1], width - t.shape[2], *t.shape[3:]), fill, dtype=t.dtype
            )
            return torch.cat([t, extra], dim=2)

        stats = {
            name: torch.cat(
                [pad(r.stats[name], REGISTRY[name].fill if name in REGISTRY else 0) for r in results]
            )
            for name in first.stats
        }
        positions = torch.cat(
            [
                torch.cat(
                    [r.positions, torch.full((r.n_prompts, width - r.n_positions), -1, dtype=torch.long)], 1
                )
                for r in results
            ]
        )
        vocab: dict[int, str] = {}
        for r in results:
            vocab.update(r.vocab)
        with_answers = any(r.answers for r in results)
        answers = {
            "answers": [a for r in results for a in (r.answers or [None] * r.n_prompts)]
            if with_answers
            else [],
            "answer_ids": [a for r in results for a in (r.answer_ids or [[]] * r.n_prompts)]
            if with_answers
            else [],
            **{name: torch.cat([getattr(r, name) for r in results]) for name in _ANSWER_TENSORS},
        }
        return first.replace(
            **answers,
            stats=stats,
            positions=positions,
            tokens=[t for r in results for t in r.tokens],
            input_ids=[t for r in results for t in r.input_ids],
            prompts=[t for r in results for t in r.prompts],
            prompt_index=[t for r in results for t in r.prompt_index],
            vocab=dict(sorted(vocab.items())),
        )

    # ---- summaries ----------------------------------------------------------------------------------
    def summary(self, position: int = -1):
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

        first_top1 = self.answer_first_top1() if self.has_answers else []
        records = []
        for i in range(self.n_prompts):
            j = self.column_at(i, position)
            stable = min(first_stable(self.stats["agrees_with_final"][i, :, j].tolist()), self.n_rows - 1)
            rises, falls = self.critical_rows(i, position)
            rec = {
                "prompt": self.prompts[i] if self.prompts and self.prompts[i] is not None else i,
                "position": int(self.positions[i, j]),
                "token": self.tokens[i][int(self.positions[i, j])],
                "final_top1": self.token(int(self.stats["top_ids"][i, -1, j, 0])),
                "final_prob": float(self.stats["top_probs"][i, -1, j, 0]),
                "first_stable_row": self.rows[stable].label,
                "first_stable_layer": self.rows[stable].layer,
                "logprob_rises": _changes_text(self.rows, rises, "+"),
                "kl_falls": _changes_text(self.rows, falls, "-"),
                "logprob_rise_layers": [self.rows[r].layer for r, _ in rises],
                "kl_fall_layers": [self.rows[r].layer for r, _ in falls],
            }
            for t, name in enumerate(self.target_names):
                rec[f"p({name})"] = float(self.stats["target_probs"][i, -1, j, t])
                rec[f"rank({name})"] = int(self.stats["target_ranks"][i, -1, j, t])
            if self.has_answers:
                first = first_top1[i]
                rec["answer"] = self.answers[i]
                rec["answer_logprob"] = float(self.answer_logprobs[i, -1])
                rec["answer_prob"] = float(self.answer_probs[i, -1])
                rec["answer_rank"] = int(self.answer_ranks[i, -1])
                rec["answer_first_top1"] = (
                    self.rows[self.row_names.index(first)].label if first is not None else None
                )
            records.append(rec)
        return pd.DataFrame.from_records(records)

    def critical_rows(
        self, prompt: int = 0, position: int = -1, top: int = 3
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The critical layers of one prompt at one decoded column, as (row index, size) lists:

        - rises: the ``top`` rows r where log p_r(final top-1) - log p_{r-1}(final top-1) is largest
          (the final row's top-1 token; only rises > 0), in nats;
        - falls: the ``top`` rows r where KL_{r-1} - KL_r (KL to the final distribution) is largest
          (only falls > 0), in nats.

        The steps from the embeddings through block 0 are left out: on tied-embedding models the embedding
        row's KL to the final is huge, so the step into block 0 would always win.
        """
        if (
            isinstance(prompt, bool)
            or not isinstance(prompt, int)
            or not -self.n_prompts <= prompt < self.n_prompts
        ):
            raise LogitLensError(f"prompt index {prompt!r} is out of range: this result has {self.n_prompts}")
        prompt %= self.n_prompts
        j = self.column_at(prompt, position)
        logp = self.stats["final_probs"][prompt, :, j].clamp_min(1e-30).log().tolist()
        kl = self.stats["kl_to_final"][prompt, :, j].tolist()
        return largest_changes(logp, self.rows, top), largest_changes([-v for v in kl], self.rows, top)

    def first_row(self, target: int = 0, threshold: int = 1, position: int = -1) -> list[str | None]:
        """Per prompt: the first row from which ``target``'s rank stays <= ``threshold`` (None if never)."""
        target = self.target_at(target)
        out: list[str | None] = []
        for i in range(self.n_prompts):
            j = self.column_at(i, position)
            ok = (self.stats["target_ranks"][i, :, j, target] <= threshold).tolist()
            r = first_stable(ok)
            out.append(self.row_names[r] if r < len(ok) else None)
        return out

    # ---- columnar export ----------------------------------------------------------------------------
    def _long_columns(self) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """The long table as numpy columns, one line per (prompt, existing column, row), in that order.

        Returns (columns, the per-target column names of each per-target statistic).
        """
        n_rows = self.n_rows
        pos = self.positions.numpy()
        ii, jj = np.nonzero(pos >= 0)  # (M,) existing cells, prompt-major then column
        m = len(ii)
        cell_pos = pos[ii, jj]
        cells = list(zip(ii.tolist(), cell_pos.tolist(), strict=True))
        tok_id = np.array([self.input_ids[i][p] for i, p in cells], dtype=np.int64)
        nxt_id = np.array(
            [self.input_ids[i][p + 1] if p + 1 < len(self.input_ids[i]) else -1 for i, p in cells],
            dtype=np.int64,
        )
        texts = np.array(
            [self.prompts[i] if self.prompts else None for i in range(self.n_prompts)], dtype=object
        )
        cols: dict[str, Any] = {
            "prompt_index": np.repeat(np.asarray(self.prompt_index, dtype=np.int64)[ii], n_rows),
            "prompt": np.repeat(texts[ii] if m else texts[:0], n_rows),
            "row": np.tile(np.arange(n_rows, dtype=np.int32), m),
            "row_name": np.tile(np.array(self.row_names, dtype=object), m),
            "layer": np.tile(np.array([r.layer for r in self.rows], dtype=np.int32), m),
            "site": np.tile(np.array([r.site for r in self.rows], dtype=object), m),
            "depth": np.tile(np.array(self.depths, dtype=np.float32), m),
            "column": np.repeat(jj, n_rows).astype(np.int32),
            "position": np.repeat(cell_pos, n_rows).astype(np.int64),
            "token_id": np.repeat(tok_id, n_rows),
            "token": np.repeat(np.array([self.tokens[i][p] for i, p in cells], dtype=object), n_rows),
            "next_token_id": np.repeat(nxt_id, n_rows),
            "next_token": np.repeat(_id_names(self.vocab, nxt_id), n_rows),
        }
        ii_t, jj_t = torch.as_tensor(ii), torch.as_tensor(jj)

        def lines(t: torch.Tensor) -> np.ndarray:  # (N, R, P, ...) -> (M * R, ...)
            return t.transpose(1, 2)[ii_t, jj_t].reshape(m * n_rows, *t.shape[3:]).numpy()

        names = _id_names(self.vocab, lines(self.stats["top_ids"]))  # (M*R, k)
        cols["top1"] = names[:, 0]
        cols["top1_prob"] = lines(self.stats["top_probs"][..., 0])
        cols["top_tokens"] = names
        per_target: dict[str, list[str]] = {}
        for name, stat in REGISTRY.items():
            value = lines(self.stats[name])
            if stat.per_target:
                per_target[name] = _target_columns(stat, self.target_names)
                for t, col in enumerate(per_target[name]):
                    cols[col] = value[:, t]
            else:
                cols[name] = value
        if self.has_answers:  # per (prompt, row), repeated over the prompt's positions
            answers = np.array(list(self.answers), dtype=object)
            cols["answer"] = np.repeat(answers[ii] if m else answers[:0], n_rows)
            for name, col in (
                ("answer_logprobs", "answer_logprob"),
                ("answer_probs", "p(answer)"),
                ("answer_ranks", "rank(answer)"),
            ):
                cols[col] = getattr(self, name)[torch.as_tensor(ii)].reshape(-1).numpy()
        return cols, per_target

    def to_arrow(self):
        """The long table as a ``pyarrow.Table``: one line per (prompt, existing column, row).

        Columns: prompt_index (the prompt's index in the run's input), prompt (its text, or null for
        token ids), row (index in ``rows``), row_name ("embed", "12", "12.attn"), layer (block index, -1
        for the embeddings), site, depth (0 = embeddings, 1 = last block), column (decoded column index),
        position (input position), token_id, token, next_token_id (-1 after the last token), next_token,
        top1, top1_prob, top_tokens (list of k strings), then every statistic of the registry under its
        name (top_ids, top_probs: lists of k), per-target ones as one column per target: ``p( Paris)``,
        ``rank( Paris)``. The schema metadata holds the rest of the result (key b"logitlens").
        """
        import pyarrow as pa

        cols, per_target = self._long_columns()
        arrays = {}
        for name, value in cols.items():
            if isinstance(value, np.ndarray) and value.ndim == 2:  # (lines, k) -> fixed-size lists
                k = value.shape[1]
                flat = pa.array(value.reshape(-1), type=pa.string() if value.dtype == object else None)
                arrays[name] = pa.FixedSizeListArray.from_arrays(flat, k)
            elif isinstance(value, np.ndarray) and value.dtype == object:
                arrays[name] = pa.array(value.tolist(), type=pa.string())
            else:
                arrays[name] = pa.array(value)
        meta = self._header()
        meta["per_target_columns"] = per_target
        table = pa.table(arrays)
        return table.replace_schema_metadata({_PARQUET_KEY: json.dumps(meta, ensure_ascii=False)})

    def to_dataframe(self):
        """The long table (see ``to_arrow``) as a pandas DataFrame; top-k columns hold numpy arrays.

        Example:
            >>> df = res.to_dataframe(); df[df.row_name == "12"].groupby("position").top1_prob.mean()
        """
        import pandas as pd

        cols, _ = self._long_columns()
        # A (lines, k) column becomes one numpy row per line (views of one array: no per-cell lists).
        return pd.DataFrame({name: list(v) if v.ndim == 2 else v for name, v in cols.items()})

    # ---- views (implemented in logitlens.views; imported lazily) ------------------------------------
    def __repr__(self) -> str:
        return (
            f"LensResult({self.n_prompts} prompts x {self.n_rows} rows x {self.n_positions} positions, "
            f"top_k={self.top_k}, targets={self.target_names}, model={self.meta.get('model')!r}, "
            f"lens={self.meta.get('lens', 'logit')!r})"
        )

    def plot(self, stat: str = "top_probs", prompt: int = 0, target: int | str = 0, *, menu: bool = False):
        """Plotly heatmap of one prompt: rows (embedding at the bottom) x positions, top-1 token per cell.

        stat colours the cells: any drawable statistic of the registry ("top_probs", "final_probs",
        "entropy", "kl_to_final", "cross_entropy", "target_probs", "target_ranks", ...; older names such
        as "kl" work too). ``target`` picks the target of per-target statistics (index or name). menu=True
        adds a statistic drop-down. See ``logitlens.views.plotly.heatmap``.
        """
        from logitlens.views.plotly import heatmap

        return heatmap(self, prompt, stat, target, menu=menu)

    def plot_trajectory(
        self, targets=None, prompts=None, stat: str = "target_probs", *, position: int | str = -1
    ):
        """Plotly lines across rows: "target_probs" (targets' probability and log rank), or any other
        per-row statistic such as "kl_to_final" or "entropy". See ``logitlens.views.plotly.trajectory``."""
        from logitlens.views.plotly import trajectory

        return trajectory(self, targets, prompts, stat, position=position)

    def _repr_html_(self) -> str:
        """Jupyter: the first prompt's heatmap (with the statistic menu), plotly.js embedded (works offline)."""
        from logitlens.views.report import notebook_html

        return notebook_html(self)

    # ---- save / load --------------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        """Everything but the statistics, JSON-ready."""
        return {
            "meta": {"format": FORMAT, "version": VERSION, **self.meta},
            "rows": [r.to_dict() for r in self.rows],
            "row_names": self.row_names,
            "tokens": self.tokens,
            "input_ids": self.input_ids,
            "vocab": {str(k): v for k, v in sorted(self.vocab.items())},
            "target_names": self.target_names,
            "target_ids": self.target_ids,
            "prompts": self.prompts,
            "prompt_index": self.prompt_index,
            "answers": self.answers,
            "answer_ids": self.answer_ids,
            "shape": {"prompts": self.n_prompts, "rows": self.n_rows, "positions": self.n_positions},
        }

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form (version 2): the header, then ``positions`` and every statistic as
        ``{"dtype", "shape", "data"}`` with ``data`` the base64 of the little-endian array (int64 tensors
        as int32, bool as uint8). Registered statistics are included; loading needs them registered."""
        data = self._header()
        data["tensors"] = {
            name: _encode(t) for name, t in {"positions": self.positions, **self.stats}.items()
        }
        data["statistics"] = {
            name: {"per_target": REGISTRY[name].per_target, "per_k": REGISTRY[name].per_k}
            for name in self.stats
            if name in REGISTRY
        }
        if self.answers:
            data["answer_tensors"] = {name: _encode(getattr(self, name)) for name in _ANSWER_TENSORS}
        return data

    def save(self, path: str | Path) -> Path:
        """Write the result: ``.json`` (``to_dict``) or ``.parquet`` (``to_arrow``), by the suffix."""
        from logitlens.core.files import write_atomic

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = self.to_arrow()
            return write_atomic(
                path, lambda tmp: pq.write_table(table, tmp, compression="zstd"), "the result"
            )
        if suffix == ".json":
            text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)
            return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the result")
        raise LogitLensError(f"cannot save to {path}: the file name must end in .json or .parquet")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LensResult:
        """Read ``to_dict``'s form (version 2) or a version 1 file (tensors as nested lists)."""
        meta = dict(data.get("meta") or {})
        if meta.get("format") != FORMAT:
            raise LogitLensError("not a logitlens result: meta.format is missing or wrong")
        version = meta.pop("version", None)
        meta.pop("format")
        if version not in (1, VERSION):
            raise LogitLensError(
                f"result format version {version} is not supported (this logitlens reads versions 1 and "
                f"{VERSION}); upgrade logitlens or re-run the lens"
            )
        try:
            if version == 1:
                tensors = {
                    name: _from_lists(data[name], torch.long if name == "positions" else REGISTRY[name].dtype)
                    for name in (*_V1_STATS, "positions")
                }
            else:
                unknown = [n for n in data["tensors"] if n != "positions" and n not in REGISTRY]
                if unknown:
                    raise LogitLensError(
                        f"the result holds statistic {unknown[0]!r}, which is not registered here; "
                        "register it with logitlens.register_statistic before loading"
                    )
                tensors = {
                    name: _decode(enc, torch.long if name == "positions" else REGISTRY[name].dtype)
                    for name, enc in data["tensors"].items()
                }
            positions = tensors.pop("positions")
            rows = [Row(int(r["layer"]), r["site"]) for r in data["rows"]] if data.get("rows") else None
            kwargs = {f: data.get(f, []) for f in _META_FIELDS}
            kwargs["prompt_index"] = data.get("prompt_index")
            vocab = {int(k): v for k, v in data["vocab"].items()}
            answer_kwargs = _answer_fields(data)
            for name, enc in (data.get("answer_tensors") or {}).items():
                if name in _ANSWER_TENSORS:
                    answer_kwargs[name] = _decode(enc, _ANSWER_TENSORS[name][0])
        except (KeyError, TypeError, ValueError) as exc:
            raise LogitLensError(
                f"the result file is incomplete or damaged: {type(exc).__name__}: {exc}"
            ) from exc
        return cls(
            positions=positions, rows=rows, vocab=vocab, meta=meta, stats=tensors, **kwargs, **answer_kwargs
        )

    @classmethod
    def load(cls, path: str | Path) -> LensResult:
        """Read a result written by ``save`` (.json of version 1 or 2, or .parquet)."""
        path = Path(path)
        if path.suffix.lower() == ".parquet":
            return _load_parquet(cls, path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise LogitLensError(f"cannot read result file {path}: {exc.strerror or exc}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LogitLensError(
                f"cannot read result file {path}: it is not JSON ({type(exc).__name__}); give a .json or "
                ".parquet file written by LensResult.save"
            ) from exc
        if not isinstance(data, dict):
            raise LogitLensError(f"not a logitlens result: {path} holds JSON but not a result object")
        return cls.from_dict(data)


def _stat_property(name: str, meaning: str) -> property:
    return property(lambda self: self.stats[name], doc=meaning)


for _stat in BUILTIN:  # the built-in statistics as documented, read-only attributes
    setattr(LensResult, _stat.name, _stat_property(_stat.name, _stat.meaning))


_V1_STATS = (
    "top_ids",
    "top_probs",
    "entropy",
    "kl_to_final",
    "cross_entropy",
    "agrees_with_final",
    "target_probs",
    "target_ranks",
)


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


def _target_columns(stat: Statistic, names: Sequence[str]) -> list[str]:
    """The statistic's column per target (``p( Paris)``), with ``#t`` added to a name that repeats."""
    seen: dict[str, int] = {}
    out = []
    for t, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        out.append(stat.column_for(name if seen[name] == 1 else f"{name}#{t}"))
    return out


def _id_names(vocab: dict[int, str], ids: np.ndarray) -> np.ndarray:
    """Readable strings of an id array (any shape); ids not in ``vocab`` become ``#id``, -1 becomes None."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    names = np.array(
        [None if i < 0 else vocab.get(int(i), f"#{int(i)}") for i in uniq.tolist()], dtype=object
    )
    return names[inverse.reshape(ids.shape)]


def _encode(t: torch.Tensor) -> dict[str, Any]:
    wire = _WIRE.get(t.dtype)
    if wire is None:
        raise LogitLensError(f"cannot save a {t.dtype} tensor; statistics are float32, int64 or bool")
    arr = t.detach().cpu().numpy().astype(_NUMPY[wire]).astype(np.dtype(_NUMPY[wire]).newbyteorder("<"))
    return {"dtype": wire, "shape": list(t.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def _decode(enc: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    raw = base64.b64decode(enc["data"])
    arr = np.frombuffer(raw, dtype=np.dtype(_NUMPY[enc["dtype"]]).newbyteorder("<")).reshape(enc["shape"])
    return torch.from_numpy(arr.astype(_NUMPY[enc["dtype"]])).to(dtype)


def _from_lists(value: Any, dtype: torch.dtype) -> torch.Tensor:
    """Version 1 tensors: nested lists with null for NaN."""
    if dtype is torch.float32:
        arr = np.array(value, dtype=object)
        arr = np.where(arr == None, np.nan, arr).astype(np.float32)  # noqa: E711 - elementwise null test
        return torch.from_numpy(arr)
    return torch.tensor(value, dtype=dtype)


def _load_parquet(cls: type[LensResult], path: Path) -> LensResult:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise LogitLensError(f"cannot read result file {path}: {exc}") from exc
    raw = (table.schema.metadata or {}).get(_PARQUET_KEY)
    if raw is None:
        raise LogitLensError(f"not a logitlens result: {path} has no logitlens metadata")
    header = json.loads(raw)
    shape = header.pop("shape")
    per_target = header.pop("per_target_columns", {})
    n, n_rows, p = shape["prompts"], shape["rows"], shape["positions"]
    global_index = np.asarray(header.get("prompt_index") or range(n), dtype=np.int64)
    lookup = np.full(int(global_index.max(initial=0)) + 1, -1, dtype=np.int64)
    lookup[global_index] = np.arange(len(global_index))
    prompt = lookup[table.column("prompt_index").to_numpy()]  # the file's prompt indices -> 0..N-1
    column = np.array(table.column("column").to_numpy(), dtype=np.int64)
    row = np.array(table.column("row").to_numpy(), dtype=np.int64)
    positions = torch.full((n, p), -1, dtype=torch.long)
    positions[torch.as_tensor(prompt), torch.as_tensor(column)] = torch.as_tensor(
        np.array(table.column("position").to_numpy(), dtype=np.int64), dtype=torch.long
    )
    index = (torch.as_tensor(prompt, dtype=torch.long), torch.as_tensor(row, dtype=torch.long),
             torch.as_tensor(column, dtype=torch.long))  # fmt: skip
    stats: dict[str, torch.Tensor] = {}
    for name, stat in REGISTRY.items():
        if stat.per_target:
            cols = per_target.get(name, [])
            if not all(c in table.column_names for c in cols):
                continue
            value = np.stack([_numeric(table.column(c)) for c in cols], -1) if cols else None
            extra: tuple[int, ...] = (len(cols),)
        elif name in table.column_names:
            value = _numeric(table.column(name))
            extra = value.shape[1:]
        else:
            continue
        out = torch.full((n, n_rows, p, *extra), stat.fill, dtype=stat.dtype)
        if value is not None:
            out[index] = torch.as_tensor(value).to(stat.dtype)
        stats[name] = out
    data = {**header, "tensors": {}}
    meta = dict(data["meta"])
    meta.pop("format", None)
    version = meta.pop("version", None)
    if version != VERSION:
        raise LogitLensError(f"result format version {version} is not supported in Parquet files")
    rows = [Row(int(r["layer"]), r["site"]) for r in header["rows"]]
    kwargs = {f: header.get(f, []) for f in _META_FIELDS}
    kwargs["prompt_index"] = header.get("prompt_index")
    vocab = {int(k): v for k, v in header["vocab"].items()}
    answer_kwargs = _answer_fields(header)
    for name, col in (
        ("answer_logprobs", "answer_logprob"),
        ("answer_probs", "p(answer)"),
        ("answer_ranks", "rank(answer)"),
    ):
        if col in table.column_names:
            dtype, fill = _ANSWER_TENSORS[name]
            out = torch.full((n, n_rows), fill, dtype=dtype)
            out[index[0], index[1]] = torch.as_tensor(_numeric(table.column(col))).to(dtype)
            answer_kwargs[name] = out
    return cls(positions=positions, rows=rows, vocab=vocab, meta=meta, stats=stats, **kwargs, **answer_kwargs)


def _answer_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The answers and their token ids of a saved result (absent in files without answers)."""
    return {"answers": data.get("answers") or [], "answer_ids": data.get("answer_ids") or []}


def _numeric(col) -> np.ndarray:
    """A Parquet column as numpy: fixed-size lists become (lines, k)."""
    import pyarrow as pa

    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
        flat = col.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.array(flat).reshape(-1, width)
    return np.array(col.to_numpy(zero_copy_only=False))
