"""Guards for concepts (issue 20): one-letter words are concepts too, and ``.skipped`` lists only tokens
that no variant contributed."""

from __future__ import annotations

import pytest

from logitlens import concept


def _first(lens, text: str) -> int:
    return lens.tokenizer(text, add_special_tokens=False)["input_ids"][0]


@pytest.mark.parametrize("word", ["I", "a"])
def test_one_letter_words_are_taken(lens, word):
    c = concept(lens, [word])
    assert _first(lens, word) in c.ids
    assert {t.variant for t in c.tokens} >= {word}
    assert all(s.reason.startswith("only whitespace") for s in c.skipped)


def test_skipped_leaves_out_a_token_taken_through_another_variant(lens):
    """ "paris" starts with the lone letter "p" (skipped for it), but the word "p" takes that token."""
    p = _first(lens, "p")
    alone = concept(lens, ["Paris"])
    assert p not in alone.ids and p in [s.id for s in alone.skipped]  # the setting this test needs
    both = concept(lens, ["Paris", "p"])
    assert p in both.ids
    assert p not in [s.id for s in both.skipped]
    assert all(s.id not in both.ids for s in both.skipped)
    assert "p of 'paris'" not in both.line()
