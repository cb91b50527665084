"""Tests written from the mutation run of ``tasks/evaluation.py`` (scripts/mutate.py evaluation): the running
per-row means (``RowAggregate``) against numpy's mean and standard deviation of all values at once, over
batches, NaNs, empty rows, merged states and the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from logitlens.core.rows import Row
from logitlens.tasks.evaluation import RowAggregate

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
