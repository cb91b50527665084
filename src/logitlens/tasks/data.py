"""Corpora for corpus runs: read documents, split whole documents into train/validation, pack the tokens
into sequences of a fixed length.

Sources (``Corpus.read``; several are read in the order given):
- ``"sample"``: the built-in sample, the text of the standard library's ``pydoc_data/topics.py`` (one
  document per help topic, 79 of them in CPython 3.11, about 470,000 characters). Every Python
  installation carries it, so examples and tests need no download.
- a plain text file (UTF-8): the file is one document; ``lines=True`` makes each non-blank line one;
- ``.jsonl`` / ``.ndjson``: one JSON object per line with the text in ``field`` (default ``"text"``);
- ``.csv`` / ``.parquet``: the text column ``field``;
- a folder written by Hugging Face ``datasets``' ``save_to_disk`` (a Dataset, or a DatasetDict whose
  splits are read in the order of its ``dataset_dict.json``): the column ``field``. The Arrow files are
  read with pyarrow; ``datasets`` itself is not needed.

Split (``Corpus.split``): whole documents go to "validation" or "train", never part of one to each.
Each document gets a key from a keyed hash (BLAKE2b) of the seed and its text; documents sorted by key,
the first ``round(validation_fraction * n)`` (at least 1, and fewer than n when n > 1) are the
validation split and the rest the train split, both in key order. The split depends only on the seed and
the documents' texts: not on the order of the sources, not on ``PYTHONHASHSEED``, not on the machine, and
a text that occurs twice lands in one split. "all" keeps every document in its corpus order.

Packing (``Corpus.sequences`` / ``pack``): each document is tokenised without special tokens and followed
by the tokenizer's EOS token (where it has one); the stream of tokens is cut into sequences of
``seq_len`` tokens, each starting with the BOS token where the tokenizer has one (then ``seq_len - 1``
tokens of the stream). A final partial sequence is dropped. Documents are tokenised only as far as the
sequences asked for need.

Every bad input raises ``LogitLensError`` with one line that says what and where (file, line) and how to
fix it.

Example:
    >>> corpus = Corpus.read(["sample"]).split("validation", seed=0)
    >>> ids = corpus.sequences(lens.tokenizer, seq_len=256, max_sequences=64)  # (64, 256) LongTensor
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from logitlens.errors import LogitLensError

if TYPE_CHECKING:  # torch is imported where it is used: importing this module stays light
    import torch

__all__ = ["SAMPLE", "SPLITS", "Corpus", "pack", "read_documents", "split_documents"]

SAMPLE = "sample"  # the name of the built-in corpus
SPLITS = ("validation", "train", "all")
VALIDATION_FRACTION = 0.1  # share of documents in the validation split
_JSONL = (".jsonl", ".ndjson")
_TOKENIZE_CHUNK = 32  # documents tokenised per call


@dataclass(frozen=True)
class Corpus:
    """Documents (texts) in memory, with a name for messages ("sample", "a.txt + b.jsonl [validation]").

    Attributes:
        documents: the texts, one per document.
        name: what messages and tables call it.
        split_name: "all", "train" or "validation".

    Example:
        >>> corpus = Corpus.read("sample")                       # or files: Corpus.read(["a.txt", "b.jsonl"])
        >>> validation = corpus.split("validation", seed=0)      # "train", "validation" or "all"
        >>> logitlens.evaluate(lens, Corpus.from_texts(["One text.", "Another one."]))
    """

    documents: tuple[str, ...]
    name: str = "corpus"
    split_name: str = "all"

    @classmethod
    def read(
        cls,
        sources: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        lines: bool = False,
        field: str = "text",
    ) -> Corpus:
        """Read one or several sources (see the module docstring); refuses a corpus with no text."""
        docs = read_documents(sources, lines=lines, field=field)
        names = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
        return cls(tuple(docs), " + ".join(str(s) for s in names))

    @classmethod
    def from_texts(cls, texts: Iterable[str], name: str = "texts") -> Corpus:
        """A corpus of texts already in memory, one document each (blank ones are dropped)."""
        docs = tuple(t for t in texts if isinstance(t, str) and t.strip())
        if not docs:
            raise LogitLensError(f"the corpus '{name}' is empty: give at least one non-blank text")
        return cls(docs, name)

    def __len__(self) -> int:
        return len(self.documents)

    def split(
        self, which: str = "validation", *, seed: int = 0, validation_fraction: float = VALIDATION_FRACTION
    ) -> Corpus:
        """The documents of one split: "validation", "train" or "all" (see the module docstring)."""
        docs = split_documents(self.documents, which, seed=seed, validation_fraction=validation_fraction)
        if not docs:
            raise LogitLensError(
                f"the {which} split of '{self.name}' is empty: the corpus has {len(self)} document(s) "
                "(a plain text file is one document); pass --lines to make each line one, add documents, "
                "or use --split all"
            )
        return Corpus(tuple(docs), self.name, which)

    def sequences(self, tokenizer, seq_len: int, *, max_sequences: int | None = None) -> torch.Tensor:
        """Tokenise and pack into (n, seq_len) token ids (n <= max_sequences); refuses fewer than one."""
        if tokenizer is None:
            raise LogitLensError("a text corpus needs a tokenizer: LogitLens(model, tokenizer)")
        bos, eos = _special_id(tokenizer, "bos_token_id"), _special_id(tokenizer, "eos_token_id")
        counted: list[int] = []  # tokens of the stream seen, for the error message
        docs = _count(_tokenize(tokenizer, self.documents), counted)
        out = pack(docs, seq_len, bos_id=bos, sep_id=eos, max_sequences=max_sequences)
        if out.shape[0] == 0:
            where = self.name if self.split_name == "all" else f"the {self.split_name} split of '{self.name}'"
            raise LogitLensError(
                f"the corpus is shorter than one sequence: {where} has {sum(counted)} tokens in "
                f"{len(self)} document(s), a sequence needs {seq_len}; lower --seq-len, add text, "
                "or use --split all"
            )
        return out


# ---- reading ------------------------------------------------------------------------------------------
def read_documents(
    sources: str | os.PathLike | Sequence[str | os.PathLike], *, lines: bool = False, field: str = "text"
) -> list[str]:
    """The non-blank documents of every source, in order (see the module docstring for the formats)."""
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise LogitLensError(
            "no corpus given: pass --data PATH (a text, JSONL, CSV or Parquet file) or --data sample"
        )
    docs: list[str] = []
    for src in sources:
        docs.extend(d for d in _read_source(src, lines=lines, field=field) if d.strip())
    if not docs:
        names = ", ".join(f"'{s}'" for s in sources)
        raise LogitLensError(f"the corpus is empty: {names} hold(s) no text; give files with some text")
    return docs


def _read_source(src: str | os.PathLike, *, lines: bool, field: str) -> Iterator[str]:
    if str(src) == SAMPLE and not Path(SAMPLE).exists():
        yield from _sample()
        return
    path = Path(src)
    if path.is_dir():
        yield from _read_saved_dataset(path, field)
        return
    suffix = path.suffix.lower()
    if suffix in _JSONL:
        yield from _read_jsonl(path, field)
    elif suffix == ".csv":
        yield from _read_csv(path, field)
    elif suffix == ".parquet":
        yield from _read_parquet(path, field)
    else:
        text = _read_text(path)
        yield from (text.splitlines() if lines else [text])


def _sample() -> list[str]:
    """The built-in sample: the help topics of the standard library's pydoc_data/topics.py, by name."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise LogitLensError(
            "the built-in sample corpus needs the standard library's pydoc_data, which this Python "
            "installation lacks; give --data with a file of your own"
        ) from None
    return [topics[name] for name in sorted(topics)]


