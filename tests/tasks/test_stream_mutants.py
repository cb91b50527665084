"""Tests written from the mutation run of ``tasks/stream.py`` (scripts/mutate.py stream): the joined file
against the batches ``iter_run`` yields (lines, row groups, header, JSON Lines text), the aggregate against
float64 means of the file, the run record, every resume path and refusal with its exact one-line message,
the progress bar's counts, and the parts that ranks of a distributed run write.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from logitlens import LensResult, LogitLens, LogitLensError, TunedLens
from logitlens.tasks import stream as stream_module
from logitlens.tasks.distributed import Group
from logitlens.tasks.stream import aggregate_table, fingerprint, parts_dir, stream

# Prompts of several lengths (so batches differ in width), one with non-ASCII text.
PROMPTS = [
    "Paris Rome",
    "hello world the city",
    "one two three four five six",
    "café naïve",
    "lens final",
    "the tower of Paris is in the city",
    "Rome",
    "two one",
    "résumé",
    "seven eight nine ten",
]
OPTS = {"top_k": 3, "targets": [" Paris", " Rome"], "batch_size": 3, "progress": False}
RUN = {k: v for k, v in OPTS.items() if k != "progress"}


def _batches(lens, prompts, **kwargs) -> list[LensResult]:
    return list(lens.iter_run(prompts, **{**RUN, **kwargs}))


def _same_table(a: pa.Table, b: pa.Table) -> bool:
    """Same schema (metadata aside) and the same values, NaN equal to NaN."""
    return a.schema.equals(b.schema, check_metadata=False) and json.dumps(a.to_pylist()) == json.dumps(
        b.to_pylist()
    )


def _interrupt(lens, path, prompts, stop_after: int, **opts) -> None:
    """A run stopped after ``stop_after`` batches, as a kill leaves it."""
    real = lens.iter_run

    @functools.wraps(real)
    def stopping(*args, **kwargs):
        for n, res in enumerate(real(*args, **kwargs)):
            if n == stop_after:
                raise KeyboardInterrupt
            yield res

    lens.iter_run = stopping
    try:
        with pytest.raises(KeyboardInterrupt):
            stream(lens, prompts, path, **{**OPTS, **opts})
    finally:
        del lens.iter_run
    assert parts_dir(path).is_dir() and not path.exists()


@pytest.fixture
def parquet_run(lens, tmp_path_factory):
    """PROMPTS streamed to Parquet, once per test: each test that reads the file runs stream itself (a shared
    file would be written during one test only, and the mutation run maps stream's code to that test alone)."""
    path = tmp_path_factory.mktemp("mut-parquet") / "facts.parquet"
    agg = stream(lens, PROMPTS, path, **OPTS)
    return path, agg


# ---- the joined file ----------------------------------------------------------------------------------
def test_parquet_file_is_the_batches_tables_in_order_one_row_group_each(lens, parquet_run):
    path, agg = parquet_run
    batches = _batches(lens, PROMPTS)
    assert len(batches) == 4
    want = pa.concat_tables([b.to_arrow() for b in batches])
    pf = pq.ParquetFile(path)
    assert _same_table(pf.read(), want)
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [
        b.to_arrow().num_rows for b in batches
    ]
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    assert not parts_dir(path).exists() and not path.with_name("facts.parquet.tmp").exists()
    assert agg.attrs["path"] == str(path) and agg.attrs["prompts"] == 10 and agg.attrs["resumed"] == 0
    assert agg.attrs["lines"] == want.num_rows and agg.attrs["seconds"] > 0


def test_parquet_metadata_holds_the_merged_header_and_the_run_record(lens, parquet_run):
    """The header unites the batches: lists concatenated in batch order, vocab united and sorted by id,
    shape.prompts summed, shape.positions the widest batch; the run record is ``fingerprint``'s."""
    path, _ = parquet_run
    batches = _batches(lens, PROMPTS)
    heads = [json.loads(b.to_arrow().schema.metadata[b"logitlens"]) for b in batches]
    meta = pq.read_schema(path).metadata
    header = json.loads(meta[b"logitlens"])
    for key in ("tokens", "input_ids", "prompts", "prompt_index"):
        assert header[key] == [x for h in heads for x in h[key]], key
    vocab = {}
    for h in heads:
        vocab.update(h["vocab"])
    assert list(header["vocab"]) == sorted(vocab, key=int) and header["vocab"] == vocab
    assert sorted(vocab, key=int) != sorted(vocab)  # the order by id is not the order of the strings
    widths = [h["shape"]["positions"] for h in heads]
    assert header["shape"] == {"prompts": 10, "rows": 4, "positions": max(widths)} and len(set(widths)) > 1
    assert list(header) == list(heads[0]) and header["meta"] == heads[0]["meta"]  # the same fields, no other
    assert "café naïve".encode() in meta[b"logitlens"]  # the header is UTF-8 JSON, as to_arrow writes it
    record = json.loads(meta[b"logitlens_stream"])
    assert record == fingerprint(lens, PROMPTS, RUN, "parquet")
    back = LensResult.load(path)
    assert back.n_prompts == 10 and sorted(back.prompt_index) == list(range(10))


def test_jsonl_is_one_json_object_per_line_in_batch_order(lens, tmp_path):
    path = tmp_path / "facts.jsonl"
    agg = stream(lens, PROMPTS, path, **OPTS)
    text = path.read_text(encoding="utf-8")
    want = pa.concat_tables([b.to_arrow() for b in _batches(lens, PROMPTS)]).to_pylist()
    assert text.endswith("}\n") and "\n\n" not in text
    lines = text.split("\n")[:-1]
    assert len(lines) == len(want) == agg.attrs["lines"]
    assert "café naïve" in text and "\\u00e9" not in text  # written as UTF-8, not escaped
    for line, row in zip(lines, want, strict=True):
        got = json.loads(line)
        assert list(got) == list(row)
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                assert got[key] is None  # NaN written as null
            elif isinstance(value, float) or (isinstance(value, list) and isinstance(value[0], float)):
                want_x, got_x = np.atleast_1d(value), np.atleast_1d(got[key])  # 15 decimals of the float32
                assert (np.abs(got_x - want_x) <= 6e-16 + 2.3e-16 * np.abs(want_x)).all(), key
            else:
                assert got[key] == value, key
    assert not path.with_name("facts.jsonl.tmp").exists() and not parts_dir(path).exists()


def test_a_single_batch_jsonl_ends_with_one_newline(lens, tmp_path):
    path = tmp_path / "one.jsonl"
    stream(lens, ["Paris"], path, **OPTS)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and not text.endswith("\n\n")


# ---- the aggregate ------------------------------------------------------------------------------------
def _reference_aggregate(table: pa.Table, targets) -> dict[str, np.ndarray]:
    """Per-row float64 mean and standard error of each metric, straight from the long table."""
    df = table.to_pandas()
    top1 = np.array([ids[0] for ids in df["top_ids"]])
    nxt = df["next_token_id"].to_numpy()
    df["accuracy"] = np.where(nxt >= 0, (top1 == nxt).astype(float), np.nan)
    df["agreement"] = df["agrees_with_final"].astype(float)
    out = {}
    for col in ["cross_entropy", "kl_to_final", "entropy", "agreement", "accuracy", *targets]:
        mean, se = [], []
        for r in range(4):
            x = df.loc[df["row"] == r, col].to_numpy(dtype=np.float64)
            x = x[~np.isnan(x)]
            mean.append(x.mean())
            se.append(x.std(ddof=1) / math.sqrt(len(x)))
        out[col], out[f"{col}_se"] = np.array(mean), np.array(se)
    out["cells"] = df.groupby("row").size().to_numpy()
    out["predictions"] = df[nxt >= 0].groupby("row").size().to_numpy()
    return out


def test_aggregate_is_the_float64_per_row_mean_of_the_file(lens, parquet_run):
    path, agg = parquet_run
    table = pq.read_table(path)
    ref = _reference_aggregate(table, ["p( Paris)", "p( Rome)"])
    assert list(agg["row_name"]) == lens.row_names and agg["row"].tolist() == [0, 1, 2, 3]
    assert agg["layer"].tolist() == [-1, 0, 1, 2] and agg["site"].tolist() == [
        "embed",
        "resid",
        "resid",
        "resid",
    ]
    np.testing.assert_allclose(agg["depth"], [0, 1 / 3, 2 / 3, 1], rtol=1e-12)
    assert agg["cells"].tolist() == ref["cells"].tolist()
    assert agg["predictions"].tolist() == ref["predictions"].tolist()
    for name, values in ref.items():
        np.testing.assert_allclose(agg[name], values, rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(agg["bits_per_token"], ref["cross_entropy"] / math.log(2), rtol=1e-9)
    again = aggregate_table(path)
    assert again.drop(columns=[]).equals(agg) and again.attrs["lines"] == table.num_rows


def test_aggregate_table_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(LogitLensError, match=rf"^cannot read {bad}: "):
        aggregate_table(str(bad))
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), plain)
    with pytest.raises(LogitLensError, match=rf"^not a logitlens result: {plain} has no logitlens metadata$"):
        aggregate_table(plain)


