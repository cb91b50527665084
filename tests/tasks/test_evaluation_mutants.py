"""Tests written from the mutation run of ``tasks/evaluation.py`` (scripts/mutate.py evaluation): the running
per-row means (``RowAggregate``) against numpy's mean and standard deviation of all values at once, over
batches, NaNs, empty rows, merged states and the table; ``evaluate``'s options, messages and run record;
the data it accepts; and the data-parallel path (sharding and the one all-reduce), run here rank by rank
in one process with the collectives simulated."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import re
import time
import warnings

import numpy as np
import pytest
import torch

from logitlens import Corpus, LogitLensError
from logitlens.core.rows import Row
from logitlens.tasks import distributed, evaluation
from logitlens.tasks.evaluation import RowAggregate, add_result, evaluate, next_ids

ROWS = [Row(-1, "embed"), Row(0), Row(1, "attn"), Row(1)]


def _batches(seed=0):
    """Three batches of (values, row) with NaNs; row 2 gets exactly one value, no row gets none."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (7, 1, 12):
        row = rng.choice([0, 1, 3], size=n)
        values = rng.normal(loc=row * 2.0, scale=1.0 + row, size=n)
        values[rng.random(n) < 0.2] = np.nan
        out.append((values, row))
    out.append((np.array([5.0, np.nan]), np.array([2, 0])))
    return out


def _reference(batches, n_rows=4):
    values = np.concatenate([v for v, _ in batches])
    rows = np.concatenate([r for _, r in batches])
    mean, se, count = [], [], []
    for r in range(n_rows):
        x = values[(rows == r) & ~np.isnan(values)]
        count.append(len(x))
        mean.append(x.mean() if len(x) else np.nan)
        se.append(x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else np.nan)
    return np.array(mean), np.array(se), np.array(count)


def test_running_means_and_standard_errors_equal_numpy_over_all_values():
    agg = RowAggregate(ROWS, 2)
    batches = _batches()
    for values, row in batches:
        agg.add("ce", values, row)
    mean, se = agg.mean_se("ce")
    ref_mean, ref_se, ref_count = _reference(batches)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(se, ref_se, rtol=1e-10, atol=1e-12)
    assert np.isnan(se[2]) and not np.isnan(mean[2])  # one value: a mean, no standard error
    assert agg.count("ce").tolist() == ref_count.tolist() and agg.count("ce").dtype == np.int64


def test_a_row_without_values_is_nan_and_an_unknown_metric_counts_zero():
    agg = RowAggregate(ROWS, 2)
    agg.add("m", np.array([1.0, 3.0, np.nan]), np.array([0, 0, 1]))
    agg.add("m", np.array([np.nan]), np.array([3]))
    mean, se = agg.mean_se("m")
    assert mean[0] == 2.0 and se[0] == pytest.approx(math.sqrt(2.0 / 2))
    assert np.isnan(mean[1:]).all() and np.isnan(se[1:]).all()
    assert agg.count("m").tolist() == [2, 0, 0, 0]
    assert agg.count("other").tolist() == [0, 0, 0, 0]
    mean, se = agg.mean_se("other")
    assert np.isnan(mean).all() and np.isnan(se).all()


