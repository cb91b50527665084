"""Corpora: every source format, the built-in sample, the split of whole documents, packing, and every
bad-input message (one line, saying where and how to fix it)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from logitlens import LogitLensError
from logitlens.tasks.data import Corpus, pack, read_documents, split_documents

DOCS = [f"Document number {i} talks about topic {i % 7} at some length." for i in range(40)]


# ---- sources ------------------------------------------------------------------------------------------
def test_sample_corpus_is_the_standard_library_topics():
    from pydoc_data.topics import topics

    corpus = Corpus.read("sample")
    assert len(corpus) == len([t for t in topics.values() if t.strip()]) >= 50
    assert corpus.documents[0] == topics[sorted(topics)[0]]
    assert Corpus.read(["sample"]).documents == corpus.documents  # deterministic


def test_text_file_is_one_document_or_one_per_line(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("first line\n\n  \nsecond line\nthird\n", encoding="utf-8")
    assert read_documents(path) == ["first line\n\n  \nsecond line\nthird\n"]
    assert read_documents(path, lines=True) == ["first line", "second line", "third"]


def test_jsonl_csv_parquet_and_several_sources(tmp_path):
    import pandas as pd

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "alpha", "id": 1}\n\n{"text": "beta"}\n{"text": null}\n', encoding="utf-8")
    csv = tmp_path / "b.csv"
    pd.DataFrame({"body": ['gamma, with "quotes"', "delta\nover two lines"], "n": [1, 2]}).to_csv(
        csv, index=False
    )
    parquet = tmp_path / "c.parquet"
    pd.DataFrame({"text": ["epsilon", "zeta"]}).to_parquet(parquet)
    assert read_documents(jsonl) == ["alpha", "beta"]
    assert read_documents(csv, field="body") == ['gamma, with "quotes"', "delta\nover two lines"]
    assert read_documents([jsonl, parquet]) == ["alpha", "beta", "epsilon", "zeta"]
    corpus = Corpus.read([jsonl, parquet])
    assert corpus.name == f"{jsonl} + {parquet}" and len(corpus) == 4


def test_datasets_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets", reason="needs datasets (dev extra; make test installs it)")
    ds = datasets.Dataset.from_dict({"text": ["one", "two", "three"], "label": [0, 1, 0]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert read_documents(tmp_path / "ds") == ["one", "two", "three"]
    dd = datasets.DatasetDict(
        {"train": ds, "test": datasets.Dataset.from_dict({"text": ["four"], "label": [1]})}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert read_documents(tmp_path / "dd") == ["one", "two", "three", "four"]
    with pytest.raises(LogitLensError, match="has no column 'body' \\(its columns: text, label\\)"):
        read_documents(tmp_path / "ds", field="body")


# ---- split --------------------------------------------------------------------------------------------
def test_split_is_deterministic_whole_documents_and_order_free():
    val = split_documents(DOCS, "validation", seed=3)
    train = split_documents(DOCS, "train", seed=3)
    assert val == split_documents(DOCS, "validation", seed=3) and train == split_documents(
        DOCS, "train", seed=3
    )
    assert len(val) == 4 and len(train) == 36  # 10 % of the documents
    assert sorted(val + train) == sorted(DOCS)  # every document, whole, in exactly one split
    assert not set(val) & set(train)
    shuffled = DOCS[:]
    random.Random(0).shuffle(shuffled)
    assert split_documents(shuffled, "validation", seed=3) == val  # depends on the texts, not their order
    assert split_documents(DOCS, "validation", seed=4) != val
    assert split_documents(DOCS, "all") == DOCS


def test_split_keeps_duplicates_together_and_small_corpora_usable():
    docs = ["same text"] * 3 + [f"other {i}" for i in range(7)]
    for seed in range(20):
        val, train = split_documents(docs, "validation", seed=seed), split_documents(docs, "train", seed=seed)
        assert not ("same text" in val and "same text" in train)
    assert split_documents(["only one"], "validation") == ["only one"]  # eval works on one file
    assert (
        split_documents(["a", "b"], "validation", seed=0) != [] and split_documents(["a", "b"], "train") != []
    )


def test_corpus_split_names_the_split():
    corpus = Corpus.from_texts(DOCS, "docs").split("train", seed=1)
    assert corpus.split_name == "train" and len(corpus) == 36


# ---- packing ------------------------------------------------------------------------------------------
def test_pack_layout_bos_and_separators():
    docs = [[1, 2, 3], [], [4, 5], [6, 7, 8, 9]]
    out = pack(docs, 4, bos_id=0, sep_id=99)
    # stream 1 2 3 99 4 5 99 6 7 8 9 99 -> pieces of 3 after the BOS; the last partial piece is dropped
    assert out.tolist() == [[0, 1, 2, 3], [0, 99, 4, 5], [0, 99, 6, 7], [0, 8, 9, 99]]
    assert pack(docs, 4).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # no BOS, no separator
    assert pack(docs, 4, bos_id=0, sep_id=99, max_sequences=2).tolist() == out[:2].tolist()
    assert pack([[1, 2]], 8).shape == (0, 8)


def test_sequences_follow_the_tokenizer(tokenizer):
    corpus = Corpus.from_texts(DOCS)
    seqs = corpus.sequences(tokenizer, 16)
    stream = []
    for d in DOCS:
        stream += tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.bos_token_id is None  # the test tokenizer has no BOS: sequences are plain slices
    n = len(stream) // 16
    assert seqs.dtype == torch.long and seqs.tolist() == [stream[i * 16 : (i + 1) * 16] for i in range(n)]
    assert torch.equal(corpus.sequences(tokenizer, 16), seqs)  # deterministic
    assert corpus.sequences(tokenizer, 16, max_sequences=3).tolist() == seqs[:3].tolist()


def test_sequences_start_with_bos_where_the_tokenizer_has_one(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.bos_token = "<|endoftext|>"
    seqs = Corpus.from_texts(DOCS).sequences(tok, 8)
    assert (seqs[:, 0] == tok.bos_token_id).all()


# ---- bad input ----------------------------------------------------------------------------------------
def _write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("empty.txt", "", {}, "the corpus is empty: '{path}' hold(s) no text"),
        ("blank.txt", "\n  \n", {"lines": True}, "the corpus is empty"),
        ("latin1.txt", b"caf\xe9", {}, "is not UTF-8 text (byte 0xe9 at offset 3); convert it to UTF-8"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', {}, "'{path}' line 2 is not JSON (Expecting value"),
        (
            "nofield.jsonl",
            '{"text": "ok"}\n\n{"body": "x", "id": 3}\n',
            {},
            "'{path}' line 3 has no field 'text' (its fields: body, id); name the text field with --field",
        ),
        ("list.jsonl", "[1, 2]\n", {}, "'{path}' line 1 is a JSON list, not an object"),
        ("num.jsonl", '{"text": 5}\n', {}, "line 1: field 'text' is a JSON int, not a string"),
        (
            "nocol.csv",
            "a,b\n1,2\n",
            {},
            "'{path}' has no column 'text' (its columns: a, b); name the text column",
        ),
    ],
)
def test_bad_corpus_files(tmp_path, name, content, kwargs, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(LogitLensError) as err:
        Corpus.read(path, **kwargs)
    text = str(err.value)
    assert message.format(path=path) in text and "\n" not in text


def test_bad_sources(tmp_path):
    import pandas as pd

    with pytest.raises(
        LogitLensError, match="cannot read corpus file '.*missing.txt': No such file or directory"
    ):
        Corpus.read(tmp_path / "missing.txt")
    with pytest.raises(LogitLensError, match="no corpus given: pass --data PATH"):
        Corpus.read([])
    (tmp_path / "folder").mkdir()
    with pytest.raises(LogitLensError, match="is a folder but not one written by datasets' save_to_disk"):
        Corpus.read(tmp_path / "folder")
    pd.DataFrame({"n": [1]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(LogitLensError, match="has no column 'text' \\(its columns: n\\)"):
        Corpus.read(tmp_path / "n.parquet")
    with pytest.raises(LogitLensError, match="column 'n' holds int64, not text"):
        Corpus.read(tmp_path / "n.parquet", field="n")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(LogitLensError, match="is not a readable Parquet file"):
        Corpus.read(tmp_path / "junk.parquet")


def test_corpus_shorter_than_one_sequence(tokenizer):
    with pytest.raises(LogitLensError) as err:
        Corpus.from_texts(["a few words"], "tiny.txt").split("validation").sequences(tokenizer, 512)
    text = str(err.value)
    assert text.startswith("the corpus is shorter than one sequence: the validation split of 'tiny.txt' has ")
    assert "a sequence needs 512; lower --seq-len, add text, or use --split all" in text


def test_split_errors():
    with pytest.raises(
        LogitLensError, match="the train split of 'one.txt' is empty: the corpus has 1 document"
    ):
        Corpus.from_texts(["just one document"], "one.txt").split("train")
    with pytest.raises(LogitLensError, match="unknown split 'test'; choose one of: validation, train, all"):
        split_documents(DOCS, "test")
    with pytest.raises(LogitLensError, match="must be an integer of at least 2"):
        pack([[1, 2, 3]], 1)
    with pytest.raises(LogitLensError, match="a text corpus needs a tokenizer"):
        Corpus.from_texts(DOCS).sequences(None, 8)
    with pytest.raises(LogitLensError, match="the corpus 'texts' is empty"):
        Corpus.from_texts(["", "  "])


def test_jsonl_error_names_the_line_even_after_blank_lines(tmp_path):
    lines = [json.dumps({"text": f"t{i}"}) for i in range(5)] + ["", "{broken"]
    path = _write(tmp_path, "x.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(LogitLensError, match="line 7 is not JSON"):
        read_documents(path)
