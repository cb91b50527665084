"""Small word corpora for the training and evaluation tests: random texts over a fixed vocabulary."""

from __future__ import annotations

import random

WORDS = [
    "The",
    "Eiffel",
    "Tower",
    "is",
    "in",
    "the",
    "city",
    "of",
    "Paris",
    ".",
    "Colosseum",
    "Rome",
    "Hello",
    "world",
    ",",
    "hello",
    "logit",
    "lens",
    "!",
]


def word_texts(n: int, words: int, seed: int = 0, vocabulary: list[str] = WORDS) -> list[str]:
    """``n`` texts of ``words`` words each, drawn from ``vocabulary`` with ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(n)]