def _open_error(path: Path, exc: OSError) -> LogitLensError:
    reason = exc.strerror or type(exc).__name__
    return LogitLensError(f"cannot read corpus file '{path}': {reason}; check the path and its permissions")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _open_error(path, exc) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LogitLensError(
            f"corpus file '{path}' is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "convert it to UTF-8"
        ) from None


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    text = _read_text(path)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LogitLensError(
                f"'{path}' line {n} is not JSON ({exc.msg} at column {exc.colno}); each line must be one "
                f'object such as {{"{field}": "..."}}'
            ) from None
        if not isinstance(obj, dict):
            raise LogitLensError(
                f"'{path}' line {n} is a JSON {type(obj).__name__}, not an object; each line must be one "
                f'object such as {{"{field}": "..."}}'
            )
        if field not in obj:
            have = ", ".join(map(str, obj)) or "none"
            raise LogitLensError(
                f"'{path}' line {n} has no field '{field}' (its fields: {have}); name the text field with --field"
            )
        value = obj[field]
        if value is None:
            continue
        if not isinstance(value, str):
            raise LogitLensError(
                f"'{path}' line {n}: field '{field}' is a JSON {type(value).__name__}, not a string; "
                "name the text field with --field"
            )
        yield value


def _missing_column(path: Path, field: str, columns: Sequence[str]) -> LogitLensError:
    have = ", ".join(map(str, columns)) or "none"
    return LogitLensError(
        f"'{path}' has no column '{field}' (its columns: {have}); name the text column with --field"
    )