# ---- the run record -----------------------------------------------------------------------------------
def _sha(prompts) -> str:
    digest = hashlib.sha256()
    for p in prompts:
        digest.update((json.dumps(p, ensure_ascii=False) + "\n").encode("utf-8"))
    return digest.hexdigest()


def _shift(row, x):
    return x


def test_fingerprint_names_every_value_changing_option(lens):
    prompts = ["café", [5, 7, 9]]
    tuned = TunedLens.for_model(lens)
    fp = fingerprint(
        lens,
        prompts,
        {
            "top_k": 2,
            "targets": [" Paris", 7],
            "positions": (0, -1),
            "transform": _shift,
            "lens": tuned,
            "batch_size": 4,
            "truncate": True,
        },
        "jsonl",
    )
    sha = _sha(prompts)
    assert sha != hashlib.sha256(b"".join(json.dumps(p).encode() + b"\n" for p in prompts)).hexdigest()
    assert fp == {
        "format": "logitlens.stream",
        "version": 1,
        "output": "jsonl",
        "prompts": {"count": 2, "sha256": sha},
        "options": {
            "top_k": 2,
            "targets": [[" Paris", [395]], ["'", [7]]],
            "positions": [0, -1],
            "truncate": True,
            "transform": "_shift",
            "lens": tuned.fingerprint(),
            "include_subblocks": False,
            "answers": None,
            "chat": False,
            "prepend_bos": None,
            "remote": False,
        },
        "model": {
            "name": "tiny-llama",
            "model_type": "llama",
            "n_layers": 3,
            "vocab_size": 400,
            "dtype": "float32",
        },
    }


def test_fingerprint_defaults_an_int_position_and_a_callable_without_a_name(lens):
    fp = fingerprint(lens, ["a"], {"positions": -1, "transform": functools.partial(_shift)}, "parquet")
    opts = fp["options"]
    assert opts["positions"] == [-1] and opts["transform"] == "partial"
    assert opts["top_k"] == 10 and opts["targets"] == [] and opts["lens"] == "logit"
    assert "batch_size" not in opts and "attention_mask" not in opts and "prompts" not in opts
    assert fingerprint(lens, ["a"], {}, "parquet")["options"]["positions"] is None


