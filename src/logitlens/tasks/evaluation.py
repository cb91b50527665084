"""Corpus metrics: how well each row's decoding predicts the text, averaged over every position of a corpus.

``evaluate(lens, data)`` packs a corpus into sequences (``logitlens.tasks.data``), runs them through the lens's
batched path (``LogitLens.iter_run``: one forward per batch, every row x position of the batch decoded in
the same large products and reduced on the device) and folds each batch into running per-row sums
(``RowAggregate``), so memory does not grow with the corpus. Per row (embeddings, each block's output,
optionally the "attn" rows), over every position that has a next token (``seq_len - 1`` per sequence):

- ``cross_entropy``: -log p_row(actual next token), nats; ``bits_per_token`` the same in bits;
- ``kl_to_final``: KL(p_final || p_row), nats; ``entropy``: H(p_row), nats;
- ``agreement``: share of positions where the row's top-1 equals the final row's top-1;
- ``accuracy``: share of positions where the row's top-1 is the actual next token;

each with its standard error (``*_se``: the sample standard deviation over positions / sqrt(n); positions
of one text are correlated, so read it as a lower bound). The last row is the model's own output.

``logitlens.views.evaluation`` draws the table (Plotly, offline HTML, PNG); ``logitlens.views.tables``
prints it.

Example:
    >>> df = evaluate(lens, "sample", seq_len=256, tokens=16_384)
    >>> df[["row_name", "depth", "bits_per_token", "accuracy"]]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from logitlens.core.rows import Row
from logitlens.core.stats import CORPUS_METRICS
from logitlens.errors import LogitLensError
from logitlens.tasks import distributed
from logitlens.tasks.data import Corpus
from logitlens.tasks.progress import progress_bar

if TYPE_CHECKING:  # numpy, torch, pandas are imported where they are used: importing this module is light
    import numpy as np
    import pandas as pd
    import torch

__all__ = ["METRICS", "RowAggregate", "evaluate"]

TOKENS_PER_BATCH = 4096  # default batch: this many tokens per forward pass (at least one sequence)
LN2 = math.log(2.0)
METRICS = CORPUS_METRICS  # name -> (label, unit); the table's columns are name and name_se, in this order
_RUN_ONLY = ("top_k", "targets", "positions", "attention_mask")  # evaluate picks these itself


# ---- running per-row means ----------------------------------------------------------------------------
class RowAggregate:
    """Per-row running count, mean and sum of squared deviations of named metrics, in float64.

    Batches are merged with Chan et al.'s pairwise update (exact, stable), so memory is O(rows x metrics)
    however many values pass through. NaN values (no next token) are skipped.
    """

    def __init__(self, rows: Sequence[Row], n_layers: int):

        self.rows = list(rows)
        self.n_layers = int(n_layers)
        self._n: dict[str, np.ndarray] = {}  # metric -> (R,) counts
        self._mean: dict[str, np.ndarray] = {}
        self._m2: dict[str, np.ndarray] = {}

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def add(self, name: str, values: np.ndarray, row: np.ndarray) -> None:
        """Fold in values (n,) of metric ``name``, ``row`` (n,) the row index of each."""
        import numpy as np

        n_rows = self.n_rows
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        row = np.asarray(row, dtype=np.int64).reshape(-1)
        keep = ~np.isnan(values)
        if not keep.all():
            values, row = values[keep], row[keep]
        cnt = np.bincount(row, minlength=n_rows).astype(np.float64)  # (R,)
        mean = np.divide(
            np.bincount(row, weights=values, minlength=n_rows), cnt, out=np.zeros(n_rows), where=cnt > 0
        )
        m2 = np.bincount(row, weights=(values - mean[row]) ** 2, minlength=n_rows)
        self._fold(name, cnt, mean, m2)

    def _fold(self, name: str, cnt: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al.'s pairwise merge of (count, mean, M2) per row into metric ``name``."""
        import numpy as np

        if name not in self._n:
            self._n[name], self._mean[name], self._m2[name] = cnt, mean, m2
            return
        n0, mean0 = self._n[name], self._mean[name]
        total = n0 + cnt
        frac = np.divide(cnt, total, out=np.zeros(self.n_rows), where=total > 0)
        delta = mean - mean0
        self._mean[name] = mean0 + delta * frac
        self._m2[name] = self._m2[name] + m2 + delta**2 * n0 * frac
        self._n[name] = total

    @property
    def metrics(self) -> list[str]:
        """The metrics folded in so far, in the order first added."""
        return list(self._n)

    def state(self) -> np.ndarray:
        """(metrics, 3, R) float64: count, mean and M2 of each metric (``metrics`` order)."""
        import numpy as np

        if not self._n:
            return np.zeros((0, 3, self.n_rows))
        return np.stack([np.stack([self._n[m], self._mean[m], self._m2[m]]) for m in self._n])

    def merge_state(self, names: Sequence[str], state: np.ndarray) -> None:
        """Fold in another aggregate's ``state()`` over the same rows (its ``metrics`` as ``names``)."""
        for name, (cnt, mean, m2) in zip(names, state, strict=True):
            self._fold(name, cnt.copy(), mean.copy(), m2.copy())

    def count(self, name: str) -> np.ndarray:
        import numpy as np

        return self._n.get(name, np.zeros(self.n_rows)).astype(np.int64)

    def mean_se(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(R,) means and standard errors sqrt(var / n), var with n - 1; NaN where n < 1 (se: n < 2)."""
        import numpy as np

        n = self._n.get(name, np.zeros(self.n_rows))
        mean = np.where(n > 0, self._mean.get(name, np.zeros(self.n_rows)), np.nan)
        var = np.divide(
            self._m2.get(name, np.zeros(self.n_rows)), n - 1, out=np.full(self.n_rows, np.nan), where=n > 1
        )
        se = np.sqrt(np.divide(var, n, out=np.full(self.n_rows, np.nan), where=n > 1))
        return mean, se

    def to_frame(self, counts: dict[str, str] | None = None) -> pd.DataFrame:
        """One line per row: row, row_name, layer, site, depth, the ``counts`` columns (column -> metric
        whose count it shows), then each metric and its ``_se`` in the order first added;
        ``bits_per_token`` follows ``cross_entropy``."""
        import numpy as np
        import pandas as pd

        df = pd.DataFrame(
            {
                "row": np.arange(self.n_rows, dtype=np.int32),
                "row_name": [r.name for r in self.rows],
                "layer": np.array([r.layer for r in self.rows], dtype=np.int32),
                "site": [r.site for r in self.rows],
                "depth": np.array([r.depth(self.n_layers) for r in self.rows], dtype=np.float64),
            }
        )
        for column, metric in (counts or {}).items():
            df[column] = self.count(metric)
        for name in self._n:
            mean, se = self.mean_se(name)
            df[name], df[f"{name}_se"] = mean, se
            if name == "cross_entropy":
                df["bits_per_token"], df["bits_per_token_se"] = mean / LN2, se / LN2
        return df


# ---- evaluate -----------------------------------------------------------------------------------------
def evaluate(
    lens,
    data,
    /,
    *,
    tokens: int | None = None,
    seq_len: int = 512,
    batch_size: int | None = None,
    split: str | None = None,
    seed: int = 0,
    lines: bool = False,
    field: str = "text",
    progress: bool = True,
    **run_kwargs: Any,
) -> pd.DataFrame:
    """Per-row corpus metrics of ``lens`` (a ``LogitLens``) on ``data``, averaged over every position.

    Args:
        lens: the ``LogitLens`` to evaluate.
        data: a source or list of sources for ``Corpus.read`` ("sample", text/JSONL/CSV/Parquet files, a
            ``datasets`` folder), a ``Corpus`` (texts in memory: ``Corpus.from_texts``), or token ids used
            as they are, without packing or split: a (N, T) LongTensor or a list of id lists.
        tokens: evaluate about this many tokens (rounded up to whole sequences; fewer than ``seq_len``: one
            sequence of that many tokens); default: the whole split.
        seq_len: tokens per packed sequence (at most the model's context).
        batch_size: sequences per forward pass (default: about 4,096 tokens).
        split: "validation" (the default), "train" or "all"; a ``Corpus`` already split is used as it is
            unless ``split`` is given.
        seed: the split's seed.
        lines: each line of a text file is one document.
        field: the text field of JSON Lines / tables.
        progress: a progress bar on stderr.
        **run_kwargs: go to ``iter_run`` (``lens=`` a Lens such as a tuned lens, ``transform=``,
            ``include_subblocks=``).

    Under ``torchrun`` (``WORLD_SIZE`` > 1, see ``logitlens.tasks.distributed``) rank r evaluates sequences
    r, r + W, ...; the per-row sums are combined with one float64 all-reduce and every rank returns the
    whole table (the same counts as one process; means within float rounding). Only rank 0 shows progress.

    Returns:
        A DataFrame with one line per row (see the module docstring for the columns: ``cross_entropy``,
        ``bits_per_token``, ``kl_to_final``, ``entropy``, ``agreement``, ``accuracy``, each with its
        standard error ``_se``; ``row``, ``row_name``, ``layer``, ``depth``). ``df.attrs`` holds the run:
        model, lens, data, split, seed, seq_len, sequences, tokens, seconds, tokens_per_s (and ranks,
        when distributed).

    Example:
        >>> df = logitlens.evaluate(lens, "sample", tokens=2048, seq_len=256)
        >>> df[["row_name", "bits_per_token", "kl_to_final", "accuracy"]]
    """
    for name in _RUN_ONLY:
        if name in run_kwargs:
            raise LogitLensError(
                f"evaluate decodes every position of every sequence; {name}= is not an option here"
            )
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise LogitLensError(f"tokens (--tokens) must be a positive integer, got {tokens!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise LogitLensError(f"seq_len (--seq-len) must be an integer of at least 2, got {seq_len!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise LogitLensError(f"batch_size (--batch-size) must be a positive integer, got {batch_size!r}")
    if tokens is not None and tokens < seq_len:  # less than one sequence: one shorter sequence, not 512
        seq_len = max(2, tokens)
    with distributed.together("evaluate") as group:
        seqs, info = _sequences(lens, data, tokens, seq_len, split, seed, lines, field)
        bs = batch_size or max(1, TOKENS_PER_BATCH // max(len(s) for s in seqs))
        total = sum(len(s) for s in seqs)
        mine = _shard_sequences(seqs, group)
        t0 = time.perf_counter()
        agg, lens_name = _fold_sequences(lens, mine, bs, progress and group.is_main, group, run_kwargs)
        agg, seconds = _combine(agg, time.perf_counter() - t0, group)
    df = agg.to_frame({"tokens": "cross_entropy"})
    df.insert(0, "lens", lens_name)
    df.insert(0, "model", lens.name)
    df.attrs.update(
        model=lens.name,
        lens=lens_name,
        **info,
        sequences=len(seqs),
        tokens=total,
        seconds=seconds,
        tokens_per_s=total / seconds if seconds > 0 else float("nan"),
        **({"ranks": group.world_size} if group.distributed else {}),
    )
    return df


def _shard_sequences(seqs: list[list[int]], group: distributed.Group) -> list[list[int]]:
    """This rank's sequences (every sequence in a single process), after checking that every rank packed
    the same ones."""
    if not group.distributed:
        return seqs
    digest = hashlib.blake2b(json.dumps(seqs).encode(), digest_size=16).hexdigest()
    distributed.agree(
        "the evaluation data",
        digest,
        "give every rank the same files (a path every node sees), --split, --seed, --seq-len and --tokens",
    )
    if len(seqs) < group.world_size:
        raise LogitLensError(
            f"the data packs into {len(seqs)} sequence(s), fewer than the {group.world_size} ranks: each rank "
            "needs at least one; use fewer ranks, more --tokens or a shorter --seq-len"
        )
    return distributed.shard(seqs, group)


def _fold_sequences(lens, seqs, bs, progress, group, run_kwargs) -> tuple[RowAggregate, str | None]:
    """The per-row sums of ``seqs`` (run batch by batch; another rank's failure stops it between batches)."""
    agg: RowAggregate | None = None
    lens_name = None
    total = sum(len(s) for s in seqs)
    label = f"eval {lens.name}{group.label()}"
    with progress_bar(total, "tokens", enabled=progress, description=label) as advance:
        for res in lens.iter_run(seqs, top_k=1, batch_size=bs, **run_kwargs):
            if agg is None:
                agg, lens_name = RowAggregate(res.rows, res.n_layers), res.meta.get("lens")
            add_result(agg, res)
            advance(sum(len(s) for s in res.input_ids))
            distributed.poll()
    assert agg is not None  # at least one sequence
    return agg, lens_name


def _combine(agg: RowAggregate, seconds: float, group: distributed.Group) -> tuple[RowAggregate, float]:
    """Every rank's sums, merged in rank order, on every rank: ONE float64 all-reduce of a buffer in which
    each rank fills its own slot (count, mean, M2 per metric and row, then its seconds); the slowest rank's
    seconds. A single process: ``agg`` as it is."""
    import numpy as np

    if not group.distributed:
        return agg, seconds
    state = agg.state()  # (M, 3, R)
    buf = np.zeros((group.world_size, state.size + 1))
    buf[group.rank] = np.append(state.reshape(-1), seconds)
    buf = distributed.all_sum(buf, "combining the evaluation sums")
    out = RowAggregate(agg.rows, agg.n_layers)
    for r in range(group.world_size):
        out.merge_state(agg.metrics, buf[r, :-1].reshape(state.shape))
    return out, float(buf[:, -1].max())


def _sequences(lens, data, tokens, seq_len, split, seed, lines, field) -> tuple[list[list[int]], dict]:
    """The token-id sequences to evaluate, and what they are (data, split, seed, seq_len)."""
    import torch

    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or data.dtype not in (torch.long, torch.int32, torch.int64) or data.numel() == 0:
            raise LogitLensError("token ids must be a non-empty integer tensor of shape (sequences, tokens)")
        return _limit(data.tolist(), tokens), {
            "data": "token ids",
            "split": None,
            "seed": None,
            "seq_len": data.shape[1],
        }
    if _is_id_lists(data):
        seqs = [list(map(int, s)) for s in data]
        if not seqs or not all(seqs):
            raise LogitLensError("token-id sequences must be non-empty lists of ints")
        return _limit(seqs, tokens), {
            "data": "token ids",
            "split": None,
            "seed": None,
            "seq_len": max(map(len, seqs)),
        }
    if isinstance(data, Corpus):
        corpus = data
    elif isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and all(isinstance(d, str | os.PathLike) for d in data)
    ):
        corpus = Corpus.read(data, lines=lines, field=field)
    else:
        raise LogitLensError(
            "data must be a corpus source ('sample' or a path), a list of them, a logitlens.Corpus, or "
            f"token ids (a LongTensor or lists of ints), got {type(data).__name__}"
        )
    ctx = lens.context_length
    if ctx is not None and seq_len > ctx:
        raise LogitLensError(
            f"seq_len (--seq-len) {seq_len} is longer than the context of {lens.name} ({ctx} tokens); "
            f"choose at most {ctx}"
        )
    if split is not None or corpus.split_name == "all":
        corpus = corpus.split(split or "validation", seed=seed)
    max_sequences = None if tokens is None else -(-tokens // seq_len)
    ids = corpus.sequences(lens.tokenizer, seq_len, max_sequences=max_sequences)
    return ids.tolist(), {"data": corpus.name, "split": corpus.split_name, "seed": seed, "seq_len": seq_len}


def _is_id_lists(data) -> bool:
    import torch

    if isinstance(data, str | bytes | os.PathLike) or not isinstance(data, Sequence) or not data:
        return False
    return all(
        isinstance(s, Sequence | torch.Tensor)
        and not isinstance(s, str)
        and all(isinstance(t, int) for t in list(s))
        for s in data
    )


def _limit(seqs: list[list[int]], tokens: int | None) -> list[list[int]]:
    if tokens is None:
        return seqs
    out, seen = [], 0
    for s in seqs:
        if seen >= tokens:
            break
        out.append(s)
        seen += len(s)
    return out


def next_ids(res) -> torch.Tensor:
    """(N, P) the actual next token id of each decoded cell of a LensResult; -1 where there is none."""
    import torch

    n, p = res.positions.shape
    t_max = max(len(s) for s in res.input_ids)
    padded = torch.full((n, t_max + 1), -1, dtype=torch.long)
    for i, seq in enumerate(res.input_ids):
        padded[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    nxt = padded.gather(1, (res.positions + 1).clamp_min(0))
    return torch.where(res.positions >= 0, nxt, torch.full_like(nxt, -1))


def add_result(agg: RowAggregate, res) -> int:
    """Fold one batch's LensResult into ``agg``: every cell that has a next token. Returns their count."""
    import numpy as np

    nxt = next_ids(res)  # (N, P)
    mask = nxt >= 0
    count = int(mask.sum())
    if count == 0:
        return 0
    row = np.repeat(np.arange(res.n_rows), count)

    def cells(t: torch.Tensor) -> np.ndarray:  # (N, R, P) -> (R * count,) row-major
        return t.permute(1, 0, 2)[:, mask].reshape(-1).double().numpy()

    agg.add("cross_entropy", cells(res.cross_entropy), row)
    agg.add("kl_to_final", cells(res.kl_to_final), row)
    agg.add("entropy", cells(res.entropy), row)
    agg.add("agreement", cells(res.agrees_with_final), row)
    agg.add("accuracy", cells(res.top_ids[..., 0] == nxt.unsqueeze(1)), row)
    return count
