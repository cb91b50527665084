"""LensResult: the statistics of one lens run, with documented shapes, summaries, export and save/load.

Shapes use N prompts, R rows (``row_names``: "embed", "0", ..., "L-1"), P decoded positions (the longest
prompt's, or the number asked for with ``positions=``), k top tokens and T targets. Cells that do not exist
(positions past a shorter prompt's end) hold NaN in float tensors, -1 in id and rank tensors, False in
boolean ones; ``positions`` says which input position each column is for each prompt.

The JSON written by ``save`` is versioned (``meta.version``) and read by ``load`` and by the web viewer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from .errors import LogitLensError

FORMAT = "logitlens.result"
VERSION = 1

_TENSORS = {  # name -> dtype when loading
    "top_ids": torch.long,
    "top_probs": torch.float32,
    "entropy": torch.float32,
    "kl_to_final": torch.float32,
    "cross_entropy": torch.float32,
    "agrees_with_final": torch.bool,
    "target_probs": torch.float32,
    "target_ranks": torch.long,
    "positions": torch.long,
}


@dataclass
class LensResult:
    """What every row predicts at every decoded position of every prompt.

    Attributes (shapes):
        top_ids, top_probs: (N, R, P, k) the k most probable tokens and their probabilities
        entropy: (N, R, P) entropy of each row's distribution, nats
        kl_to_final: (N, R, P) KL(final || row), nats; 0 on the last row
        cross_entropy: (N, R, P) -log p(actual next token), nats; NaN at a prompt's last token
        agrees_with_final: (N, R, P) bool, top-1 equals the final row's top-1
        target_probs, target_ranks: (N, R, P, T) probability (summed over a target's token set) and rank
            (1 = most probable; for a set, its best token) of each target
        positions: (N, P) input position of each column (-1 where a prompt has none)
        row_names: R names; tokens: readable input tokens of each prompt (all positions)
        input_ids: the token ids of each prompt; vocab: readable strings of every id the result mentions
    """

    top_ids: torch.Tensor
    top_probs: torch.Tensor
    entropy: torch.Tensor
    kl_to_final: torch.Tensor
    cross_entropy: torch.Tensor
    agrees_with_final: torch.Tensor
    target_probs: torch.Tensor
    target_ranks: torch.Tensor
    positions: torch.Tensor
    row_names: list[str]
    tokens: list[list[str]]
    input_ids: list[list[int]]
    vocab: dict[int, str]
    target_names: list[str] = field(default_factory=list)
    target_ids: list[list[int]] = field(default_factory=list)
    prompts: list[str | None] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- shapes and lookups -------------------------------------------------------------------------
    @property
    def n_prompts(self) -> int:
        return self.top_ids.shape[0]

    @property
    def n_rows(self) -> int:
        return len(self.row_names)

    @property
    def n_positions(self) -> int:
        return self.top_ids.shape[2]

    @property
    def top_k(self) -> int:
        return self.top_ids.shape[3]

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
        ids = self.top_ids[prompt, :, cols, rank].tolist()
        return [[self.token(i) for i in row] for row in ids]

    def replace(self, **changes) -> LensResult:
        """A copy with some fields replaced (results are treated as immutable)."""
        return replace(self, **changes)

    def select(self, prompts: int | list[int]) -> LensResult:
        """A result holding only some prompts, in the given order."""
        idx = [prompts] if isinstance(prompts, int) else list(prompts)
        if any(not 0 <= i < self.n_prompts for i in idx):
            raise LogitLensError(f"prompt index out of range: {idx} (this result has {self.n_prompts})")
        pick = torch.as_tensor(idx, dtype=torch.long)
        changes: dict[str, Any] = {name: getattr(self, name)[pick] for name in _TENSORS}
        for name in ("tokens", "input_ids", "prompts"):
            seq = getattr(self, name)
            changes[name] = [seq[i] for i in idx] if seq else seq
        return self.replace(**changes)

    # ---- summaries ----------------------------------------------------------------------------------
    def summary(self, position: int = -1):
        """One line per prompt, at one decoded column (default: each prompt's last one).

        Columns: prompt, position, token, final_top1, final_prob, first_stable_row (the first row from
        which the final top-1 token stays top-1), largest_kl_drop_row (the row whose KL to the final
        distribution falls most from the row before), and p/rank at the final row for each target.
        """
        import pandas as pd

        records = []
        for i in range(self.n_prompts):
            cols = self.columns(i)
            j = cols[position]
            agree = self.agrees_with_final[i, :, j].tolist()
            stable = len(agree) - 1
            while stable > 0 and agree[stable - 1]:
                stable -= 1
            kl = self.kl_to_final[i, :, j]
            drops = kl[:-1] - kl[1:]  # (R-1,) drop into row r+1
            drop_row = int(drops.argmax()) + 1 if len(drops) else 0
            rec = {
                "prompt": self.prompts[i] if self.prompts and self.prompts[i] is not None else i,
                "position": int(self.positions[i, j]),
                "token": self.tokens[i][int(self.positions[i, j])],
                "final_top1": self.token(self.top_ids[i, -1, j, 0]),
                "final_prob": float(self.top_probs[i, -1, j, 0]),
                "first_stable_row": self.row_names[stable],
                "largest_kl_drop_row": self.row_names[drop_row],
                "kl_drop": float(drops[drop_row - 1]) if len(drops) else 0.0,
            }
            for t, name in enumerate(self.target_names):
                rec[f"p({name})"] = float(self.target_probs[i, -1, j, t])
                rec[f"rank({name})"] = int(self.target_ranks[i, -1, j, t])
            records.append(rec)
        return pd.DataFrame.from_records(records)

    def first_row(self, target: int = 0, threshold: int = 1, position: int = -1) -> list[str | None]:
        """Per prompt: the first row from which ``target``'s rank stays <= ``threshold`` (None if never)."""
        if not self.target_names:
            raise LogitLensError("this result has no targets; run the lens with targets=[...]")
        out: list[str | None] = []
        for i in range(self.n_prompts):
            j = self.columns(i)[position]
            ok = (self.target_ranks[i, :, j, target] <= threshold).tolist()
            r = len(ok)
            while r > 0 and ok[r - 1]:
                r -= 1
            out.append(self.row_names[r] if r < len(ok) else None)
        return out

    def to_dataframe(self):
        """Long format: one line per (prompt, row, position) that exists.

        Columns: prompt, row, row_name, position, token, next_token, top1, top1_prob, top_tokens,
        top_probs, entropy, kl_to_final, cross_entropy, agrees_with_final, then p(target) and
        rank(target) for each target.
        """
        import pandas as pd

        records = []
        for i in range(self.n_prompts):
            ids = self.input_ids[i]
            for j in self.columns(i):
                pos = int(self.positions[i, j])
                nxt = self.token(ids[pos + 1]) if pos + 1 < len(ids) else None
                for r, name in enumerate(self.row_names):
                    top = self.top_ids[i, r, j].tolist()
                    probs = self.top_probs[i, r, j].tolist()
                    rec = {
                        "prompt": i,
                        "row": r,
                        "row_name": name,
                        "position": pos,
                        "token": self.tokens[i][pos],
                        "next_token": nxt,
                        "top1": self.token(top[0]),
                        "top1_prob": probs[0],
                        "top_tokens": [self.token(t) for t in top],
                        "top_probs": probs,
                        "entropy": float(self.entropy[i, r, j]),
                        "kl_to_final": float(self.kl_to_final[i, r, j]),
                        "cross_entropy": float(self.cross_entropy[i, r, j]),
                        "agrees_with_final": bool(self.agrees_with_final[i, r, j]),
                    }
                    for t, tname in enumerate(self.target_names):
                        rec[f"p({tname})"] = float(self.target_probs[i, r, j, t])
                        rec[f"rank({tname})"] = int(self.target_ranks[i, r, j, t])
                    records.append(rec)
        return pd.DataFrame.from_records(records)

    # ---- views (implemented in the view modules; imported lazily) -----------------------------------
    def __repr__(self) -> str:
        return (
            f"LensResult({self.n_prompts} prompts x {self.n_rows} rows x {self.n_positions} positions, "
            f"top_k={self.top_k}, targets={self.target_names}, model={self.meta.get('model')!r})"
        )

    def plot(self, stat: str = "top_prob", prompt: int = 0, target: int | str = 0, *, menu: bool = False):
        """Plotly heatmap of one prompt: rows (embedding at the bottom) x positions, top-1 token per cell.

        stat colours the cells: "top_prob", "final_prob", "entropy", "kl", "target_prob", "target_rank"
        (the last two for ``target``, an index or a name). menu=True adds a statistic drop-down.
        See ``logitlens.plots.heatmap``.
        """
        from .plots import heatmap

        return heatmap(self, prompt, stat, target, menu=menu)

    def plot_trajectory(self, targets=None, prompts=None, stat: str = "prob", *, position: int | str = -1):
        """Plotly lines across rows: "prob" (targets' probability and log rank), "kl" or "entropy".

        targets: indices or names (default all); prompts: indices (default all); position: a decoded
        column (default the last) or "mean" (kl / entropy only). See ``logitlens.plots.trajectory``.
        """
        from .plots import trajectory

        return trajectory(self, targets, prompts, stat, position=position)

    def _repr_html_(self) -> str:
        """Jupyter: the first prompt's heatmap (with the statistic menu), plotly.js embedded (works offline)."""
        from .report import notebook_html

        return notebook_html(self)

    # ---- save / load --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form (NaN written as null)."""
        data: dict[str, Any] = {
            "meta": {"format": FORMAT, "version": VERSION, **self.meta},
            "row_names": self.row_names,
            "tokens": self.tokens,
            "input_ids": self.input_ids,
            "vocab": {str(k): v for k, v in sorted(self.vocab.items())},
            "target_names": self.target_names,
            "target_ids": self.target_ids,
            "prompts": self.prompts,
        }
        for name in _TENSORS:
            data[name] = _nan_to_none(getattr(self, name).tolist())
        return data

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (see ``to_dict``)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LensResult:
        meta = dict(data.get("meta") or {})
        if meta.get("format") != FORMAT:
            raise LogitLensError("not a logitlens result: meta.format is missing or wrong")
        version = meta.pop("version", None)
        meta.pop("format")
        if version != VERSION:
            raise LogitLensError(
                f"result format version {version} is not supported (this logitlens reads version "
                f"{VERSION}); upgrade logitlens or re-run the lens"
            )
        kwargs: dict[str, Any] = {}
        for name, dtype in _TENSORS.items():
            value = _none_to_nan(data[name]) if dtype is torch.float32 else data[name]
            kwargs[name] = torch.tensor(value, dtype=dtype)
        for f in fields(cls):
            if f.name not in _TENSORS and f.name not in ("vocab", "meta"):
                kwargs[f.name] = data.get(f.name, [])
        kwargs["vocab"] = {int(k): v for k, v in data["vocab"].items()}
        return cls(meta=meta, **kwargs)

    @classmethod
    def load(cls, path: str | Path) -> LensResult:
        """Read a result written by ``save``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LogitLensError(f"cannot read result file {path}: {exc}") from None
        return cls.from_dict(data)


def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def _none_to_nan(x):
    if isinstance(x, list):
        return [_none_to_nan(v) for v in x]
    return float("nan") if x is None else x