def test_fingerprint_of_a_multi_token_target_warns_nothing(lens):
    """iter_run warns about a target of several tokens itself: the record is written without a warning,
    and values JSON cannot hold are written as their text."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp = fingerprint(lens, ["a"], {"targets": [" Paris Rome"], "answers": [np.array([3, 4])]}, "parquet")
    assert fp["options"]["targets"] == [[" Paris", [395]]] and fp["options"]["answers"] == ["[3 4]"]


def test_prompt_forms_give_the_same_run(lens):
    prompt_list = stream_module._prompt_list
    assert prompt_list("Paris") == ["Paris"]
    assert prompt_list(torch.tensor([3, 4])) == [[3, 4]]
    assert prompt_list(torch.tensor([[3, 4], [5, 6]])) == [[3, 4], [5, 6]]
    assert prompt_list([3, 4]) == [[3, 4]]
    mixed = prompt_list(("a", (3, 4), torch.tensor([5, 6])))
    assert json.dumps(mixed) == json.dumps(["a", [3, 4], [5, 6]]) and type(mixed[1]) is list
    assert parts_dir("out/r.parquet") == Path("out/r.parquet.parts")
    for bad in (5, b"ab", [], ()):
        with pytest.raises(
            LogitLensError, match=r"^prompts must be a non-empty list of strings or of token-id lists$"
        ):
            prompt_list(bad)


def test_run_record_is_written_while_the_run_is_in_progress(lens, tmp_path):
    path = tmp_path / "r.parquet"
    _interrupt(lens, path, PROMPTS, stop_after=2)
    parts = parts_dir(path)
    assert parts == tmp_path / "r.parquet.parts"
    record = (parts / "run.json").read_text(encoding="utf-8")
    fp = fingerprint(lens, PROMPTS, RUN, "parquet")
    assert record == json.dumps(fp, indent=1)
    assert sorted(p.name for p in parts.iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
        "run.json",
    ]
    batches = _batches(lens, PROMPTS)
    for n in range(2):
        assert _same_table(pq.read_table(parts / f"part-{n:06d}.parquet"), batches[n].to_arrow())
    (parts / "part-000002.parquet.tmp").write_bytes(b"PAR1 half a batch")
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, **OPTS)
    assert str(err.value) == (
        f"{parts} holds an interrupted run (6 of 10 prompts written): pass --resume (resume=True) to "
        "continue it, or delete that folder to start over"
    )
    assert (parts / "part-000002.parquet.tmp").exists()  # a refused run deletes nothing


def test_resume_deletes_unfinished_parts_before_it_runs(lens, tmp_path):
    path = tmp_path / "r.parquet"
    _interrupt(lens, path, PROMPTS, stop_after=2)
    parts = parts_dir(path)
    (parts / "part-000002.parquet.tmp").write_bytes(b"PAR1 half a batch")
    (parts / "run.json.1.tmp").write_text("{", encoding="utf-8")
    _interrupt(lens, path, PROMPTS, stop_after=1, resume=True)  # killed again after one more batch
    assert sorted(p.name for p in parts.iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
        "part-000002.parquet",
        "run.json",
    ]


# ---- _check_same --------------------------------------------------------------------------------------
def _record(**changes):
    base = {
        "format": "logitlens.stream",
        "version": 1,
        "output": "parquet",
        "prompts": {"count": 2, "sha256": "ab"},
        "options": {"top_k": 3, "positions": None},
        "model": {"name": "m", "dtype": "float32"},
    }
    base.update(changes)
    return base


FIX = "give the same prompts and options, or write to another file without --resume"


@pytest.mark.parametrize(
    ("old", "message"),
    [
        ([1, 2], "its run record is not a logitlens stream of version 1"),
        (_record(format="other"), "its run record is not a logitlens stream of version 1"),
        (_record(version=2), "its run record is not a logitlens stream of version 1"),
        (
            _record(prompts={"count": 3, "sha256": "ab"}),
            f"the prompts changed (it holds a run of 3 prompts, now 2); {FIX}",
        ),
        (
            _record(prompts={"count": 2, "sha256": "cd"}),
            f"the prompts changed (it holds a run of 2 prompts with other texts or order); {FIX}",
        ),
        (
            {k: v for k, v in _record().items() if k != "prompts"},
            f"the prompts changed (it holds a run of None prompts, now 2); {FIX}",
        ),
        (_record(output="jsonl"), f"it was written as 'jsonl', now 'parquet'; {FIX}"),
        (_record(options=None), f"it was written as None, now {{'top_k': 3, 'positions': None}}; {FIX}"),
        (
            _record(options={"top_k": 5, "positions": [1]}),
            f"it was written with positions=[1], now positions=None; {FIX}",
        ),
        (
            _record(options={"top_k": 3, "positions": None, "zz": 1}),
            f"it was written with zz=1, now no zz; {FIX}",
        ),
        (
            # a record of another version, without an option whose value is now None
            _record(options={"top_k": 3}),
            f"it was written without positions, now positions=None; {FIX}",
        ),
        (
            _record(model={"name": "m", "dtype": "float16"}),
            f"it was written with model dtype='float16', now model dtype='float32'; {FIX}",
        ),
    ],
)
def test_resume_refusals_name_what_changed(tmp_path, old, message):
    path = tmp_path / "r.parquet"
    with pytest.raises(LogitLensError) as err:
        stream_module._check_same(old, _record(), path)
    assert str(err.value) == f"cannot resume {path}: {message}"


def test_the_same_record_is_accepted(tmp_path):
    assert stream_module._check_same(_record(), _record(), tmp_path / "r.parquet") is None


# ---- stream's own refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompts", "message"), [(["a", 5], "prompt 2 is a int"), ([b"ab"], "prompt 1 is a bytes")]
)
def test_a_prompt_of_another_kind_is_named(lens, tmp_path, prompts, message):
    with pytest.raises(LogitLensError, match=f"^{message}: give strings or lists of token ids$"):
        stream(lens, prompts, tmp_path / "r.parquet")
    assert not (tmp_path / "r.parquet").exists()


def test_stream_refuses_attention_mask_and_unknown_options(lens, tmp_path):
    path = tmp_path / "r.parquet"
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, attention_mask=torch.ones(10, 3), **OPTS)
    assert (
        str(err.value) == "stream takes unpadded prompts: give a list of token-id lists, not attention_mask"
    )
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, zeta=1, alpha=2, **OPTS)
    assert str(err.value) == (
        "stream got an unknown option 'alpha'; options: answers, batch_size, chat, include_subblocks, lens, "
        "positions, prepend_bos, remote, targets, top_k, transform, truncate"
    )
    assert list(tmp_path.iterdir()) == []


# ---- resume -------------------------------------------------------------------------------------------
def test_resume_runs_only_the_missing_prompts_and_writes_what_one_run_writes(
    lens, parquet_run, tmp_path, monkeypatch
):
    path = tmp_path / "r.parquet"
    _interrupt(lens, path, PROMPTS, stop_after=2)
    parts = parts_dir(path)
    (parts / "part-000002.parquet.tmp").write_bytes(b"PAR1 half a batch")
    (parts / "run.json.0.tmp").write_text("{", encoding="utf-8")
    seen = []
    real = lens.iter_run

    @functools.wraps(real)
    def recording(prompts, **kwargs):
        seen.append(list(prompts))
        return real(prompts, **kwargs)

    monkeypatch.setattr(lens, "iter_run", recording)
    agg = stream(lens, PROMPTS, path, resume=True, **OPTS)
    monkeypatch.undo()
    order = [i for b in _batches(lens, PROMPTS) for i in b.prompt_index]
    missing = sorted(order[6:])
    assert seen == [[PROMPTS[i] for i in missing]]
    assert agg.attrs["resumed"] == 6 and agg.attrs["prompts"] == 10 and agg.attrs["path"] == str(path)
    assert not parts.exists() and not path.with_name("r.parquet.tmp").exists()
    full, full_agg = parquet_run
    key = ["prompt_index", "row", "column"]
    a = pq.read_table(path).to_pandas().sort_values(key).reset_index(drop=True)
    b = pq.read_table(full).to_pandas().sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == agg.attrs["lines"]
    np.testing.assert_allclose(a["entropy"], b["entropy"], atol=1e-5)
    np.testing.assert_allclose(agg["entropy"], full_agg["entropy"], atol=1e-6)
    assert pq.ParquetFile(path).num_row_groups == 2 + math.ceil(4 / 3)


def test_resume_on_a_fresh_output_is_a_plain_run(lens, tmp_path):
    path = tmp_path / "r.parquet"
    agg = stream(lens, PROMPTS[:4], path, resume=True, **OPTS)
    assert agg.attrs["resumed"] == 0 and agg.attrs["prompts"] == 4 and path.is_file()


def test_a_parts_folder_without_a_record_is_started_over(lens, tmp_path):
    """A run killed before its first batch leaves an empty folder (or only a *.tmp): it is removed."""
    path = tmp_path / "r.parquet"
    parts = parts_dir(path)
    parts.mkdir()
    (parts / "part-000000.parquet.tmp").write_bytes(b"PAR1")
    agg = stream(lens, PROMPTS[:4], path, **OPTS)
    assert agg.attrs["resumed"] == 0 and not parts.exists()
    assert sorted(pq.read_table(path, columns=["prompt_index"]).column(0).unique().to_pylist()) == [
        0,
        1,
        2,
        3,
    ]


def test_resume_of_a_finished_file_recomputes_the_aggregate_only(lens, parquet_run, tmp_path):
    src, first = parquet_run
    path = tmp_path / "done.parquet"
    shutil.copy(src, path)
    parts_dir(path).mkdir()  # a later run killed before its first batch
    again = stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert not parts_dir(path).exists()
    assert again.attrs == {
        "lines": first.attrs["lines"],
        "path": str(path),
        "prompts": 10,
        "resumed": 10,
        "seconds": 0.0,
    }
    assert again.equals(first)
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, resume=True, **{**OPTS, "top_k": 4})
    assert str(err.value) == (
        f"cannot resume {path}: it was written with top_k=3, now top_k=4; give the same prompts and options, or "
        "write to another file without --resume"
    )


def test_a_finished_file_is_kept_or_replaced(lens, tmp_path):
    path = tmp_path / "r.jsonl"
    stream(lens, PROMPTS[:2], path, **OPTS)
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS[:3], path, **OPTS)
    assert str(err.value) == (
        f"{path} already exists: pass --overwrite (overwrite=True) to replace it, or --resume (resume=True) "
        "to keep it if it holds this run"
    )
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS[:2], path, resume=True, **OPTS)
    assert str(err.value) == (
        f"{path} is already complete and JSON Lines keeps no record of its options to check: run without "
        "--resume to write it again"
    )
    agg = stream(lens, PROMPTS[:3], path, overwrite=True, **OPTS)
    assert agg.attrs["prompts"] == 3
    assert {json.loads(x)["prompt_index"] for x in path.read_text(encoding="utf-8").splitlines()} == {0, 1, 2}


def test_resume_refuses_a_parquet_file_it_did_not_write(lens, tmp_path):
    plain = tmp_path / "plain.parquet"
    lens.run(PROMPTS[:2], top_k=3).save(plain)
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS[:2], plain, resume=True, **OPTS)
    assert str(err.value) == (
        f"cannot resume {plain}: it was not written by a streamed run; run without --resume to replace it"
    )
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file")
    with pytest.raises(
        LogitLensError, match=rf"^cannot resume {junk}: it is not a readable Parquet file \(.+\)$"
    ):
        stream(lens, PROMPTS[:2], junk, resume=True, **OPTS)


def test_damaged_parts_folders_are_refused_with_the_fix(lens, tmp_path):
    path = tmp_path / "r.parquet"
    _interrupt(lens, path, PROMPTS, stop_after=2)
    parts = parts_dir(path)
    record = (parts / "run.json").read_text(encoding="utf-8")

    (parts / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert str(err.value) == f"{parts / 'run.json'} is damaged; delete {parts} to start over"

    (parts / "run.json").unlink()
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert str(err.value) == f"{parts} has parts but no run.json; delete that folder to start over"

    (parts / "run.json").write_text(record, encoding="utf-8")
    odd = parts / "part-x.parquet"
    odd.write_bytes(b"")
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert str(err.value) == f"{odd} is not a part of a streamed run; delete it or the folder {parts}"
    odd.unlink()

    broken = parts / "part-000007.parquet"
    broken.write_bytes(b"PAR1 cut")
    with pytest.raises(
        LogitLensError, match=rf"^cannot read {broken} \(.+\); delete it to run its batch again$"
    ):
        stream(lens, PROMPTS, path, resume=True, **OPTS)
    broken.unlink()

    shutil.copy(parts / "part-000001.parquet", parts / "part-000002.parquet")  # a batch twice
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert str(err.value) == f"{parts} does not hold every prompt exactly once; delete it to start over"
    (parts / "part-000002.parquet").unlink()

    path.with_name("r.parquet.tmp").mkdir()  # the joined file cannot be written
    with pytest.raises(LogitLensError) as err:
        stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert str(err.value) == f"cannot write {path}: Is a directory"
    assert parts.is_dir() and not path.exists()
    path.with_name("r.parquet.tmp").rmdir()
    assert stream(lens, PROMPTS, path, resume=True, **OPTS).attrs["resumed"] == 10


def test_finish_refuses_a_folder_without_parts(lens, tmp_path):
    parts = tmp_path / "r.parquet.parts"
    parts.mkdir()
    with pytest.raises(LogitLensError) as err:
        stream_module._finish(tmp_path / "r.parquet", parts, {}, 3)
    assert str(err.value) == f"{parts} holds no finished batch; delete it to start over"


def test_answers_of_a_resumed_run_read_back_with_every_prompt(lens, tmp_path):
    """Each prompt keeps its own answer: the resumed batches get the answers of the prompts they run, and
    the joined file's header holds every batch's answers (so ``LensResult.load`` reads it)."""
    prompts = PROMPTS[:6]
    answers = [" Paris", " Rome", None, " city", " Paris", " one"]
    path = tmp_path / "a.parquet"
    _interrupt(lens, path, prompts, stop_after=1, answers=answers)
    agg = stream(lens, prompts, path, resume=True, **{**OPTS, "answers": answers})
    assert agg.attrs["resumed"] == 3
    back = LensResult.load(path)
    want = lens.run(prompts, **RUN, answers=answers)
    assert [back.answers[back.prompt_index.index(i)] for i in range(6)] == answers
    for i in range(6):
        j = back.prompt_index.index(i)
        assert back.answer_ids[j] == want.answer_ids[i]
        np.testing.assert_allclose(
            back.answer_logprobs[j].numpy(), want.answer_logprobs[i].numpy(), atol=1e-5
        )


# ---- the progress bar ---------------------------------------------------------------------------------
class _Bars:
    """Records each progress bar stream opens and the prompts it advances by."""

    def __init__(self):
        self.opened, self.advanced = [], []

    @contextlib.contextmanager
    def __call__(self, total, unit, *, enabled=True, description="", completed=0):
        self.opened.append(
            {
                "total": total,
                "unit": unit,
                "enabled": enabled,
                "description": description,
                "completed": completed,
            }
        )
        yield lambda n, status=None: self.advanced.append(n)


def test_progress_counts_prompts_and_starts_at_those_already_written(lens, tmp_path, monkeypatch):
    path = tmp_path / "p.parquet"
    _interrupt(lens, path, PROMPTS, stop_after=1)
    bars = _Bars()
    monkeypatch.setattr(stream_module, "progress_bar", bars)
    stream(lens, PROMPTS, path, resume=True, **{**OPTS, "progress": True})
    sizes = [b.n_prompts for b in _batches(lens, [p for i, p in enumerate(PROMPTS)][:0] or PROMPTS)]
    assert bars.opened == [
        {"total": 10, "unit": "prompts", "enabled": True, "description": "p.parquet", "completed": 3}
    ]
    assert sum(bars.advanced) == 7 and len(bars.advanced) == 3 and sizes[0] == 3
    bars.opened.clear()
    stream(lens, PROMPTS[:2], tmp_path / "q.jsonl", **OPTS)
    assert bars.opened[0]["enabled"] is False and bars.opened[0]["description"] == "q.jsonl"


# ---- ranks of a distributed run -----------------------------------------------------------------------
def _parts_numbered_from_now(monkeypatch, parts) -> None:
    """Ranks read the first free part number before any of them writes (a barrier sees to it); here, where
    they run one after the other, the number is read once for all."""
    base = stream_module._next_part(parts)
    monkeypatch.setattr(stream_module, "_next_part", lambda folder: base)


def _remapped(batches, index) -> list[pa.Table]:
    """Each batch's table with its prompt_index mapped through ``index`` (positions -> prompt numbers)."""
    return [b.replace(prompt_index=[index[j] for j in b.prompt_index]).to_arrow() for b in batches]


