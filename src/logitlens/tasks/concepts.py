"""Concepts: one idea as a set of tokens, across spellings and languages, tracked like any target.

``concept(lens, ["Paris", "Parigi"])`` takes, for each word, its variants with and without a leading space
and with the first letter upper- and lower-cased (where the script has case), tokenises each variant alone
(no BOS or other special tokens) and keeps the FIRST token of each: a Target whose probability is the mass
summed over those tokens, its rank the rank of its best token (as for any token set of ``run``).

A first token is skipped, with the reason kept in ``.skipped``, when it would count mass that belongs to
unrelated words:
- a special token, or one outside the model's vocabulary;
- only whitespace (" ", SentencePiece's "▁"): the piece a leading space becomes when the word after it is
  split off;
- a byte fragment, not whole UTF-8 text (the first bytes of a character, shared by a whole script);
- a single letter of a script with case, when the word is longer ("M" of "Mountain").
Other first tokens can still be shared (``mon`` of "montagne"): look at ``.tokens`` (or ``describe()``).

Example:
    >>> paris = concept(lens, ["Paris", "Parigi"])
    >>> print(paris.describe())
    >>> res = lens.run("The Eiffel Tower is in", targets=[paris, " Paris"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from logitlens.core.tokens import TokenNamer, piece_bytes
from logitlens.engine.lens import Target
from logitlens.errors import LogitLensError

if TYPE_CHECKING:
    from logitlens.engine.lens import LogitLens

__all__ = ["Concept", "ConceptToken", "SkippedToken", "concept"]


class ConceptToken(NamedTuple):
    """One token of a concept: its readable text (␣ for a space), id, and the word and variant it came from."""

    token: str
    id: int
    word: str
    variant: str


class SkippedToken(NamedTuple):
    """A variant's first token that was not taken, and why."""

    token: str
    id: int
    word: str
    variant: str
    reason: str