def _check_text_type(path: Path, field: str, arrow_type) -> None:
    import pyarrow as pa

    if not (
        pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_null(arrow_type)
    ):
        raise LogitLensError(
            f"'{path}': column '{field}' holds {arrow_type}, not text; name the text column with --field"
        )


def _read_csv(path: Path, field: str) -> Iterator[str]:
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8")
        if field not in header.columns:
            raise _missing_column(path, field, list(header.columns))
        frame = pd.read_csv(path, usecols=[field], dtype=str, keep_default_na=False, encoding="utf-8")
    except OSError as exc:
        raise _open_error(path, exc) from None
    except UnicodeDecodeError:
        raise LogitLensError(f"corpus file '{path}' is not UTF-8 text; convert it to UTF-8") from None
    except pd.errors.EmptyDataError:
        return
    except pd.errors.ParserError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise LogitLensError(f"'{path}' is not a valid CSV file ({first}); check its quoting") from None
    yield from frame[field].tolist()


def _read_parquet(path: Path, field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except OSError as exc:
        raise _open_error(path, exc) from None
    except (pa.ArrowInvalid, ValueError) as exc:
        raise LogitLensError(f"'{path}' is not a readable Parquet file ({exc}); check the file") from None
    schema = pf.schema_arrow
    if field not in schema.names:
        raise _missing_column(path, field, schema.names)
    _check_text_type(path, field, schema.field(field).type)
    for batch in pf.iter_batches(columns=[field]):
        yield from (v for v in batch.column(0).to_pylist() if v is not None)


def _read_saved_dataset(path: Path, field: str) -> Iterator[str]:
    """A ``datasets`` ``save_to_disk`` folder: a Dataset (state.json) or a DatasetDict (dataset_dict.json)."""
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            raise LogitLensError(
                f"'{path}/dataset_dict.json' is damaged; save the dataset again with save_to_disk"
            ) from None
        for split in splits:
            yield from _read_saved_dataset(path / split, field)
        return
    if not (path / "state.json").is_file():
        raise LogitLensError(
            f"'{path}' is a folder but not one written by datasets' save_to_disk (it has no state.json or "
            "dataset_dict.json); give a text, JSONL, CSV or Parquet file, or such a folder"
        )
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise LogitLensError(
            f"'{path}/state.json' is damaged; save the dataset again with save_to_disk"
        ) from None
    import pyarrow as pa

    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                reader = pa.ipc.open_stream(source)
                if field not in reader.schema.names:
                    raise _missing_column(path, field, reader.schema.names)
                _check_text_type(path, field, reader.schema.field(field).type)
                for batch in reader:
                    yield from (v for v in batch.column(field).to_pylist() if v is not None)
        except OSError as exc:
            raise _open_error(file, exc) from None
        except pa.ArrowInvalid as exc:
            raise LogitLensError(
                f"'{file}' is not a readable Arrow file ({exc}); save the dataset again"
            ) from None


# ---- split --------------------------------------------------------------------------------------------
def _key(seed: int, text: str) -> bytes:
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=16, key=str(int(seed)).encode("ascii"))
    return h.digest()


