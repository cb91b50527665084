"""Streaming runs: thousands of prompts through the lens, written to Parquet or JSON Lines batch by batch,
resumable after a kill.

``stream(lens, prompts, "results.parquet")`` runs ``lens.iter_run`` and writes each batch as soon as it
finishes; memory holds one batch at a time however many prompts there are. The file has the long table of
``LensResult.to_arrow`` (one line per (prompt, row, position); ``prompt_index`` is the prompt's index in
``prompts``): ``.parquet`` with one row group per batch, in the order the batches ran (prompts of similar
length together), or ``.jsonl`` with one JSON object per line of the table (NaN written as null). The run
ends with a per-row aggregate table (a DataFrame, see ``aggregate_table``).

On disk while a run is in progress (``OUT`` is the output path):

    OUT.parts/
        run.json             what the run is (``fingerprint``): the prompts (count and SHA-256 of their
                             texts or ids, in order), the options that change the values (top_k,
                             targets, positions, truncate, include_subblocks, transform, and the lens:
                             ``Lens.fingerprint``, for a tuned lens a digest of its tensors), the model
                             (name, type, layers, vocabulary, dtype) and the output format.
        part-000000.parquet  one finished batch each: exactly the batch's ``to_arrow()`` table. A part is
        part-000001.parquet  written as ``*.tmp`` and renamed, so it exists only once it is complete.

When every prompt is in a part, the parts are joined into ``OUT.tmp``, which is renamed to ``OUT``; then
the parts folder is removed. A Parquet ``OUT`` keeps in its schema metadata the merged header of all parts
under b"logitlens" (so ``LensResult.load`` reads it) and run.json under b"logitlens_stream".

A kill (SIGKILL, a crash, Ctrl-C) loses at most the batch in flight and the parts folder stays.
``resume=True`` (``--resume``) compares the new run's fingerprint with run.json and refuses with a
one-line message if the prompts, an option, the model or the format changed; otherwise it deletes
unfinished ``*.tmp`` files, reads which prompts the parts hold and runs only the others, so every prompt
ends up in the file exactly once. (Batches are formed the same way on the remaining prompts, so a resumed
run writes the same values as an uninterrupted one.) A kill while joining leaves the parts in place and
the next ``resume=True`` joins them again. ``resume=True`` on a finished Parquet file checks its
fingerprint and, if it matches, only recomputes the aggregate; JSON Lines keeps no fingerprint, so a
finished ``.jsonl`` is refused. Without ``resume``, an existing parts folder is refused (an interrupted
run is never discarded silently) and a finished file is replaced once the new one is complete.
``batch_size`` may change between a run and its resumption. Two runs must not write the same output.

Under ``torchrun`` (``WORLD_SIZE`` > 1, see ``logitlens.tasks.distributed``) every rank reads the same
prompts (checked: a digest of the run record is compared) and forms the same batches a single process would
on the prompts still to run; batch b goes to rank b mod W, which writes it as ``part-r<rank>-<n>.parquet``
with n = (first free number) + b. Parts are joined in number order by rank 0, so the file has the same
lines in the same order as one process writes. ``--resume`` works per rank and with another number of
ranks than the killed run had: the prompts still missing are batched and shared anew. Every rank returns
the aggregate; only rank 0 shows progress and writes the joined file.

Example:
    >>> table = stream(lens, prompts, "facts.parquet", targets=[" Paris"], positions=[-1])
    >>> import duckdb; duckdb.sql("select row_name, avg(entropy) from 'facts.parquet' group by 1")
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from logitlens.core.files import STREAM_SUFFIXES as SUFFIXES
from logitlens.core.files import check_stream_output as check_output
from logitlens.core.rows import Row
from logitlens.engine.codecs import HEADER_KEY, read_parquet_header
from logitlens.engine.lenses import Lens
from logitlens.errors import LogitLensError
from logitlens.tasks import distributed
from logitlens.tasks.evaluation import RowAggregate
from logitlens.tasks.progress import progress_bar

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["FORMAT", "SUFFIXES", "aggregate_table", "fingerprint", "parts_dir", "stream"]

FORMAT = "logitlens.stream"
VERSION = 1
RUN_FILE = "run.json"
STREAM_KEY = b"logitlens_stream"  # Parquet schema metadata: the run's fingerprint
_PART = re.compile(r"part-(?:r\d+-)?(\d+)\.parquet")  # part-000012.parquet, or part-r1-000012 (rank 1)
_NOT_OPTIONS = ("self", "prompts", "batch_size", "attention_mask")  # iter_run parameters that change no value


def parts_dir(path: str | Path) -> Path:
    """The folder of finished batches next to ``path`` while a run is in progress."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


