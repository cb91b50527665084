"""Results written and read back: .json (version 2, and version 1 files written the old way) and .parquet
keep EVERY field; the long table of a large result is fast and holds the right values.

``assert_same_result`` compares two results field by field (every statistic NaN-aware, with its dtype
and shape, then positions, rows, names, tokens, ids, vocab, targets, prompts, prompt_index, meta); the
other test files use it too.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from logitlens import LensResult
from logitlens.core.rows import default_rows
from logitlens.core.stats import get_statistic

FIELDS = (
    "rows",
    "row_names",
    "tokens",
    "input_ids",
    "vocab",
    "target_names",
    "target_ids",
    "prompts",
    "prompt_index",
    "meta",
)
PROMPTS = [
    "The Eiffel Tower is in the city of",
    [5, 17, 200, 33],  # token ids: no text
    "résumé café naïve — 東京 🙂\n\tnew line and tab",
    "Hello",
]


def assert_same_result(a: LensResult, b: LensResult) -> None:
    """Every field of ``a`` equals ``b``'s: statistics exactly (NaN where NaN, same dtype and shape)."""
    assert sorted(a.stats) == sorted(b.stats)
    for name, x in a.stats.items():
        y = b.stats[name]
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}")
    assert a.positions.dtype == b.positions.dtype and torch.equal(a.positions, b.positions)
    for field in FIELDS:
        assert getattr(a, field) == getattr(b, field), field


@pytest.fixture(scope="module")
def results(lens) -> dict[str, LensResult]:
    """Results to round-trip: sub-block rows, targets (a set too), text and id prompts, padding columns."""
    targets = [" Paris", (" Rome", " Paris"), 7]
    full = lens.run(PROMPTS, top_k=4, targets=targets, include_subblocks=True)
    batch = next(lens.iter_run(PROMPTS, top_k=3, targets=targets, batch_size=2))  # prompts 2 and 0
    assert batch.prompt_index not in ([0, 1], [0, 2])
    last = lens.run(PROMPTS, top_k=2, positions=[0, -1])
    bare = lens.run(PROMPTS[:2], top_k=1)  # no targets: per-target statistics of width 0
    return {"run": full, "batch": batch, "positions": last, "bare": bare}


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
@pytest.mark.parametrize("case", ["run", "batch", "positions", "bare"])
def test_save_load_keeps_every_field(results, tmp_path, suffix, case):
    res = results[case]
    assert res.meta["lens"] == "logit" and res.meta["backend"] == "hooks"
    back = LensResult.load(res.save(tmp_path / f"r{suffix}"))
    assert_same_result(res, back)
    assert back.depths == res.depths


