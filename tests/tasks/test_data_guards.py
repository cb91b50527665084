"""Guards for corpus reading (issue 20): a UTF-8 byte-order mark is not text, in every reader."""

from __future__ import annotations

import pytest

from logitlens import Corpus

BOM = "\ufeff"


@pytest.mark.parametrize(
    ("name", "body", "kwargs", "want"),
    [
        ("a.txt", "first doc\nsecond line\n", {}, ("first doc\nsecond line\n",)),
        ("b.txt", "first doc\nsecond line\n", {"lines": True}, ("first doc", "second line")),
        ("c.jsonl", '{"text": "first doc"}\n{"text": "two"}\n', {}, ("first doc", "two")),
        ("d.ndjson", '{"body": "first doc"}\n', {"field": "body"}, ("first doc",)),
        ("e.csv", "text,n\nfirst doc,1\ntwo,2\n", {}, ("first doc", "two")),
        ("f.csv", "n,text\n1,first doc\n", {}, ("first doc",)),
    ],
)
def test_a_byte_order_mark_is_dropped(tmp_path, name, body, kwargs, want):
    path = tmp_path / name
    path.write_bytes((BOM + body).encode("utf-8"))
    docs = Corpus.read(path, **kwargs).documents
    assert docs == want
    assert not any(BOM in d for d in docs)
    plain = tmp_path / ("plain-" + name)
    plain.write_bytes(body.encode("utf-8"))
    assert Corpus.read(plain, **kwargs).documents == docs  # the same as without the mark