def test_merging_states_equals_one_aggregate_over_everything():
    batches = _batches(1)
    whole = RowAggregate(ROWS, 2)
    parts = [RowAggregate(ROWS, 2), RowAggregate(ROWS, 2)]
    assert parts[0].state().shape == (0, 3, 4) and parts[0].metrics == []
    for i, (values, row) in enumerate(batches):
        for name, scale in (("b", 1.0), ("a", -3.0)):
            whole.add(name, values * scale, row)
            parts[i % 2].add(name, values * scale, row)
    merged = RowAggregate(ROWS, 2)
    for part in parts:
        merged.merge_state(part.metrics, part.state())
    assert merged.metrics == whole.metrics == ["b", "a"]  # the order first added
    state = merged.state()
    assert state.shape == (2, 3, 4)
    np.testing.assert_allclose(state, whole.state(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(state[0, 0], _reference(batches)[2])  # counts
    for name in ("a", "b"):
        np.testing.assert_allclose(merged.mean_se(name), whole.mean_se(name), rtol=1e-10, equal_nan=True)
    assert parts[0].state() is not state  # merging copied, the parts are unchanged
    with pytest.raises(ValueError):
        merged.merge_state(["a"], state)  # a name per metric


def test_to_frame_columns_and_bits_per_token():
    agg = RowAggregate(ROWS, 2)
    agg.add("entropy", np.array([1.0, 2.0, 4.0]), np.array([0, 0, 3]))
    agg.add("cross_entropy", np.array([math.log(2), 3 * math.log(2), 2.0]), np.array([1, 1, 3]))
    df = agg.to_frame({"positions": "cross_entropy"})
    assert list(df.columns) == [
        "row", "row_name", "layer", "site", "depth", "positions",
        "entropy", "entropy_se", "cross_entropy", "cross_entropy_se", "bits_per_token", "bits_per_token_se",
    ]  # fmt: skip
    assert df["row"].tolist() == [0, 1, 2, 3] and df["row"].dtype == np.int32
    assert df["row_name"].tolist() == ["embed", "0", "1.attn", "1"]
    assert df["layer"].tolist() == [-1, 0, 1, 1] and df["layer"].dtype == np.int32
    assert df["site"].tolist() == ["embed", "resid", "attn", "resid"]
    assert df["depth"].tolist() == [0.0, 0.5, 0.75, 1.0]
    assert df["positions"].tolist() == [0, 2, 0, 1]
    assert df["bits_per_token"][1] == pytest.approx(2.0)
    assert df["bits_per_token_se"][1] == pytest.approx(df["cross_entropy_se"][1] / math.log(2))
    assert df["entropy"][0] == 1.5 and np.isnan(df["entropy"][1])
    assert list(agg.to_frame().columns)[:5] == ["row", "row_name", "layer", "site", "depth"]
    assert agg.n_rows == 4 and agg.n_layers == 2


def test_inputs_of_other_shapes_and_dtypes_are_flattened_and_cast():
    """2-D values and float row indices are read as flat values and int64 rows; float32 values are summed in
    float64 (the means equal float64 means of the same values)."""
    values = np.array([[0.1, 0.2, 0.3], [0.7, np.nan, 1.1]], dtype=np.float32)
    rows = np.array([[0.0, 1.0, 1.0], [3.0, 0.0, 3.0]])
    agg = RowAggregate(ROWS, 2)
    agg.add("m", values, rows)
    agg.add("m", values[::-1], rows[::-1])
    flat = values.astype(np.float64).reshape(-1)
    mean, _ = agg.mean_se("m")
    expected = [np.mean(flat[[0, 0]]), np.mean(flat[[1, 2, 1, 2]]), np.nan, np.mean(flat[[3, 5, 3, 5]])]
    np.testing.assert_allclose(mean, expected, rtol=1e-15, equal_nan=True)
    assert agg.count("m").tolist() == [2, 4, 0, 4]


def test_means_and_errors_raise_no_numpy_warnings():
    """Rows with no value or one value are NaN without a divide-by-zero or invalid-value warning."""
    agg = RowAggregate(ROWS, 2)
    agg.add("m", np.array([1.0, 2.0, 5.0]), np.array([0, 0, 1]))
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, se = agg.mean_se("m")
    assert mean[:2].tolist() == [1.5, 5.0] and np.isnan(mean[2:]).all()
    assert se[0] == pytest.approx(0.5) and np.isnan(se[1:]).all()


# ---- evaluate: options, messages, the run record -------------------------------------------------------
@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(3, 300, (4, 6), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["top_k", "targets", "positions", "attention_mask"])
def test_run_options_evaluate_chooses_itself_are_refused(lens, ids, name):
    message = f"evaluate decodes every position of every sequence; {name}= is not an option here"
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        evaluate(lens, ids, progress=False, **{name: 1})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("tokens", 0, "tokens (--tokens) must be a positive integer, got 0"),
        ("tokens", True, "tokens (--tokens) must be a positive integer, got True"),
        ("tokens", 2.0, "tokens (--tokens) must be a positive integer, got 2.0"),
        ("seq_len", 1, "seq_len (--seq-len) must be an integer of at least 2, got 1"),
        ("seq_len", True, "seq_len (--seq-len) must be an integer of at least 2, got True"),
        ("seq_len", 4.0, "seq_len (--seq-len) must be an integer of at least 2, got 4.0"),
        ("batch_size", 0, "batch_size (--batch-size) must be a positive integer, got 0"),
        ("batch_size", True, "batch_size (--batch-size) must be a positive integer, got True"),
        ("batch_size", 2.0, "batch_size (--batch-size) must be a positive integer, got 2.0"),
    ],
)
def test_bad_options_are_refused_with_their_message(lens, ids, option, value, message):
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        evaluate(lens, ids, progress=False, **{option: value})


