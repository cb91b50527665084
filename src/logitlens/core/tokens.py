"""Readable token strings: byte-level BPE (``Ġ``, ``Ċ``), SentencePiece (``▁``), byte-fallback
(``<0x0A>``) pieces turned into the text they stand for, with whitespace made visible.

Visible whitespace: space -> ``␣``, newline -> ``↵``, tab -> ``⇥``, carriage return -> ``␍``, no-break
space -> ``⍽``.
Bytes that are not complete UTF-8 on their own are shown as ``\\xNN``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
# no-break spaces (U+00A0, U+202F) as ⍽: visible, and not mistaken for a plain space
_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍", "\u00a0": "⍽", "\u202f": "⍽"})


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in character -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def is_byte_level(pieces: list[str]) -> bool:
    """A vocabulary is byte-level BPE when its pieces use GPT-2's stand-ins for space / newline."""
    return any(p.startswith("Ġ") or p == "Ċ" for p in pieces if p)


def piece_bytes(piece: str, byte_level: bool) -> bytes:
    """The raw bytes a vocabulary piece stands for."""
    m = _BYTE_PIECE.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    if byte_level:
        dec = _byte_decoder()
        if all(ch in dec for ch in piece):
            return bytes(dec[ch] for ch in piece)
        return piece.encode("utf-8")  # added/special tokens are stored as plain text
    return piece.replace("▁", " ").encode("utf-8")


def readable(piece_or_bytes: str | bytes, byte_level: bool = False) -> str:
    """A token as a person reads it: real text, whitespace visible, broken UTF-8 escaped."""
    raw = piece_or_bytes if isinstance(piece_or_bytes, bytes) else piece_bytes(piece_or_bytes, byte_level)
    text = raw.decode("utf-8", errors="backslashreplace").translate(_VISIBLE)
    # Other white space (no-break space, ideographic space ...) and invisible format characters.
    # Control characters (backspace, escape ...) too: no font draws them and a terminal would act on them.
    text = "".join(
        f"\\u{ord(c):04x}" if c.isspace() or unicodedata.category(c) in ("Cf", "Cc") else c for c in text
    )
    return text or "∅"


class TokenNamer:
    """Readable strings for token ids of one tokenizer (or plain ``#id`` names without one)."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}
        self.byte_level = False
        if tokenizer is not None:
            try:
                sample = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), 2000))))
            except Exception:  # noqa: BLE001 - exotic tokenizers: fall back to decode()
                sample = []
            self.byte_level = is_byte_level([p for p in sample if isinstance(p, str)])

    def __call__(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id not in self._cache:
            self._cache[token_id] = self._name(token_id)
        return self._cache[token_id]

    def _name(self, token_id: int) -> str:
        tok = self.tokenizer
        if tok is None:
            return f"#{token_id}"
        piece = tok.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return f"#{token_id}"
        if piece in getattr(tok, "all_special_tokens", ()):
            return piece
        return readable(piece, self.byte_level)

    def many(self, ids) -> list[str]:
        return [self(i) for i in ids]


def visible(name: str) -> str:
    """A target name shown as tokens are: spaces as ␣, newlines as ↵, tabs as ⇥."""
    return name.translate(_VISIBLE)
