"""Guards for streamed runs (issue 20): resume refuses another model (name or dtype), accuracy counts
token id 0 as a next token, and later batches' top tokens read back with their text."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from logitlens import LensResult, LogitLens, LogitLensError
from logitlens.tasks.stream import aggregate_table, stream

PROMPTS = ["Paris Rome", "hello world the", "one two three four", "lens final city"]


@pytest.fixture(scope="module")
def finished(lens, tmp_path_factory):
    path = tmp_path_factory.mktemp("guards") / "done.parquet"
    stream(lens, PROMPTS, path, progress=False, top_k=2, batch_size=2)
    return path


def test_resume_refuses_a_model_of_another_name(lens, finished):
    other = LogitLens(lens.model, lens.tokenizer, name="another-model")
    with pytest.raises(LogitLensError, match="model name='tiny-llama', now model name='another-model'"):
        stream(other, PROMPTS, finished, resume=True, progress=False, top_k=2, batch_size=2)
    again = stream(lens, PROMPTS, finished, resume=True, progress=False, top_k=2, batch_size=2)
    assert again.attrs["resumed"] == len(PROMPTS)  # the same model: accepted


def test_resume_refuses_a_model_in_another_dtype(lens, finished):
    wide = LogitLens(copy.deepcopy(lens.model).double(), lens.tokenizer, name=lens.name)
    with pytest.raises(LogitLensError, match="model dtype='float32', now model dtype='float64'"):
        stream(wide, PROMPTS, finished, resume=True, progress=False, top_k=2, batch_size=2)


def test_accuracy_counts_next_token_id_zero(lens, tmp_path):
    """Token id 0 (here the tokenizer's end-of-text) is a real next token, not a missing one (-1)."""
    prompts = [[5, 0], [7, 0, 0, 9, 11], [0, 3, 0]]
    path = tmp_path / "zero.parquet"
    agg = stream(lens, prompts, path, progress=False, top_k=1)
    res = lens.run(prompts, top_k=1)
    hits, cells = np.zeros(res.n_rows), 0
    for b, ids in enumerate(prompts):
        for j in range(len(ids) - 1):  # positions with a next token
            col = res.columns(b)[j]
            hits += (res.top_ids[b, :, col, 0] == ids[j + 1]).numpy()
            cells += 1
    want = hits / cells
    assert np.isfinite(agg["accuracy"]).all()
    np.testing.assert_allclose(agg["accuracy"].to_numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(aggregate_table(path)["accuracy"].to_numpy(), want, rtol=1e-9)
    # the same prompts with only id 0 as next tokens: accuracy exists (0 or 1 per cell), never NaN
    only_zero = stream(lens, [[5, 0]], tmp_path / "only.parquet", progress=False, top_k=1)
    assert np.isfinite(only_zero["accuracy"]).all()


def test_later_batches_top_tokens_read_back_with_their_text(lens, tmp_path):
    """One prompt per batch, each in its own words: the joined file's header holds every part's vocab."""
    prompts = ["Paris Paris Paris", "one two three four five", "résumé café naïve", "logit lens decode"]
    path = tmp_path / "vocab.parquet"
    stream(lens, prompts, path, progress=False, top_k=5, batch_size=1)
    back = LensResult.load(path)
    for i, prompt in enumerate(prompts):
        ref = lens.run([prompt], top_k=5)
        got = back.select([back.prompt_index.index(i)])
        ids = sorted(set(ref.top_ids.flatten().tolist()))
        assert [got.token(t) for t in ids] == [ref.token(t) for t in ids], prompt
        assert got.tokens == ref.tokens
    table = back.to_dataframe()
    assert not table["top1"].str.match(r"^#\d+$").any()