def test_the_smallest_accepted_values(lens, ids):
    df = evaluate(lens, ids[:1, :2], seq_len=2, batch_size=1, tokens=1, progress=False)
    assert df.attrs["sequences"] == 1 and (df["tokens"] == 1).all()


def test_the_defaults(lens):
    """seq_len 512 is longer than the tiny model's context (64): the message names both."""
    defaults = {k: p.default for k, p in inspect.signature(evaluate).parameters.items()}
    assert defaults["seq_len"] == 512 and defaults["lines"] is False and defaults["field"] == "text"
    assert defaults["progress"] is True and defaults["seed"] == 0 and defaults["split"] is None
    message = (
        "seq_len (--seq-len) 512 is longer than the context of tiny-llama (64 tokens); choose at most 64"
    )
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        evaluate(lens, Corpus.from_texts(["a few words of text"] * 4), progress=False)


@pytest.mark.parametrize(("tokens", "seq_len"), [(2, 2), (5, 5), (16, 16)])
def test_fewer_tokens_than_a_sequence_make_one_shorter_sequence(lens, tokens, seq_len):
    corpus = Corpus.from_texts([" ".join(["lens", "tower", "city"] * 30)] * 4)
    df = evaluate(lens, corpus, tokens=tokens, seq_len=16, split="all", progress=False)
    assert df.attrs["seq_len"] == seq_len and df.attrs["sequences"] == 1
    assert df.attrs["tokens"] == seq_len and (df["tokens"] == seq_len - 1).all()


def test_the_run_record_and_the_first_columns(lens, ids):
    before = time.perf_counter()
    df = evaluate(lens, ids, progress=False)
    wall = time.perf_counter() - before
    attrs = dict(df.attrs)
    seconds, rate = attrs.pop("seconds"), attrs.pop("tokens_per_s")
    assert attrs == {
        "model": "tiny-llama",
        "lens": "logit",
        "data": "token ids",
        "split": None,
        "seed": None,
        "seq_len": 6,
        "sequences": 4,
        "tokens": 24,
    }
    assert 0 < seconds <= wall and rate == pytest.approx(24 / seconds)
    assert list(df.columns[:3]) == ["model", "lens", "row"]
    assert df["model"].unique().tolist() == ["tiny-llama"] and df["lens"].unique().tolist() == ["logit"]


def test_an_instant_run_has_no_rate(lens, ids, monkeypatch):
    monkeypatch.setattr(evaluation.time, "perf_counter", lambda: 100.0)
    df = evaluate(lens, ids, progress=False)
    assert df.attrs["seconds"] == 0.0 and math.isnan(df.attrs["tokens_per_s"])


def test_what_reaches_the_batched_run_and_the_progress_bar(lens, ids, monkeypatch):
    """One top token per cell, the batch size (given, or TOKENS_PER_BATCH // the longest sequence, at least
    one), the caller's run options; the bar counts every token, named after the model."""
    calls, bars = [], []
    real = type(lens).iter_run

    def spy(self, seqs, **kwargs):
        calls.append(kwargs)
        return real(self, seqs, **kwargs)

    @contextlib.contextmanager
    def bar(total, unit, *, enabled=True, description=""):
        done = []
        bars.append(
            {"total": total, "unit": unit, "enabled": enabled, "description": description, "done": done}
        )
        yield lambda n, status=None: done.append(n)

    monkeypatch.setattr(type(lens), "iter_run", spy)
    monkeypatch.setattr(evaluation, "progress_bar", bar)
    evaluate(lens, ids, batch_size=3, include_subblocks=True)
    evaluate(lens, ids, progress=False)
    monkeypatch.setattr(evaluation, "TOKENS_PER_BATCH", 10)
    evaluate(lens, ids, progress=False)
    assert calls == [
        {"top_k": 1, "batch_size": 3, "include_subblocks": True},
        {"top_k": 1, "batch_size": 4096 // 6},
        {"top_k": 1, "batch_size": 1},
    ]
    assert bars[0] == {"total": 24, "unit": "tokens", "enabled": True, "description": "eval tiny-llama",
                       "done": [18, 6]}  # fmt: skip
    assert [b["enabled"] for b in bars] == [True, False, False]


def test_a_tuned_lens_is_named_in_the_table(lens, ids):
    from logitlens import TunedLens

    tuned = TunedLens.for_model(lens)
    tuned.name = "my-lens"
    df = evaluate(lens, ids, lens=tuned, progress=False)
    assert df["lens"].unique().tolist() == ["my-lens"] and df.attrs["lens"] == "my-lens"


# ---- the data evaluate accepts -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.ones(6, dtype=torch.long), "token ids must be a non-empty integer tensor of shape (sequences, tokens)"),
        (torch.ones(2, 3), "token ids must be a non-empty integer tensor of shape (sequences, tokens)"),
        (torch.ones(0, 3, dtype=torch.long), "token ids must be a non-empty integer tensor of shape (sequences, tokens)"),
        ([[1, 2], []], "token-id sequences must be non-empty lists of ints"),
        ([{5, 6, 7}], "data must be a corpus source ('sample' or a path), a list of them, a logitlens.Corpus, "
         "or token ids (a LongTensor or lists of ints), got list"),
        (3.5, "data must be a corpus source ('sample' or a path), a list of them, a logitlens.Corpus, "
         "or token ids (a LongTensor or lists of ints), got float"),
    ],
)  # fmt: skip
def test_data_of_the_wrong_kind_is_refused(lens, data, message):
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        evaluate(lens, data, progress=False)