def split_documents(
    documents: Sequence[str], which: str, *, seed: int = 0, validation_fraction: float = VALIDATION_FRACTION
) -> list[str]:
    """Whole documents of one split (see the module docstring): deterministic in ``seed`` and the texts."""
    if which not in SPLITS:
        raise LogitLensError(f"unknown split {which!r}; choose one of: {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LogitLensError(f"the split seed must be an integer, got {seed!r}")
    if not 0.0 < validation_fraction < 1.0:
        raise LogitLensError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    if which == "all":
        return list(documents)
    n = len(documents)
    keys = [_key(seed, d) for d in documents]
    order = sorted(range(n), key=lambda i: (keys[i], i))
    n_val = min(max(1, round(validation_fraction * n)), max(1, n - 1)) if n else 0
    while 0 < n_val < n - 1 and keys[order[n_val]] == keys[order[n_val - 1]]:
        n_val += 1  # the same text twice: both copies in the validation split
    chosen = order[:n_val] if which == "validation" else order[n_val:]
    return [documents[i] for i in chosen]


# ---- packing ------------------------------------------------------------------------------------------
def _special_id(tokenizer, attr: str) -> int | None:
    value = getattr(tokenizer, attr, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tokenize(tokenizer, documents: Sequence[str]) -> Iterator[list[int]]:
    for start in range(0, len(documents), _TOKENIZE_CHUNK):
        chunk = list(documents[start : start + _TOKENIZE_CHUNK])
        yield from tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]


def _count(docs: Iterable[list[int]], counted: list[int]) -> Iterator[list[int]]:
    for d in docs:
        counted.append(len(d))
        yield d


def pack(
    documents: Iterable[Sequence[int]],
    seq_len: int,
    *,
    bos_id: int | None = None,
    sep_id: int | None = None,
    max_sequences: int | None = None,
) -> torch.Tensor:
    """Token-id documents -> (n, seq_len): the stream doc + [sep] + doc + [sep] ..., cut into pieces of
    ``seq_len`` (``seq_len - 1`` after a BOS). Stops reading documents once ``max_sequences`` are full;
    drops a final partial sequence. n may be 0."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise LogitLensError(f"seq_len (--seq-len) must be an integer of at least 2, got {seq_len!r}")
    if max_sequences is not None and max_sequences < 1:
        raise LogitLensError(f"the number of sequences must be at least 1, got {max_sequences}")
    body = seq_len - (1 if bos_id is not None else 0)  # stream tokens per sequence
    head = [bos_id] if bos_id is not None else []
    rows: list[list[int]] = []
    buf: list[int] = []
    for doc in documents:
        if not len(doc):
            continue
        buf.extend(int(t) for t in doc)
        if sep_id is not None:
            buf.append(sep_id)
        full = len(buf) // body
        take = full if max_sequences is None else min(full, max_sequences - len(rows))
        rows.extend(head + buf[i * body : (i + 1) * body] for i in range(take))
        buf = buf[full * body :]
        if max_sequences is not None and len(rows) >= max_sequences:
            break
    import torch

    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), seq_len)