def test_ranks_write_the_batches_one_process_forms(lens, parquet_run, tmp_path, monkeypatch):
    """Batch b of the run goes to rank b mod 2 as part-r<rank>-<b>; the joined file is the one a single
    process writes, line for line."""
    path = tmp_path / "r.parquet"
    parts = parts_dir(path)
    fp = fingerprint(lens, PROMPTS, RUN, "parquet")
    bars = _Bars()
    monkeypatch.setattr(stream_module, "progress_bar", bars)
    batches = _batches(lens, PROMPTS)
    assert stream_module._global_batches(lens, PROMPTS, RUN) == [b.prompt_index for b in batches]
    _parts_numbered_from_now(monkeypatch, parts)
    for rank in (1, 0):
        stream_module._run_share(lens, PROMPTS, list(range(10)), parts, fp, False, True, Group(rank, 2), RUN)
    names = sorted(p.name for p in parts.iterdir())
    assert names == [
        "part-r0-000000.parquet",
        "part-r0-000002.parquet",
        "part-r1-000001.parquet",
        "part-r1-000003.parquet",
        "run.json",
    ]
    assert json.loads((parts / "run.json").read_text(encoding="utf-8")) == fp
    for n, table in enumerate(_remapped(batches, list(range(10)))):
        assert _same_table(pq.read_table(parts / f"part-r{n % 2}-{n:06d}.parquet"), table), n
    share = [sum(len(batches[b].prompt_index) for b in range(r, 4, 2)) for r in (1, 0)]
    assert bars.opened == [
        {
            "total": share[0],
            "unit": "prompts",
            "enabled": False,
            "description": "r.parquet (rank 1 of 2)",
            "completed": 0,
        },
        {
            "total": share[1],
            "unit": "prompts",
            "enabled": True,
            "description": "r.parquet (rank 0 of 2)",
            "completed": 0,
        },
    ]
    assert bars.advanced == [len(batches[b].prompt_index) for b in (1, 3, 0, 2)]
    agg = stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert agg.attrs["resumed"] == 10 and not parts.exists()
    assert _same_table(pq.read_table(path), pq.read_table(parquet_run[0]))