def test_int32_ids_one_token_and_two_tokens(lens):
    """int32 ids are read like int64 ones; one token has no next token (no cell), two tokens have one."""
    one = evaluate(lens, torch.tensor([[5]], dtype=torch.int32), progress=False)
    assert (one["tokens"] == 0).all() and one.attrs["seq_len"] == 1 and one.attrs["tokens"] == 1
    two = evaluate(lens, torch.tensor([[5, 6]], dtype=torch.int32), progress=False)
    assert (two["tokens"] == 1).all() and two["cross_entropy"].notna().all()
    lists = evaluate(lens, [[5, 6], [7, 8, 9]], progress=False)
    assert lists.attrs["seq_len"] == 3 and lists.attrs["data"] == "token ids" and (lists["tokens"] == 3).all()
    assert lists.attrs["split"] is None and lists.attrs["seed"] is None


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    lines = [" ".join(["one two three four five six", w] * 3) for w in ("Paris", "Rome", "lens", "city")]
    (root / "a.txt").write_text("\n".join(lines), encoding="utf-8")
    (root / "b.jsonl").write_text(
        "\n".join(json.dumps({"body": line, "text": "x"}) for line in lines), encoding="utf-8"
    )
    return root


def _same_as_ids(lens, df, corpus, seq_len):
    ids = corpus.sequences(lens.tokenizer, seq_len)
    ref = evaluate(lens, ids, progress=False)
    assert df.attrs["sequences"] == ids.shape[0]
    np.testing.assert_allclose(df["cross_entropy"], ref["cross_entropy"], rtol=1e-6)


def test_files_paths_lines_field_split_and_seed_reach_the_reader(lens, corpus_files):
    from pathlib import Path

    text, jsonl = Path(corpus_files / "a.txt"), corpus_files / "b.jsonl"
    df = evaluate(lens, text, seq_len=8, split="all", lines=True, progress=False)
    assert df.attrs["data"] == Corpus.read(text, lines=True).name and df.attrs["split"] == "all"
    _same_as_ids(lens, df, Corpus.read(text, lines=True), 8)
    df = evaluate(lens, [str(text), text], seq_len=8, split="all", progress=False)
    _same_as_ids(lens, df, Corpus.read([str(text), text]), 8)
    df = evaluate(lens, jsonl, seq_len=8, split="all", field="body", progress=False)
    _same_as_ids(lens, df, Corpus.read(jsonl, field="body"), 8)
    df = evaluate(lens, jsonl, seq_len=2, split="all", progress=False)  # the default field: "text"
    _same_as_ids(lens, df, Corpus.read(jsonl, field="text"), 2)
    corpus = Corpus.read(text, lines=True)
    for seed in (0, 5):
        df = evaluate(lens, text, seq_len=8, lines=True, seed=seed, progress=False)
        assert df.attrs["split"] == "validation" and df.attrs["seed"] == seed and df.attrs["seq_len"] == 8
        _same_as_ids(lens, df, corpus.split("validation", seed=seed), 8)


