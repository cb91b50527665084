"""A result's file and table forms: the versioned JSON schema, Parquet, Arrow and pandas.

``save`` picks the format by suffix: ``.json`` (the versioned schema, ``meta.version`` 2, tensors as
base64 little-endian arrays; version 1 files still load) or ``.parquet`` (the long table of ``to_arrow``,
with everything else in the file's schema metadata under ``HEADER_KEY``). ``LensResult``'s methods of the
same names call these.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from logitlens.core.rows import Row
from logitlens.core.stats import REGISTRY, Statistic
from logitlens.errors import LogitLensError

if TYPE_CHECKING:
    from logitlens.engine.result import LensResult

__all__ = [
    "ANSWER_TENSORS",
    "FORMAT",
    "HEADER_KEY",
    "VERSION",
    "from_dict",
    "header",
    "load",
    "long_columns",
    "read_parquet_header",
    "save",
    "to_arrow",
    "to_dataframe",
    "to_dict",
]

FORMAT = "logitlens.result"
VERSION = 2
_PARQUET_KEY = b"logitlens"
_WIRE = {torch.float32: "float32", torch.long: "int32", torch.bool: "uint8"}  # tensor dtype -> JSON dtype
_NUMPY = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "int64": np.int64}
_META_FIELDS = ("row_names", "tokens", "input_ids", "target_names", "target_ids", "prompts")
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
HEADER_KEY = _PARQUET_KEY  # Parquet schema metadata key of the result header
# per-prompt answers: (N, R) tensors, their dtype and the fill of a prompt without an answer
ANSWER_TENSORS = {
    "answer_logprobs": (torch.float32, math.nan),
    "answer_probs": (torch.float32, math.nan),
    "answer_ranks": (torch.long, -1),
}


def read_parquet_header(path: str | Path) -> dict[str, Any] | None:
    """The result header kept in a Parquet file's schema metadata (None: the file has none)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(HEADER_KEY)
    return None if raw is None else json.loads(raw)