def test_ranks_share_the_prompts_a_resumed_run_still_misses(lens, tmp_path, monkeypatch):
    path = tmp_path / "r.parquet"
    _interrupt(lens, path, PROMPTS, stop_after=1)
    parts = parts_dir(path)
    first = _batches(lens, PROMPTS)[0].prompt_index
    remaining = [i for i in range(10) if i not in first]
    fp = fingerprint(lens, PROMPTS, RUN, "parquet")
    rest = _batches(lens, [PROMPTS[i] for i in remaining])
    assert stream_module._global_batches(lens, [PROMPTS[i] for i in remaining], RUN) == [
        b.prompt_index for b in rest
    ]
    _parts_numbered_from_now(monkeypatch, parts)
    bars = _Bars()
    monkeypatch.setattr(stream_module, "progress_bar", bars)
    for rank in (1, 0):
        stream_module._run_share(lens, PROMPTS, remaining, parts, fp, True, True, Group(rank, 2), RUN)
    # each rank counts its own share from 0, whatever the parts of before hold
    assert [(b["completed"], b["enabled"]) for b in bars.opened] == [(0, False), (0, True)]
    assert sum(b["total"] for b in bars.opened) == len(remaining)
    for b, table in enumerate(_remapped(rest, remaining)):
        assert _same_table(pq.read_table(parts / f"part-r{b % 2}-{1 + b:06d}.parquet"), table), b
    assert len(list(parts.glob("part-*.parquet"))) == 1 + len(rest)
    # a rank with no batch writes nothing
    stream_module._run_share(lens, PROMPTS, remaining, parts, fp, True, False, Group(7, 8), RUN)
    assert len(list(parts.glob("part-*.parquet"))) == 1 + len(rest)
    monkeypatch.undo()
    agg = stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert agg.attrs["resumed"] == 10 and agg.attrs["lines"] == pq.read_metadata(path).num_rows