# ---- cells: the next token of each decoded position ---------------------------------------------------
def test_next_ids_and_add_result(lens):
    res = lens.run([[5, 6, 7], [8, 9]], top_k=1)
    nxt = next_ids(res)
    assert nxt.dtype == torch.long
    assert nxt.tolist() == [[6, 7, -1], [9, -1, -1]]  # -1: the last token, and padding (position -1)
    agg = RowAggregate(res.rows, res.n_layers)
    assert add_result(agg, res) == 3
    assert agg.count("cross_entropy").tolist() == [3] * res.n_rows
    empty = RowAggregate(res.rows, res.n_layers)
    assert add_result(empty, lens.run([[5]], top_k=1)) == 0 and empty.metrics == []


# ---- several ranks (simulated in one process, rank by rank) --------------------------------------------
def _as_ranks(monkeypatch, lens, data, world, **kwargs):
    """``evaluate`` on each of ``world`` ranks: a first pass records what each rank puts into the one
    all-reduce, a second returns the sum of those to every rank. Returns (tables, agreements, together)."""
    sent, agreed, named = {}, [], []

    class Stop(Exception):
        pass

    def run(rank, second):
        group = distributed.Group(rank=rank, world_size=world)

        @contextlib.contextmanager
        def together(what):
            named.append(what)
            yield group

        def all_sum(buf, what):
            assert what == "combining the evaluation sums"
            if not second:
                sent[rank] = np.array(buf)
                raise Stop
            return sum(sent.values())

        monkeypatch.setattr(distributed, "together", together)
        monkeypatch.setattr(distributed, "all_sum", all_sum)
        monkeypatch.setattr(distributed, "agree", lambda *a: agreed.append(a))
        return evaluate(lens, data, progress=False, **kwargs)

    for rank in range(world):
        with contextlib.suppress(Stop):
            run(rank, second=False)
    return [run(rank, second=True) for rank in range(world)], agreed, named, sent


def test_ranks_share_the_sequences_and_combine_to_the_single_process_table(lens, monkeypatch):
    ids = torch.randint(3, 300, (5, 6), generator=torch.Generator().manual_seed(2))
    whole = evaluate(lens, ids, progress=False)
    tables, agreed, named, sent = _as_ranks(monkeypatch, lens, ids, 2)
    assert set(named) == {"evaluate"}
    digest = agreed[0][1]
    assert len(digest) == 32 and all(a == ("the evaluation data", digest, agreed[0][2]) for a in agreed)
    assert agreed[0][2] == (
        "give every rank the same files (a path every node sees), --split, --seed, --seq-len and --tokens"
    )
    # each rank's slot: its own counts (3 and 2 sequences x 5 cells) and its seconds, last
    n_metrics, n_rows = 5, lens.n_layers + 1
    for rank, cells in ((0, 15), (1, 10)):
        buf = sent[rank]
        assert buf.shape == (2, n_metrics * 3 * n_rows + 1)
        assert not buf[1 - rank].any() and buf[rank, -1] > 0
        assert buf[rank, :n_rows].tolist() == [cells] * n_rows  # the first metric's counts
    for df in tables:
        assert df.attrs["ranks"] == 2 and df.attrs["sequences"] == 5 and df.attrs["tokens"] == 30
        assert df.attrs["seconds"] == max(sent[0][0, -1], sent[1][1, -1])
        assert df["tokens"].tolist() == whole["tokens"].tolist()
        for col in ("cross_entropy", "kl_to_final", "entropy", "agreement", "accuracy", "cross_entropy_se"):
            np.testing.assert_allclose(df[col], whole[col], rtol=1e-9, err_msg=col)
    assert "ranks" not in whole.attrs
    _, other, *_ = _as_ranks(monkeypatch, lens, ids[:4], 2)
    assert other[0][1] != digest  # the digest is of the data: other sequences, another digest


def test_fewer_sequences_than_ranks_is_refused(lens, monkeypatch):
    message = (
        "the data packs into 2 sequence(s), fewer than the 3 ranks: each rank needs at least one; use fewer "
        "ranks, more --tokens or a shorter --seq-len"
    )
    with pytest.raises(LogitLensError, match=f"^{re.escape(message)}$"):
        _as_ranks(monkeypatch, lens, [[5, 6], [7, 8]], 3)
    tables, *_ = _as_ranks(monkeypatch, lens, [[5, 6], [7, 8]], 2)  # as many as ranks: one each
    assert all((df["tokens"] == 2).all() for df in tables)
