"""Guards for ``evaluate`` (issue 20): ``tokens=`` takes exactly the sequences that cover it."""

from __future__ import annotations

import random

import pytest
import torch

from logitlens import Corpus, evaluate

T = 8


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 300, (5, T), generator=g)


@pytest.mark.parametrize(("tokens", "sequences"), [(2 * T, 2), (2 * T - 1, 2), (2 * T + 1, 3), (1, 1)])
@pytest.mark.parametrize("as_lists", [False, True])
def test_tokens_takes_the_sequences_that_cover_it(lens, ids, tokens, sequences, as_lists):
    data = ids.tolist() if as_lists else ids
    df = evaluate(lens, data, tokens=tokens, progress=False)
    assert df.attrs["sequences"] == sequences and df.attrs["tokens"] == sequences * T
    whole = evaluate(lens, ids[:sequences], progress=False)
    assert df["kl_to_final"].tolist() == pytest.approx(whole["kl_to_final"].tolist(), rel=1e-6)


def test_tokens_on_a_corpus(lens):
    rng = random.Random(0)
    words = ["Paris", "Rome", "city", "tower", "hello", "world", "one", "two", "lens", "final"]
    corpus = Corpus.from_texts([" ".join(rng.choice(words) for _ in range(40)) for _ in range(10)])
    df = evaluate(lens, corpus, tokens=2 * T, seq_len=T, split="all", progress=False)
    assert df.attrs["sequences"] == 2 and df.attrs["tokens"] == 2 * T
