"""LensResult: the statistics of one lens run, with documented shapes, summaries, columnar export and
save/load.

Shapes use N prompts, R rows (``rows``: embed, then each block's output, names in ``row_names``), P
decoded positions (the longest prompt's, or the number asked for with ``positions=``), k top tokens and T
targets. Every statistic of the registry (``logitlens.core.stats``) is an attribute of the same name: (N, R, P),
then (k,) for the top-k ones and (T,) for the per-target ones. Cells that do not exist (positions past a
shorter prompt's end) hold the statistic's fill value (NaN, -1 or False); ``positions`` says which input
position each column is for each prompt.

Reading it (summaries, critical layers) lives in ``logitlens.engine.analysis``; its file and table forms
(JSON, Parquet, Arrow, pandas) in ``logitlens.engine.codecs``; pictures in ``logitlens.views``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from logitlens.core.rows import Row, parse_row_name
from logitlens.core.stats import BUILTIN, REGISTRY, get_statistic
from logitlens.engine import analysis, codecs
from logitlens.engine.analysis import first_stable, largest_changes, largest_drop
from logitlens.engine.codecs import ANSWER_TENSORS, FORMAT, VERSION
from logitlens.errors import LogitLensError

__all__ = ["FORMAT", "VERSION", "LensResult", "first_stable", "largest_changes", "largest_drop"]

# prompt_index is read separately: version 1 files have none (it is then 0..N-1)


class LensResult:
    """What every row predicts at every decoded position of every prompt.

    Shapes: N prompts, R rows, P decoded positions (columns), k top-k, T targets. ``LogitLens.run`` makes
    one; ``LensResult.load`` reads a saved one. Every statistic of the registry is an attribute by its name
    (``res.entropy``) and ``res.stat(name)``.

    Attributes:
        top_ids: (N, R, P, k) the k most probable token ids, most probable first.
        top_probs: (N, R, P, k) their probabilities.
        final_probs: (N, R, P) probability of the final row's top-1 token.
        entropy: (N, R, P) entropy of each row's distribution, nats.
        kl_to_final: (N, R, P) KL(final || row), nats; 0 on the last row.
        cross_entropy: (N, R, P) -log p(actual next token), nats; NaN at a prompt's last token.
        agrees_with_final: (N, R, P) bool, top-1 equals the final row's top-1.
        target_probs: (N, R, P, T) probability of each target (summed over a target's token set).
        target_ranks: (N, R, P, T) rank of each target (1 = most probable; for a set, its best token).
        positions: (N, P) input position of each column (-1 where a prompt has none).
        rows: R ``Row`` specs (layer, site).
        row_names: their names, ["embed", "0", ..., "L-1"].
        tokens: readable input tokens of each prompt (all positions).
        input_ids: the token ids of each prompt.
        vocab: readable strings of every id the result mentions.
        meta: model, lens, dtype, ...
        answers: each prompt's answer (None without one; empty list when the run had no answers).
        answer_ids: each answer's token ids.
        answer_logprobs: (N, R) the whole answer's teacher-forced log-probability per row (sum over its
            tokens).
        answer_probs: (N, R) the first answer token's probability at the prompt's last position (NaN
            without an answer).
        answer_ranks: (N, R) its rank there (-1 without an answer).

    Example:
        >>> res = lens.run("The Eiffel Tower is in the city of", targets=[" Paris"])
        >>> res.target_ranks[0, :, -1, 0]   # (R,) the rank of " Paris" at the last position, row by row
        >>> res.summary(); res.to_dataframe(); res.save("r.parquet")
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
        for name, (dtype, fill) in ANSWER_TENSORS.items():
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
            **{name: getattr(self, name) for name in ANSWER_TENSORS},
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
        for name in ANSWER_TENSORS:  # new rows: answer statistics without answers are re-made empty
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
        for name in ANSWER_TENSORS:
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
            **{name: torch.cat([getattr(r, name) for r in results]) for name in ANSWER_TENSORS},
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
        """One line per prompt at one decoded column: the final top-1, where it settles, the critical layers,
        targets and answers (``logitlens.engine.analysis.summary`` lists the columns).

        Args:
            position: the decoded column (negative counts from the end; default: each prompt's last).

        Returns:
            A pandas DataFrame, one line per prompt.

        Example:
            >>> res.summary()[["prompt", "final_top1", "first_stable_row", "logprob_rises"]]
        """
        return analysis.summary(self, position)

    def critical_rows(self, prompt: int = 0, position: int = -1, top: int = 3):
        """The critical layers of one prompt at one column: (rises, falls), each a list of
        ``CriticalLayer(layer, row, nats)`` with ``layer`` the block index (embeddings = -1), as in the
        summary and the tables (``logitlens.engine.analysis.critical_rows``).

        Example:
            >>> rises, falls = res.critical_rows(0); rises[0]
            CriticalLayer(layer=23, row='23', nats=12.19)
        """
        return analysis.critical_rows(self, prompt, position, top)

    def first_row(self, target: int = 0, threshold: int = 1, position: int = -1) -> list[str | None]:
        """Per prompt: the first row from which ``target``'s rank stays <= ``threshold`` (None if never).

        Args:
            target: the target (index).
            threshold: the rank to stay within (1: top-1).
            position: the decoded column (negative counts from the end).

        Returns:
            One row name (e.g. "28") or None per prompt.

        Example:
            >>> lens.run("The Eiffel Tower is in the city of", targets=[" Paris"]).first_row()
            ['28']
        """
        return analysis.first_row(self, target, threshold, position)

    # ---- columnar export ----------------------------------------------------------------------------

    def to_arrow(self):
        """The long table as a ``pyarrow.Table``, one line per (prompt, existing column, row); see
        ``logitlens.engine.codecs.to_arrow`` for the columns."""
        return codecs.to_arrow(self)

    def to_dataframe(self):
        """The long table (see ``to_arrow``) as a pandas DataFrame; top-k columns hold numpy arrays.

        Example:
            >>> df = res.to_dataframe(); df[df.row_name == "12"].groupby("position").top1_prob.mean()
        """
        return codecs.to_dataframe(self)

    # ---- views (implemented in logitlens.views; imported lazily) ------------------------------------
    def __repr__(self) -> str:
        return (
            f"LensResult({self.n_prompts} prompts x {self.n_rows} rows x {self.n_positions} positions, "
            f"top_k={self.top_k}, targets={self.target_names}, model={self.meta.get('model')!r}, "
            f"lens={self.meta.get('lens', 'logit')!r})"
        )

    def plot(self, stat: str = "top_probs", prompt: int = 0, target: int | str = 0, *, menu: bool = False):
        """Plotly heatmap of one prompt: rows (embedding at the bottom) x positions, top-1 token per cell.

        Args:
            stat: the statistic that colours the cells: any drawable one of the registry ("top_probs",
                "final_probs", "entropy", "kl_to_final", "cross_entropy", "target_probs", "target_ranks",
                ...; older names such as "kl" work too).
            prompt: which prompt (index).
            target: the target of per-target statistics (index or name).
            menu: add a statistic drop-down.

        Returns:
            A Plotly ``Figure`` (see ``logitlens.views.plotly.heatmap``); in a notebook, ``res`` alone shows
            the heatmap offline.

        Example:
            >>> res.plot(stat="kl_to_final").write_html("kl.html", include_plotlyjs=True)
        """
        from logitlens.views.plotly import heatmap

        return heatmap(self, prompt, stat, target, menu=menu)

    def plot_trajectory(
        self, targets=None, prompts=None, stat: str = "target_probs", *, position: int | str = -1
    ):
        """Plotly lines across rows: "target_probs" (targets' probability and log rank), or any other
        per-row statistic such as "kl_to_final" or "entropy". See ``logitlens.views.plotly.trajectory``.

        Args:
            targets: target indices or names (default: all).
            prompts: prompt indices (default: all).
            stat: "target_probs" or a per-row statistic.
            position: a decoded column (default the last) or "mean" (statistics without targets).

        Returns:
            A Plotly ``Figure``, relative depth on the x axis.
        """
        from logitlens.views.plotly import trajectory

        return trajectory(self, targets, prompts, stat, position=position)

    def _repr_html_(self) -> str:
        """Jupyter: the first prompt's heatmap (with the statistic menu), plotly.js embedded (works offline)."""
        from logitlens.views.report import notebook_html

        return notebook_html(self)

    # ---- save / load --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form (version 2); see ``logitlens.engine.codecs.to_dict``."""
        return codecs.to_dict(self)

    def save(self, path: str | Path) -> Path:
        """Write the result whole or not at all: ``.json`` (``to_dict``) or ``.parquet`` (``to_arrow``), by the
        suffix.

        Args:
            path: the file; its suffix picks the format.

        Returns:
            The path written.

        Example:
            >>> res.save("r.parquet"); LensResult.load("r.parquet")
        """
        return codecs.save(self, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LensResult:
        """Read ``to_dict``'s form (version 2) or a version 1 file (tensors as nested lists)."""
        return codecs.from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path) -> LensResult:
        """Read a result written by ``save`` (.json of version 1 or 2, or .parquet).

        Args:
            path: the file.

        Returns:
            The ``LensResult``, equal to the one saved.
        """
        return codecs.load(cls, path)


def _stat_property(name: str, meaning: str) -> property:
    return property(lambda self: self.stats[name], doc=meaning)


for _stat in BUILTIN:  # the built-in statistics as documented, read-only attributes
    setattr(LensResult, _stat.name, _stat_property(_stat.name, _stat.meaning))