# ---- the run's identity -------------------------------------------------------------------------------
def _prompt_list(prompts) -> list:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 1:
            prompts = prompts.unsqueeze(0)
        return prompts.tolist()
    if not isinstance(prompts, Sequence) or isinstance(prompts, bytes) or len(prompts) == 0:
        raise LogitLensError("prompts must be a non-empty list of strings or of token-id lists")
    if all(isinstance(p, int) for p in prompts):
        return [list(prompts)]
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, torch.Tensor):
            p = p.tolist()
        elif not isinstance(p, str):
            if not isinstance(p, Sequence) or isinstance(p, bytes):
                raise LogitLensError(
                    f"prompt {i + 1} is a {type(p).__name__}: give strings or lists of token ids"
                )
            p = list(p)
        out.append(p)
    return out


def fingerprint(lens, prompts, run_kwargs: dict[str, Any], output: str) -> dict[str, Any]:
    """What a streamed run is, for ``resume`` to compare: prompts, value-changing options, model, format."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(json.dumps(p, ensure_ascii=False).encode("utf-8") + b"\n")
    params = inspect.signature(lens.iter_run).parameters
    opts = {
        name: p.default
        for name, p in params.items()
        if name not in _NOT_OPTIONS and p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    opts.update({k: v for k, v in run_kwargs.items() if k not in _NOT_OPTIONS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # iter_run warns about multi-token targets itself
        opts["targets"] = [[t.name, list(t.ids)] for t in lens.targets(opts.get("targets"))]
    chosen = opts.get("lens")
    used = chosen or lens.lens
    opts["lens"] = used.fingerprint() if isinstance(used, Lens) else type(used).__name__
    fn = opts.get("transform")
    opts["transform"] = None if fn is None else getattr(fn, "__qualname__", type(fn).__name__)
    if opts.get("positions") is not None:
        pos = opts["positions"]
        opts["positions"] = [int(pos)] if isinstance(pos, int) else [int(p) for p in pos]
    model = {
        "name": lens.name,
        "model_type": lens.decoder.model_type,
        "n_layers": lens.n_layers,
        "vocab_size": lens.decoder.vocab_size,
        "dtype": str(lens.decoder.dtype).removeprefix("torch."),
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "output": output,
        "prompts": {"count": len(prompts), "sha256": digest.hexdigest()},
        "options": json.loads(json.dumps(opts, default=str)),
        "model": model,
    }


def _check_same(old: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    """Refuse (one line) to resume a run whose prompts, options, model or format differ."""
    fix = "give the same prompts and options, or write to another file without --resume"
    if not isinstance(old, dict) or old.get("format") != FORMAT or old.get("version") != VERSION:
        raise LogitLensError(
            f"cannot resume {path}: its run record is not a logitlens stream of version {VERSION}"
        )
    if old.get("prompts") != new["prompts"]:
        was, now = old.get("prompts", {}).get("count"), new["prompts"]["count"]
        what = f"{was} prompts, now {now}" if was != now else f"{now} prompts with other texts or order"
        raise LogitLensError(f"cannot resume {path}: the prompts changed (it holds a run of {what}); {fix}")
    for section in ("output", "options", "model"):
        a, b = old.get(section), new[section]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            key = next(k for k in sorted(set(a) | set(b)) if (k in a, a.get(k)) != (k in b, b.get(k)))
            label = key if section == "options" else f"model {key}"
            was = f"with {label}={a[key]!r}" if key in a else f"without {label}"
            now = f"{label}={b[key]!r}" if key in b else f"no {label}"
            raise LogitLensError(f"cannot resume {path}: it was written {was}, now {now}; {fix}")
        raise LogitLensError(f"cannot resume {path}: it was written as {a!r}, now {b!r}; {fix}")


# ---- stream -------------------------------------------------------------------------------------------
def stream(
    lens,
    prompts,
    path: str | Path,
    /,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **run_kwargs: Any,
) -> pd.DataFrame:
    """Run ``lens`` (a ``LogitLens``) on ``prompts`` and write the long table to ``path`` (.parquet or
    .jsonl) batch by batch; returns the per-row aggregate (``aggregate_table``). See the module docstring
    for the files, resume and what is refused.

    prompts: a list of strings or of token-id lists (or a (B, T) LongTensor, no padding). Other keyword
    arguments go to ``iter_run`` (top_k, targets, positions, truncate, batch_size, lens, transform,
    include_subblocks). A finished file at ``path`` is kept: ``resume=True`` checks it against these
    options, ``overwrite=True`` replaces it. ``df.attrs``: path, prompts, resumed (prompts already written
    before this call), lines (of the file), seconds.
    """
    path = check_output(path)
    if "attention_mask" in run_kwargs:
        raise LogitLensError(
            "stream takes unpadded prompts: give a list of token-id lists, not attention_mask"
        )
    known = set(inspect.signature(lens.iter_run).parameters) - {"prompts", "attention_mask"}
    unknown = sorted(set(run_kwargs) - known)
    if unknown:
        raise LogitLensError(
            f"stream got an unknown option {unknown[0]!r}; options: {', '.join(sorted(known))}"
        )
    plist = _prompt_list(prompts)
    fmt = path.suffix.lower().lstrip(".")
    fp = fingerprint(lens, plist, run_kwargs, fmt)
    with distributed.together("the streamed run") as group:
        distributed.agree(
            "the prompts and options",
            hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest(),
            "give every rank the same prompts file (a path every node sees) and the same options",
        )
        parts = parts_dir(path)
        recorded, done, finished = _inspect(path, parts, fp, resume, overwrite, group)
        if finished is not None:
            finished.attrs.update(path=str(path), prompts=len(plist), resumed=len(plist), seconds=0.0)
            return finished
        t0 = time.perf_counter()
        remaining = [i for i in range(len(plist)) if i not in done]
        if remaining:
            _run_share(lens, plist, remaining, parts, fp, recorded is not None, progress, group, run_kwargs)
        distributed.barrier("waiting for every rank's parts")
        df = _finish(path, parts, fp, len(plist)) if group.is_main else None
        df = distributed.broadcast_object(df, "sharing the joined file's aggregate")
    df.attrs.update(path=str(path), prompts=len(plist), resumed=len(done), seconds=time.perf_counter() - t0)
    return df


def _inspect(
    path: Path, parts: Path, fp, resume: bool, overwrite: bool, group
) -> tuple[dict | None, set[int], Any]:
    """(the run record, prompts already written, the aggregate of a finished file to resume or None).
    Every rank checks; only rank 0 cleans up (between two barriers), so no rank sees a half-cleaned folder."""
    fmt = fp["output"]
    recorded = _read_run(parts) if parts.is_dir() else None
    if recorded is not None:
        if not resume:
            raise LogitLensError(
                f"{parts} holds an interrupted run ({len(_done(parts, clean=False))} of "
                f"{recorded['prompts']['count']} prompts written): pass --resume (resume=True) to continue it, "
                "or delete that folder to start over"
            )
        _check_same(recorded, fp, path)
    elif resume and path.exists():
        if fmt != "parquet":
            raise LogitLensError(
                f"{path} is already complete and JSON Lines keeps no record of its options to check: run "
                "without --resume to write it again"
            )
        _check_same(_file_fingerprint(path), fp, path)
        df = aggregate_table(path)
        distributed.barrier("reading the finished file")
        if group.is_main and parts.is_dir():
            shutil.rmtree(parts)  # an empty folder of a run killed before its first batch
        return None, set(), df
    elif path.exists() and not overwrite:
        raise LogitLensError(
            f"{path} already exists: pass --overwrite (overwrite=True) to replace it, or --resume "
            "(resume=True) to keep it if it holds this run"
        )
    distributed.barrier("checking the parts folder")
    if group.is_main and parts.is_dir():
        if recorded is None:
            shutil.rmtree(parts)  # killed before its first batch was written: nothing to keep
        else:
            _done(parts, clean=True)  # deletes unfinished *.tmp parts
    distributed.barrier("cleaning the parts folder")
    done = _done(parts, clean=False) if recorded is not None else set()
    distributed.barrier("reading the finished parts")  # before any rank writes a new one
    return recorded, done, None


def _run_share(lens, plist, remaining, parts, fp, started, progress, group, run_kwargs) -> None:
    """Run this rank's batches of the ``remaining`` prompts and write each as a part. The batches are those
    a single process forms on ``remaining`` (longest first, ``batch_size`` each); batch b goes to rank
    b mod W and is written as part number base + b, so the parts sorted by number are the batches of one
    process, in its order."""
    base = _next_part(parts)
    if group.distributed:
        batches = _global_batches(lens, [plist[i] for i in remaining], run_kwargs)
        mine = batches[group.rank :: group.world_size]
        numbers = [base + b for b in range(group.rank, len(batches), group.world_size)]
        chosen = sorted(j for batch in mine for j in batch)  # positions in `remaining`, ascending
    else:
        numbers, chosen = [], list(range(len(remaining)))
    indices = [remaining[j] for j in chosen]
    if not indices:
        return
    kwargs = dict(run_kwargs)
    answers = kwargs.get("answers")
    if isinstance(answers, Sequence) and not isinstance(answers, str) and len(answers) == len(plist):
        kwargs["answers"] = [answers[i] for i in indices]
    label = f"{parts.name.removesuffix('.parts')}{group.label()}"
    with progress_bar(
        len(indices) if group.distributed else len(plist),
        "prompts",
        enabled=progress and group.is_main,
        description=label,
        completed=0 if group.distributed else len(plist) - len(remaining),
    ) as advance:
        for n, res in enumerate(lens.iter_run([plist[i] for i in indices], **kwargs)):
            res = res.replace(prompt_index=[indices[j] for j in res.prompt_index])
            table = res.to_arrow()
            if not started:  # only now: a run refused by iter_run leaves nothing behind
                _start(parts, fp, group.rank)
                started = True
            k = numbers[n] if group.distributed else base + n
            _write_part(parts, k, table, group.rank if group.distributed else None)
            advance(res.n_prompts)
            distributed.poll()


def _global_batches(lens, prompts: list, run_kwargs: dict[str, Any]) -> list[list[int]]:
    """The batches (positions in ``prompts``) ``iter_run`` forms on ``prompts``: longest first, ties in
    order, ``batch_size`` each (a prompt too long without ``truncate`` keeps its length: the rank that runs
    it refuses it)."""
    ids, _ = lens.encode(
        prompts, chat=run_kwargs.get("chat", False), prepend_bos=run_kwargs.get("prepend_bos")
    )
    ctx = lens.context_length
    lengths = [min(len(s), ctx) if run_kwargs.get("truncate") and ctx else len(s) for s in ids]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    bs = run_kwargs.get("batch_size") or lens.batch_size
    return [order[i : i + bs] for i in range(0, len(order), bs)]


def _read_run(parts: Path) -> dict[str, Any] | None:
    """run.json of a parts folder; None when the run was killed before writing it (no part exists then)."""
    file = parts / RUN_FILE
    if not file.is_file():
        if any(parts.glob("part-*.parquet")):
            raise LogitLensError(f"{parts} has parts but no {RUN_FILE}; delete that folder to start over")
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LogitLensError(f"{file} is damaged; delete {parts} to start over") from None


def _start(parts: Path, fp: dict[str, Any], rank: int = 0) -> None:
    parts.mkdir(exist_ok=True)
    tmp = parts / f"{RUN_FILE}.{rank}.tmp"  # every rank writes the same record: each through its own file
    tmp.write_text(json.dumps(fp, indent=1), encoding="utf-8")
    os.replace(tmp, parts / RUN_FILE)


def _part_number(file: Path) -> int:
    match = _PART.fullmatch(file.name)
    if match is None:
        raise LogitLensError(f"{file} is not a part of a streamed run; delete it or the folder {file.parent}")
    return int(match.group(1))


def _part_files(parts: Path) -> list[Path]:
    """The finished parts in batch order: by number, whichever rank wrote them."""
    return sorted(parts.glob("part-*.parquet"), key=_part_number) if parts.is_dir() else []


def _next_part(parts: Path) -> int:
    files = _part_files(parts)
    return _part_number(files[-1]) + 1 if files else 0


def _write_part(parts: Path, k: int, table: pa.Table, rank: int | None = None) -> None:
    import pyarrow.parquet as pq

    name = f"part-{k:06d}.parquet" if rank is None else f"part-r{rank}-{k:06d}.parquet"
    final = parts / name
    tmp = parts / f"{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)  # atomic: a part exists only once complete


def _done(parts: Path, *, clean: bool = True) -> set[int]:
    """Prompt indices held by the finished parts (with ``clean``, unfinished ``*.tmp`` files are deleted)."""
    import pyarrow.parquet as pq

    for tmp in parts.glob("*.tmp") if clean else ():
        tmp.unlink(missing_ok=True)
    done: set[int] = set()
    for file in _part_files(parts):
        try:
            column = pq.read_table(file, columns=["prompt_index"]).column(0)
        except (OSError, ValueError) as exc:
            raise LogitLensError(f"cannot read {file} ({exc}); delete it to run its batch again") from None
        done.update(np.unique(column.to_numpy()).tolist())
    return done


def _file_fingerprint(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise LogitLensError(f"cannot resume {path}: it is not a readable Parquet file ({exc})") from None
    if STREAM_KEY not in meta:
        raise LogitLensError(
            f"cannot resume {path}: it was not written by a streamed run; run without --resume to replace it"
        )
    return json.loads(meta[STREAM_KEY])


# ---- joining the parts --------------------------------------------------------------------------------
def _merged_header(files: list[Path]) -> dict[str, Any]:
    """One result header for all parts (as ``codecs.header``): per-prompt lists (answers too) concatenated,
    vocab united."""
    merged: dict[str, Any] | None = None
    for file in files:
        head = read_parquet_header(file) or {}
        if merged is None:
            merged = head
            continue
        for key in ("tokens", "input_ids", "prompts", "prompt_index", "answers", "answer_ids"):
            merged[key] = list(merged.get(key) or []) + list(head.get(key) or [])
        merged["vocab"].update(head["vocab"])
        merged["shape"]["prompts"] += head["shape"]["prompts"]
        merged["shape"]["positions"] = max(merged["shape"]["positions"], head["shape"]["positions"])
    assert merged is not None
    merged["vocab"] = dict(sorted(merged["vocab"].items(), key=lambda kv: int(kv[0])))
    return merged


def _finish(path: Path, parts: Path, fp: dict[str, Any], n_prompts: int) -> pd.DataFrame:
    """Join the parts into ``path`` (via ``path.tmp``), remove the parts, return the aggregate."""
    import pyarrow.parquet as pq

    files = _part_files(parts)
    if not files:
        raise LogitLensError(f"{parts} holds no finished batch; delete it to start over")
    header = _merged_header(files)
    held = header["prompt_index"]
    if len(held) != n_prompts or sorted(held) != list(range(n_prompts)):
        raise LogitLensError(f"{parts} does not hold every prompt exactly once; delete it to start over")
    agg, targets = _aggregate_for(header)
    # a batch whose prompts have no answer has no answer columns: the file takes those of a batch that has
    widest = max((pq.read_schema(file) for file in files), key=len)
    tmp = path.with_name(path.name + ".tmp")
    schema: pa.Schema | None = None
    writer = None
    lines = 0
    try:
        with open(tmp, "wb") as out:
            for file in files:
                table = pq.read_table(file)
                if schema is None:
                    meta = {HEADER_KEY: json.dumps(header, ensure_ascii=False), STREAM_KEY: json.dumps(fp)}
                    schema = widest.with_metadata(meta)
                    if path.suffix.lower() == ".parquet":
                        writer = pq.ParquetWriter(out, schema, compression="zstd")
                if not table.schema.equals(schema, check_metadata=False):
                    table = _conform(table, schema.remove_metadata())
                fold_table(agg, table, targets)
                lines += table.num_rows
                if writer is not None:
                    writer.write_table(
                        table, row_group_size=max(1, table.num_rows)
                    )  # one row group per batch
                else:
                    out.write(_json_lines(table))
            if writer is not None:
                writer.close()
    except OSError as exc:
        raise LogitLensError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.replace(tmp, path)
    shutil.rmtree(parts)
    df = _frame(agg)
    df.attrs["lines"] = lines
    return df


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the columns of ``schema``; a missing (answer) column holds what a prompt without an
    answer has: null text, NaN, rank -1."""
    import pyarrow as pa

    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name))
            continue
        fill = (
            -1 if pa.types.is_integer(field.type) else math.nan if pa.types.is_floating(field.type) else None
        )
        columns.append(pa.array([fill] * table.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _json_lines(table: pa.Table) -> bytes:
    text = table.to_pandas().to_json(orient="records", lines=True, force_ascii=False, double_precision=15)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


# ---- the per-row aggregate ----------------------------------------------------------------------------
def _aggregate_for(header: dict[str, Any]) -> tuple[RowAggregate, list[str]]:
    """An empty aggregate for a result header, and its ``p(target)`` columns."""
    rows = [Row(int(r["layer"]), r["site"]) for r in header["rows"]]
    agg = RowAggregate(rows, int(header["meta"].get("n_layers") or 1))
    return agg, list(header.get("per_target_columns", {}).get("target_probs", []))


def _np(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.float64)


def fold_table(agg: RowAggregate, table: pa.Table, target_columns: Sequence[str] = ()) -> None:
    """Fold a long table (``to_arrow``'s columns) into ``agg``: cross_entropy, kl_to_final, entropy,
    agreement (with the final row's top-1), accuracy (top-1 = next token) and each ``p(target)``."""
    row = np.asarray(table.column("row").to_numpy(), dtype=np.int64)
    agg.add("cross_entropy", _np(table, "cross_entropy"), row)
    agg.add("kl_to_final", _np(table, "kl_to_final"), row)
    agg.add("entropy", _np(table, "entropy"), row)
    agg.add("agreement", _np(table, "agrees_with_final"), row)
    top = table.column("top_ids").combine_chunks()
    top1 = np.asarray(top.flatten().to_numpy()).reshape(len(top), -1)[:, 0]
    nxt = np.asarray(table.column("next_token_id").to_numpy())
    agg.add("accuracy", np.where(nxt >= 0, top1 == nxt, np.nan), row)
    for col in target_columns:
        agg.add(col, _np(table, col), row)


def _frame(agg: RowAggregate) -> pd.DataFrame:
    return agg.to_frame({"cells": "entropy", "predictions": "cross_entropy"})


def aggregate_table(path: str | Path) -> pd.DataFrame:
    """The per-row aggregate of a streamed Parquet file, read one row group at a time: row, row_name,
    layer, site, depth, cells, predictions (cells with a next token), then mean and ``_se`` (standard
    error) of cross_entropy, bits_per_token, kl_to_final, entropy, agreement, accuracy and each
    ``p(target)``."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise LogitLensError(f"cannot read {path}: {exc}") from None
    raw = (pf.schema_arrow.metadata or {}).get(HEADER_KEY)
    if raw is None:
        raise LogitLensError(f"not a logitlens result: {path} has no logitlens metadata")
    agg, targets = _aggregate_for(json.loads(raw))
    for i in range(pf.num_row_groups):
        fold_table(agg, pf.read_row_group(i), targets)
    df = _frame(agg)
    df.attrs["lines"] = pf.metadata.num_rows
    return df