def test_global_batches_are_longest_first_with_truncated_lengths(lens):
    """Prompts longer than the context count as the context's length under ``truncate`` (ties keep their
    order); ``batch_size`` defaults to the lens's."""
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    long = [" ".join(words * k) for k in (9, 7, 8)]  # 90, 70 and 80 words: all over 64 tokens
    prompts = ["Paris", long[0], "hello world", long[1], long[2], "the city of Rome"]
    lengths = [len(ids) for ids in lens.encode(prompts)[0]]
    assert min(lengths[1], lengths[3], lengths[4]) > lens.context_length == 64
    got = stream_module._global_batches(lens, prompts, {"truncate": True, "batch_size": 2})
    assert got == [[1, 3], [4, 5], [2, 0]]
    with pytest.warns(UserWarning, match="kept the last 64 of"):
        assert got == [b.prompt_index for b in lens.iter_run(prompts, truncate=True, batch_size=2, top_k=1)]
    assert stream_module._global_batches(lens, prompts, {"batch_size": 2}) == [[1, 4], [3, 5], [2, 0]]
    assert lens.batch_size == 8
    assert stream_module._global_batches(lens, prompts, {"truncate": True}) == [[1, 3, 4, 5, 2, 0]]


class _Dist:
    """Stands in for ``logitlens.tasks.distributed`` in ``stream``: records every call, and runs as the rank
    ``group`` says, with ``shared`` as what rank 0 broadcasts."""

    def __init__(self, group: Group, shared=None):
        self.group, self.shared, self.calls = group, shared, []

    @contextlib.contextmanager
    def together(self, what):
        self.calls.append(("together", what))
        yield self.group

    def agree(self, what, digest, fix):
        self.calls.append(("agree", what, digest, fix))

    def barrier(self, what):
        self.calls.append(("barrier", what))

    def broadcast_object(self, obj, what):
        self.calls.append(("broadcast_object", what))
        return obj if self.group.is_main else self.shared

    def poll(self):
        self.calls.append(("poll",))

    def install(self, monkeypatch):
        for name in ("together", "agree", "barrier", "broadcast_object", "poll"):
            monkeypatch.setattr(stream_module.distributed, name, getattr(self, name))
        return self


