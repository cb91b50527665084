"""Readable tokens for byte-level BPE, SentencePiece and byte-fallback pieces."""

from __future__ import annotations

import pytest

from logitlens.core.tokens import TokenNamer, piece_bytes, readable
from logitlens.model.default_model import CACHE_ENV, cache_dir


@pytest.mark.parametrize(
    ("piece", "byte_level", "shown"),
    [
        ("ĠParis", True, "␣Paris"),
        ("Ċ", True, "↵"),
        ("ĉ", True, "⇥"),
        ("ĠĠ", True, "␣␣"),
        ("Ã©", True, "é"),
        ("âĢ", True, "\\xe2\\x80"),  # an incomplete UTF-8 sequence stays visible, escaped
        ("▁Paris", False, "␣Paris"),
        ("<0x0A>", False, "↵"),
        ("<0xE2>", False, "\\xe2"),
        ("<|endoftext|>", True, "<|endoftext|>"),
        ("\u00a0x", False, "⍽x"),  # no-break space: a visible mark
        ("<0x08>", False, "\\u0008"),  # a control character: escaped, never drawn or acted on
        ("", False, "∅"),
    ],
)
def test_readable(piece, byte_level, shown):
    assert readable(piece, byte_level) == shown


def test_piece_bytes_roundtrip():
    assert piece_bytes("Ġhello", True) == b" hello"
    assert piece_bytes("▁hi", False) == b" hi"


def test_namer_with_and_without_tokenizer(tokenizer):
    namer = TokenNamer(tokenizer)
    assert namer.byte_level
    ids = tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert "".join(namer.many(ids)) == "␣Paris"
    assert TokenNamer(None)(7) == "#7"


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "logitlens"