def test_json_is_version_2(results, tmp_path):
    data = json.loads(results["run"].save(tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["meta"]["format"] == "logitlens.result" and data["meta"]["version"] == 2
    assert [r["site"] for r in data["rows"]][:3] == ["embed", "attn", "resid"]


def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def version1_dict(res: LensResult) -> dict:
    """The file the previous release wrote: tensors as nested lists (null for NaN), no rows, no
    prompt_index, no final_probs."""
    data = {
        "meta": {"format": "logitlens.result", "version": 1, **res.meta},
        "row_names": res.row_names,
        "tokens": res.tokens,
        "input_ids": res.input_ids,
        "vocab": {str(k): v for k, v in sorted(res.vocab.items())},
        "target_names": res.target_names,
        "target_ids": res.target_ids,
        "prompts": res.prompts,
    }
    for name in ("top_ids", "top_probs", "entropy", "kl_to_final", "cross_entropy", "agrees_with_final",
                 "target_probs", "target_ranks", "positions"):  # fmt: skip
        data[name] = _nan_to_none(getattr(res, name).tolist())
    return data


def test_version_1_file_loads_with_every_field(lens, tmp_path):
    # top_k = the whole vocabulary: final_probs, which version 1 did not store, is then recoverable
    res = lens.run(PROMPTS, top_k=lens.decoder.vocab_size, targets=[" Paris", (" Rome", " Paris")])
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(version1_dict(res), ensure_ascii=False, allow_nan=False), encoding="utf-8")
    back = LensResult.load(path)
    assert torch.isnan(back.entropy).any()  # padding cells came back as NaN, not as 0 or None
    assert_same_result(res, back)


# ---- a large result ---------------------------------------------------------------------------------

N, LAYERS, P, K = 32, 30, 64, 5  # 32 prompts x 31 rows x 64 positions = 63,488 lines
TARGETS = [" Paris", " Rome"]


@pytest.fixture(scope="module")
def big() -> LensResult:
    """Built by hand from random tensors (no model)."""
    g = torch.Generator().manual_seed(0)
    rows = default_rows(LAYERS)
    n_rows, vocab = len(rows), 1000
    ids = torch.randint(0, vocab, (N, P), generator=g)
    shape = (N, n_rows, P)
    ce = torch.rand(shape, generator=g) * 8
    ce[:, :, -1] = math.nan  # after the last token
    stats = {
        "top_ids": torch.randint(0, vocab, (*shape, K), generator=g),
        "top_probs": torch.rand((*shape, K), generator=g).sort(-1, descending=True).values,
        "final_probs": torch.rand(shape, generator=g),
        "entropy": torch.rand(shape, generator=g) * 5,
        "kl_to_final": torch.rand(shape, generator=g) * 3,
        "cross_entropy": ce,
        "agrees_with_final": torch.rand(shape, generator=g) > 0.5,
        "target_probs": torch.rand((*shape, len(TARGETS)), generator=g),
        "target_ranks": torch.randint(1, vocab, (*shape, len(TARGETS)), generator=g),
    }
    return LensResult(
        stats=stats,
        positions=torch.arange(P).repeat(N, 1),
        rows=rows,
        row_names=[r.name for r in rows],
        tokens=[[f"t{i}" for i in seq] for seq in ids.tolist()],
        input_ids=ids.tolist(),
        vocab={i: f"t{i}" for i in range(vocab)},
        target_names=TARGETS,
        target_ids=[[5], [6, 7]],
        prompts=[f"prompt {i}" for i in range(N)],
        prompt_index=list(range(N))[::-1],
        meta={"model": "hand-made", "n_layers": LAYERS, "lens": "logit"},
    )


def _timed(fn, tries: int = 2) -> float:
    """The best of a few runs (imports already warm), in seconds."""
    best = math.inf
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_big_dataframe_is_fast_and_right(big):
    import pandas  # imports are not what is timed
    import pyarrow  # noqa: F401

    out = {}
    seconds = _timed(lambda: out.update(df=big.to_dataframe()))
    df = out["df"]
    print(f"to_dataframe of {len(df):,} lines: {seconds:.3f} s")
    assert len(df) == N * (LAYERS + 1) * P == 63_488
    assert seconds < 1.0
    n_rows = LAYERS + 1
    g = torch.Generator().manual_seed(1)
    cells = torch.stack([torch.randint(0, n, (40,), generator=g) for n in (N, n_rows, P)], 1).tolist()
    cells += [[0, 0, 0], [N - 1, n_rows - 1, P - 1]]
    for i, r, j in cells:
        k = (i * P + j) * n_rows + r  # prompt-major, then column, then row
        line = {name: df[name].iat[k] for name in df.columns}
        ids = big.input_ids[i]
        assert line["prompt_index"] == big.prompt_index[i] and line["prompt"] == big.prompts[i]
        assert (line["row"], line["row_name"]) == (r, big.row_names[r])
        assert line["column"] == j and line["position"] == j
        assert line["layer"] == big.rows[r].layer and line["site"] == big.rows[r].site
        assert math.isclose(line["depth"], big.depths[r], rel_tol=1e-6)
        assert line["token_id"] == ids[j] and line["token"] == big.tokens[i][j]
        assert line["next_token_id"] == (ids[j + 1] if j + 1 < P else -1)
        if j + 1 < P:
            assert line["next_token"] == big.vocab[ids[j + 1]]
        else:  # none after the last token (pandas shows a missing string as NaN)
            assert pandas.isna(line["next_token"])
        assert line["top1"] == big.token(big.top_ids[i, r, j, 0])
        assert line["top1_prob"] == big.top_probs[i, r, j, 0].item()
        assert list(line["top_ids"]) == big.top_ids[i, r, j].tolist()
        assert np.allclose(line["top_probs"], big.top_probs[i, r, j].numpy(), rtol=0, atol=0)
        assert list(line["top_tokens"]) == [big.token(t) for t in big.top_ids[i, r, j].tolist()]
        for name in ("final_probs", "entropy", "kl_to_final", "cross_entropy"):
            want = big.stats[name][i, r, j].item()
            assert line[name] == want or (math.isnan(line[name]) and math.isnan(want)), name
        assert bool(line["agrees_with_final"]) == bool(big.agrees_with_final[i, r, j])
        for t, target in enumerate(TARGETS):
            for name in ("target_probs", "target_ranks"):
                want = big.stats[name][i, r, j, t].item()
                assert line[get_statistic(name).column_for(target)] == want, (name, target)


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_big_save_is_fast_and_loads_back(big, tmp_path, suffix):
    big.save(tmp_path / f"warm{suffix}")  # imports and first-use costs are not what is timed
    seconds = _timed(lambda: big.save(tmp_path / f"r{suffix}"))
    print(f"save({suffix}) of {N} x {LAYERS + 1} x {P}: {seconds:.3f} s")
    assert seconds < 1.0
    assert_same_result(big, LensResult.load(tmp_path / f"r{suffix}"))