AGREE = (
    "agree",
    "the prompts and options",
    None,
    "give every rank the same prompts file (a path every node sees) and the same options",
)


def test_ranks_check_and_wait_for_each_other_at_every_step(lens, tmp_path, monkeypatch):
    dist = _Dist(Group()).install(monkeypatch)
    path = tmp_path / "r.parquet"
    agg = stream(lens, PROMPTS, path, **OPTS)
    digest = hashlib.sha256(
        json.dumps(fingerprint(lens, PROMPTS, RUN, "parquet"), sort_keys=True).encode()
    ).hexdigest()
    agree = (*AGREE[:2], digest, AGREE[3])
    assert dist.calls == [
        ("together", "the streamed run"),
        agree,
        ("barrier", "checking the parts folder"),
        ("barrier", "cleaning the parts folder"),
        ("barrier", "reading the finished parts"),
        *[("poll",)] * 4,
        ("barrier", "waiting for every rank's parts"),
        ("broadcast_object", "sharing the joined file's aggregate"),
    ]
    assert 0 < agg.attrs["seconds"] < 600
    dist.calls.clear()
    stream(lens, PROMPTS, path, resume=True, **OPTS)
    assert dist.calls == [("together", "the streamed run"), agree, ("barrier", "reading the finished file")]


def test_a_rank_other_than_0_writes_its_parts_and_returns_rank_0s_aggregate(
    lens, parquet_run, tmp_path, monkeypatch
):
    """Rank 1 of 2 writes the parts of batches 1 and 3 only, cleans nothing (rank 0 does), joins nothing,
    and returns the aggregate rank 0 broadcasts."""
    path = tmp_path / "r.parquet"
    parts = parts_dir(path)
    parts.mkdir()
    (parts / "part-r0-000000.parquet.tmp").write_bytes(b"rank 0 writing")
    shared = parquet_run[1].copy()
    _Dist(Group(1, 2), shared).install(monkeypatch)
    renamed = []
    real_replace = stream_module.os.replace

    def replace(src, dst):
        renamed.append((src.name, dst.name))
        real_replace(src, dst)

    monkeypatch.setattr(stream_module.os, "replace", replace)
    agg = stream(lens, PROMPTS, path, **OPTS)
    monkeypatch.setattr(stream_module.os, "replace", real_replace)
    assert renamed == [  # each rank writes run.json through a file of its own
        ("run.json.1.tmp", "run.json"),
        ("part-r1-000001.parquet.tmp", "part-r1-000001.parquet"),
        ("part-r1-000003.parquet.tmp", "part-r1-000003.parquet"),
    ]
    assert agg is shared and agg.attrs["resumed"] == 0 and agg.attrs["prompts"] == 10
    assert not path.exists()
    assert sorted(p.name for p in parts.iterdir()) == [
        "part-r0-000000.parquet.tmp",
        "part-r1-000001.parquet",
        "part-r1-000003.parquet",
        "run.json",
    ]


def test_an_upper_case_suffix_is_the_same_format(lens, tmp_path):
    path = tmp_path / "R.PARQUET"
    stream(lens, PROMPTS[:4], path, **OPTS)
    assert pq.ParquetFile(path).num_row_groups == 2  # Parquet, not JSON Lines
    assert json.loads(pq.read_schema(path).metadata[b"logitlens_stream"])["output"] == "parquet"
    again = stream(lens, PROMPTS[:4], path, resume=True, **OPTS)  # its record is checked, not refused
    assert again.attrs["resumed"] == 4
    jsonl = tmp_path / "R.JSONL"
    stream(lens, PROMPTS[:4], jsonl, **OPTS)
    assert json.loads(jsonl.read_text(encoding="utf-8").splitlines()[0])["prompt_index"] in range(4)