@dataclass(frozen=True, repr=False)
class Concept(Target):
    """A token set built from words by ``concept``: pass it in ``targets=`` like any target.

    name, ids: as ``Target`` (the ids deduplicated, in the order found); words: the words given; tokens: one
    ``ConceptToken`` per id taken; skipped: the variants' first tokens left out, with the reason.
    """

    words: tuple[str, ...] = ()
    tokens: tuple[ConceptToken, ...] = ()
    skipped: tuple[SkippedToken, ...] = ()

    def line(self) -> str:
        """One line: the name, the tokens taken and, briefly, those skipped."""
        taken = ", ".join(t.token for t in self.tokens)
        text = f"concept {self.name}: {len(self.tokens)} token{'s' if len(self.tokens) != 1 else ''} {taken}"
        reasons: dict[str, list[str]] = {}
        for s in self.skipped:
            reasons.setdefault(s.reason, []).append(f"{s.token} of {s.variant!r}")
        for reason, which in reasons.items():
            text += f"; skipped {', '.join(which)}: {reason}"
        return text

    def describe(self) -> str:
        """Several lines: each token taken (id, word, variant), then each one skipped and why."""
        source = f" from {', '.join(map(repr, self.words))}" if self.words else ""
        lines = [f"concept {self.name}{source}: mass summed over {len(self.ids)} tokens"]
        width = max((len(t.token) for t in self.tokens), default=0)
        for t in self.tokens:
            lines.append(f"  {t.token:<{width}}  id {t.id:<7} from {t.word!r} as {t.variant!r}")
        for s in self.skipped:
            lines.append(f"  skipped {s.token} (id {s.id}) of {s.variant!r}: {s.reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        skipped = f", skipped {len(self.skipped)}" if self.skipped else ""
        taken = ", ".join(t.token for t in self.tokens)
        return f"Concept({self.name!r}, {len(self.tokens)} tokens: {taken}{skipped})"

    def __str__(self) -> str:
        return self.line()


def concept(lens: LogitLens, words: Sequence[str] | str, name: str | None = None) -> Concept:
    """A token set for ``words`` (one concept, e.g. in several languages), with ``lens``'s tokenizer.

    Each word's variants: as given, first letter upper-cased and lower-cased (scripts with case), each with
    and without a leading space; from each variant, the first token of its tokenisation alone. Duplicates are
    kept once; tokens shared with unrelated words (only a space, a byte fragment, a lone letter) are skipped
    (``.skipped`` says which and why). The ids belong to this lens's tokenizer: build the concept again for
    another model.

    Args:
        lens: the ``LogitLens`` whose tokenizer makes the tokens.
        words: one word or several (e.g. the same idea in several languages).
        name: the label in results and plots (default ``{w1,w2,...}``).

    Returns:
        A ``Concept`` (a ``Target``): its probability in results is the mass summed over its tokens, its
        rank that of its best token; ``.tokens`` lists (token, id, word, variant), ``describe()`` prints
        them.

    Raises:
        LogitLensError: a word left with no usable token, or a lens without a tokenizer.

    Example:
        >>> city = concept(lens, ["Paris", "Parigi"], name="paris")
        >>> res = lens.run(prompt, targets=[city, " Paris"])  # res.target_probs[..., 0]: the summed mass
    """
    words = _check_words(words)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise LogitLensError(f"a concept's name must be a non-empty string, got {name!r}")
    tok = lens.tokenizer
    if tok is None:
        raise LogitLensError("a concept needs the lens's tokenizer: LogitLens(model, tokenizer)")
    namer = TokenNamer(tok)
    special = set(getattr(tok, "all_special_ids", ()) or ())
    vocab = lens.decoder.vocab_size
    taken: dict[int, ConceptToken] = {}
    skipped: list[SkippedToken] = []
    for word in words:
        usable, passed = 0, []
        for variant in _variants(word):
            ids = [i for i in tok(variant, add_special_tokens=False)["input_ids"] if i not in special]
            if not ids:
                continue
            first = int(ids[0])
            reason = _unusable(first, variant, tok, namer, vocab)
            if reason is not None:
                passed.append(SkippedToken(namer(first), first, word, variant, reason))
                continue
            usable += 1
            taken.setdefault(first, ConceptToken(namer(first), first, word, variant))
        for s in passed:  # each token once
            if all(s.id != k.id for k in skipped):
                skipped.append(s)
        if not usable:
            why = "; ".join(f"{s.variant!r} starts with {s.token}: {s.reason}" for s in passed)
            raise LogitLensError(
                f"the word {word!r} gives no usable first token ({why or 'it tokenises to nothing'}); drop it "
                "or give another spelling"
            )
    label = name if name is not None else "{" + ",".join(words) + "}"
    tokens = tuple(taken.values())
    left_out = tuple(s for s in skipped if s.id not in taken)  # taken from another variant after all
    return Concept(label, tuple(t.id for t in tokens), tuple(words), tokens, left_out)


def _check_words(words) -> list[str]:
    """The words of a concept, stripped; one line for an empty list, a non-string or an empty word."""
    if isinstance(words, str):
        words = [words]
    if not isinstance(words, Sequence) or isinstance(words, bytes) or len(words) == 0:
        raise LogitLensError("a concept needs a list of words, such as ['Paris', 'Parigi']")
    out = []
    for i, w in enumerate(words):
        if not isinstance(w, str):
            raise LogitLensError(f"concept word {i + 1} is a {type(w).__name__}: give strings")
        if not w.strip():
            raise LogitLensError(f"concept word {i + 1} is empty: give a word such as 'Paris'")
        out.append(w.strip())
    return list(dict.fromkeys(out))


def _variants(word: str) -> list[str]:
    """With and without a leading space, for the word as given, Capitalised and lower-cased."""
    forms = [word]
    for first in (word[0].upper(), word[0].lower()):
        if len(first) == 1:  # "ß".upper() is "SS": not a first-letter change
            forms.append(first + word[1:])
    forms = list(dict.fromkeys(forms))
    return list(dict.fromkeys(v for f in forms for v in (" " + f, f)))


def _unusable(token_id: int, variant: str, tok, namer: TokenNamer, vocab: int) -> str | None:
    """Why a variant's first token would count unrelated words' mass (None: it is usable)."""
    if not 0 <= token_id < vocab:
        return f"outside the model's vocabulary (0..{vocab - 1})"
    piece = tok.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str):
        return "a token without text"
    raw = piece_bytes(piece, namer.byte_level)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "a byte fragment shared by other characters"
    core = text.strip()
    if not core:
        return "only whitespace, shared by every word after a space"
    rest = variant.strip()
    if len(core) == 1 and core.upper() != core.lower() and len(rest) > 1:
        return "a single letter, shared by every word that starts with it"
    return None