def long_columns(res: LensResult) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The long table as numpy columns, one line per (prompt, existing column, row), in that order.

    Returns (columns, the per-target column names of each per-target statistic).
    """
    n_rows = res.n_rows
    pos = res.positions.numpy()
    ii, jj = np.nonzero(pos >= 0)  # (M,) existing cells, prompt-major then column
    m = len(ii)
    cell_pos = pos[ii, jj]
    cells = list(zip(ii.tolist(), cell_pos.tolist(), strict=True))
    tok_id = np.array([res.input_ids[i][p] for i, p in cells], dtype=np.int64)
    nxt_id = np.array(
        [res.input_ids[i][p + 1] if p + 1 < len(res.input_ids[i]) else -1 for i, p in cells],
        dtype=np.int64,
    )
    texts = np.array([res.prompts[i] if res.prompts else None for i in range(res.n_prompts)], dtype=object)
    cols: dict[str, Any] = {
        "prompt_index": np.repeat(np.asarray(res.prompt_index, dtype=np.int64)[ii], n_rows),
        "prompt": np.repeat(texts[ii] if m else texts[:0], n_rows),
        "row": np.tile(np.arange(n_rows, dtype=np.int32), m),
        "row_name": np.tile(np.array(res.row_names, dtype=object), m),
        "layer": np.tile(np.array([r.layer for r in res.rows], dtype=np.int32), m),
        "site": np.tile(np.array([r.site for r in res.rows], dtype=object), m),
        "depth": np.tile(np.array(res.depths, dtype=np.float32), m),
        "column": np.repeat(jj, n_rows).astype(np.int32),
        "position": np.repeat(cell_pos, n_rows).astype(np.int64),
        "token_id": np.repeat(tok_id, n_rows),
        "token": np.repeat(np.array([res.tokens[i][p] for i, p in cells], dtype=object), n_rows),
        "next_token_id": np.repeat(nxt_id, n_rows),
        "next_token": np.repeat(_id_names(res.vocab, nxt_id), n_rows),
    }
    ii_t, jj_t = torch.as_tensor(ii), torch.as_tensor(jj)

    def lines(t: torch.Tensor) -> np.ndarray:  # (N, R, P, ...) -> (M * R, ...)
        return t.transpose(1, 2)[ii_t, jj_t].reshape(m * n_rows, *t.shape[3:]).numpy()

    names = _id_names(res.vocab, lines(res.stats["top_ids"]))  # (M*R, k)
    cols["top1"] = names[:, 0]
    cols["top1_prob"] = lines(res.stats["top_probs"][..., 0])
    cols["top_tokens"] = names
    per_target: dict[str, list[str]] = {}
    for name, stat in REGISTRY.items():
        value = lines(res.stats[name])
        if stat.per_target:
            per_target[name] = _target_columns(stat, res.target_names)
            for t, col in enumerate(per_target[name]):
                cols[col] = value[:, t]
        else:
            cols[name] = value
    if res.has_answers:  # per (prompt, row), repeated over the prompt's positions
        answers = np.array(list(res.answers), dtype=object)
        cols["answer"] = np.repeat(answers[ii] if m else answers[:0], n_rows)
        for name, col in (
            ("answer_logprobs", "answer_logprob"),
            ("answer_probs", "p(answer)"),
            ("answer_ranks", "rank(answer)"),
        ):
            cols[col] = getattr(res, name)[torch.as_tensor(ii)].reshape(-1).numpy()
    return cols, per_target


def to_arrow(res: LensResult):
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

    cols, per_target = long_columns(res)
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
    meta = header(res)
    meta["per_target_columns"] = per_target
    table = pa.table(arrays)
    return table.replace_schema_metadata({_PARQUET_KEY: json.dumps(meta, ensure_ascii=False)})


def to_dataframe(res: LensResult):
    """The long table (see ``to_arrow``) as a pandas DataFrame; top-k columns hold numpy arrays.

    Example:
        >>> df = res.to_dataframe(); df[df.row_name == "12"].groupby("position").top1_prob.mean()
    """
    import pandas as pd

    cols, _ = long_columns(res)
    # A (lines, k) column becomes one numpy row per line (views of one array: no per-cell lists).
    return pd.DataFrame({name: list(v) if v.ndim == 2 else v for name, v in cols.items()})


def header(res: LensResult) -> dict[str, Any]:
    """Everything but the statistics, JSON-ready."""
    return {
        "meta": {"format": FORMAT, "version": VERSION, **res.meta},
        "rows": [r.to_dict() for r in res.rows],
        "row_names": res.row_names,
        "tokens": res.tokens,
        "input_ids": res.input_ids,
        "vocab": {str(k): v for k, v in sorted(res.vocab.items())},
        "target_names": res.target_names,
        "target_ids": res.target_ids,
        "prompts": res.prompts,
        "prompt_index": res.prompt_index,
        "answers": res.answers,
        "answer_ids": res.answer_ids,
        "shape": {"prompts": res.n_prompts, "rows": res.n_rows, "positions": res.n_positions},
    }


def to_dict(res: LensResult) -> dict[str, Any]:
    """The versioned JSON-ready form (version 2): the header, then ``positions`` and every statistic as
    ``{"dtype", "shape", "data"}`` with ``data`` the base64 of the little-endian array (int64 tensors
    as int32, bool as uint8). Registered statistics are included; loading needs them registered."""
    data = header(res)
    data["tensors"] = {name: _encode(t) for name, t in {"positions": res.positions, **res.stats}.items()}
    data["statistics"] = {
        name: {"per_target": REGISTRY[name].per_target, "per_k": REGISTRY[name].per_k}
        for name in res.stats
        if name in REGISTRY
    }
    if res.answers:
        data["answer_tensors"] = {name: _encode(getattr(res, name)) for name in ANSWER_TENSORS}
    return data


def save(res: LensResult, path: str | Path) -> Path:
    """Write the result: ``.json`` (``to_dict``) or ``.parquet`` (``to_arrow``), by the suffix."""
    from logitlens.core.files import write_atomic

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = to_arrow(res)
        return write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"), "the result")
    if suffix == ".json":
        text = json.dumps(to_dict(res), ensure_ascii=False, allow_nan=False)
        return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "the result")
    raise LogitLensError(f"cannot save to {path}: the file name must end in .json or .parquet")


def from_dict(cls: type[LensResult], data: dict[str, Any]) -> LensResult:
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
            if name in ANSWER_TENSORS:
                answer_kwargs[name] = _decode(enc, ANSWER_TENSORS[name][0])
    except (KeyError, TypeError, ValueError) as exc:
        raise LogitLensError(
            f"the result file is incomplete or damaged: {type(exc).__name__}: {exc}"
        ) from exc
    return cls(
        positions=positions, rows=rows, vocab=vocab, meta=meta, stats=tensors, **kwargs, **answer_kwargs
    )


def load(cls: type[LensResult], path: str | Path) -> LensResult:
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
    return from_dict(cls, data)


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
            dtype, fill = ANSWER_TENSORS[name]
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