def test_accuracy_counts_the_top_1_hits(lens, tmp_path):
    """Greedy continuations: the output row's top-1 is the next token of most cells (11 of 14)."""
    ids = [5]
    for _ in range(7):
        res = lens.run([ids], top_k=2)
        ids.append(int(res.top_ids[0, -1, len(ids) - 1, 0]))
    prompts = [ids, ids[:5], [7, 9, 11, 13]]
    path = tmp_path / "g.parquet"
    agg = stream(lens, prompts, path, **{**OPTS, "top_k": 2})
    ref = _reference_aggregate(pq.read_table(path), ["p( Paris)", "p( Rome)"])
    assert ref["accuracy"][-1] == 11 / 14 and ref["predictions"][-1] == 14
    np.testing.assert_allclose(agg["accuracy"], ref["accuracy"], rtol=1e-12)
    np.testing.assert_allclose(agg["accuracy_se"], ref["accuracy_se"], rtol=1e-9)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_batches_without_answers_join_those_with_answers(lens, tmp_path, suffix):
    """A batch whose prompts have no answer has no answer columns of its own: in the joined file its lines
    hold what a prompt without an answer holds in a batch with answers (null, NaN, rank -1)."""
    prompts = ["Paris Rome", "hello world the city", "one two", "lens final"]
    answers = [None, " Paris", None, " Rome"]
    path = tmp_path / f"a.{suffix}"
    agg = stream(lens, prompts, path, progress=False, top_k=2, batch_size=1, answers=answers)
    want = lens.run(prompts, top_k=2, batch_size=1, answers=answers).to_arrow()
    if suffix == "parquet":
        got = pq.read_table(path)
        assert got.schema.names == want.schema.names and got.schema.names[-4:] == [
            "answer",
            "answer_logprob",
            "p(answer)",
            "rank(answer)",
        ]
        assert _same_table(got.sort_by("prompt_index"), want)
        back = LensResult.load(path)
        order = [back.prompt_index.index(i) for i in range(4)]
        assert [back.answers[j] for j in order] == answers
        assert [int(back.answer_ranks[j, -1]) for j in order][::2] == [-1, -1]
    else:
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        assert len(lines) == want.num_rows == agg.attrs["lines"]
        rows = sorted(lines, key=lambda r: r["prompt_index"])
        for got, row in zip(rows, want.to_pylist(), strict=True):
            assert list(got) == list(row)
            assert got["answer"] == row["answer"] and got["rank(answer)"] == row["rank(answer)"]
            if row["answer"] is None:
                assert got["answer_logprob"] is None and got["rank(answer)"] == -1


def test_aggregate_of_a_file_without_a_layer_count_or_target_columns(lens, tmp_path):
    """A result header may lack ``meta.n_layers`` and ``per_target_columns`` (``LensResult.load`` accepts
    that): depth then counts blocks as if there were one layer, and no ``p(target)`` column is averaged."""
    table = lens.run(PROMPTS[:3], top_k=2, targets=[" Paris"]).to_arrow()
    head = json.loads(table.schema.metadata[b"logitlens"])
    del head["meta"]["n_layers"], head["per_target_columns"]
    path = tmp_path / "bare.parquet"
    pq.write_table(table.replace_schema_metadata({b"logitlens": json.dumps(head)}), path)
    agg = aggregate_table(path)
    assert agg["depth"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert not any(c.startswith("p(") for c in agg.columns)
    np.testing.assert_allclose(agg["entropy"], table.to_pandas().groupby("row")["entropy"].mean(), rtol=1e-6)


def test_fingerprint_of_a_lens_that_is_not_a_lens_names_its_type(lens, tmp_path):
    """The record names what was given; the run itself refuses it with iter_run's message."""
    assert fingerprint(lens, ["a"], {"lens": "tuned"}, "parquet")["options"]["lens"] == "str"
    with pytest.raises(LogitLensError, match="^lens must be a logitlens.Lens, got str$"):
        stream(lens, ["a"], tmp_path / "r.parquet", lens="tuned", **OPTS)


def test_progress_is_shown_by_default(lens, tmp_path, monkeypatch):
    bars = _Bars()
    monkeypatch.setattr(stream_module, "progress_bar", bars)
    stream(lens, ["Paris"], tmp_path / "r.parquet", top_k=1)
    assert bars.opened == [
        {"total": 1, "unit": "prompts", "enabled": True, "description": "r.parquet", "completed": 0}
    ]


def test_global_batches_count_the_chat_template_and_the_bos_token(lens):
    """Ranks batch on the lengths iter_run sees: with chat=True or prepend_bos=True every prompt is longer,
    and under ``truncate`` two prompts then tie at the context length (and keep their order)."""
    tok = copy.deepcopy(lens.tokenizer)
    tok.bos_token = "<|endoftext|>"
    tok.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    chatty = LogitLens(lens.model, tok, name="tiny-chat")
    prompts = ["one" + " one" * 31, "one" + " one" * 32]
    assert [len(ids) for ids in chatty.encode(prompts)[0]] == [63, 65]
    for extra, want in (({}, [[1], [0]]), ({"prepend_bos": True}, [[0], [1]]), ({"chat": True}, [[0], [1]])):
        opts = {"truncate": True, "batch_size": 1, **extra}
        assert stream_module._global_batches(chatty, prompts, opts) == want, extra
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kept the last 64 tokens
            assert [b.prompt_index for b in chatty.iter_run(prompts, top_k=1, **opts)] == want, extra


def test_a_batch_of_more_than_a_million_lines_is_one_row_group(lens, tmp_path):
    """A part is written as one row group however long it is (Parquet writers cut at 1,048,576 lines by
    default)."""
    res = lens.run(["Paris Rome"], top_k=1)
    table = res.to_arrow()
    n = 1_048_576 + 8
    big = table.take(np.resize(np.arange(table.num_rows), n))
    parts = tmp_path / "big.parquet.parts"
    parts.mkdir()
    pq.write_table(big, parts / "part-000000.parquet")
    path = tmp_path / "big.parquet"
    agg = stream_module._finish(path, parts, {}, 1)
    meta = pq.read_metadata(path)
    assert meta.num_row_groups == 1 and meta.num_rows == n == agg.attrs["lines"]
