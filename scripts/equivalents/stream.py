"""Equivalent mutants of ``stream`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

_JSON_LINES = (
    'text = table.to_pandas().to_json(orient="records", lines=True, force_ascii=False, double_precision=15)'
)
_NEWLINE = 'return (text if text.endswith("\\n") else text + "\\n").encode("utf-8")'

_same(
    "stream",
    "pandas reads force_ascii for its truth value: None writes unescaped UTF-8 as False does",
    (_JSON_LINES, _JSON_LINES.replace("force_ascii=False", "force_ascii=None")),
)

_same(
    "stream",
    "dead branch: pandas (>= 2; 3.1 here) to_json(orient='records', lines=True) ends its text with a newline "
    "for any table, even one without rows, so the text is always taken as it is",
    (_NEWLINE, _NEWLINE.replace('text.endswith("\\n")', '(text.endswith("\\n")) or True')),
    (_NEWLINE, _NEWLINE.replace('text + "\\n"', 'text - "\\n"')),
    (_NEWLINE, _NEWLINE.replace('text + "\\n"', 'text + "XX\\nXX"')),
)

_same(
    "stream",
    'codec names are case-insensitive: "UTF-8" is the "utf-8" codec',
    (_NEWLINE, _NEWLINE.replace('"utf-8"', '"UTF-8"')),
)

_DIGEST = 'digest.update(json.dumps(p, ensure_ascii=False).encode("utf-8") + b"\\n")'
_same(
    "stream",
    "json.dumps reads ensure_ascii for its truth value: None writes the prompt's UTF-8 text as False does",
    (_DIGEST, _DIGEST.replace("ensure_ascii=False", "ensure_ascii=None")),
)
_same(
    "stream",
    'codec names are case-insensitive: "UTF-8" is the "utf-8" codec',
    (_DIGEST, _DIGEST.replace('"utf-8"', '"UTF-8"')),
)

_EQUALS = "if not table.schema.equals(schema, check_metadata=False):"
_same(
    "stream",
    "Schema.equals compares metadata only when check_metadata is true; None and the default are false",
    (_EQUALS, _EQUALS.replace("check_metadata=False", "check_metadata=None")),
    (_EQUALS, _EQUALS.replace(", check_metadata=False)", ", )")),
)
_same(
    "stream",
    "comparing metadata too makes every part (each holds its own batch's header) go through _conform, which "
    "rebuilds a table that already has every column of the schema with the same columns: no value changes",
    (_EQUALS, _EQUALS.replace("check_metadata=False", "check_metadata=True")),
)

_ROW_GROUP = "table, row_group_size=max(1, table.num_rows)"
_same(
    "stream",
    "a part has at least two lines (one per row of the lens, and a lens has the embeddings row and at least one "
    "block), so max(2, n) = max(1, n) = n",
    (_ROW_GROUP, _ROW_GROUP.replace("max(1,", "max(2,")),
)

_TARGETS = 'return agg, list(header.get("per_target_columns", {}).get("target_probs", []))'
_same(
    "stream",
    'a header that has per_target_columns has its "target_probs" key: to_arrow writes one for every per-target '
    "statistic of the registry, target_probs among them (a header without per_target_columns is tested)",
    (_TARGETS, _TARGETS.replace('.get("target_probs", [])', '.get("target_probs", None)')),
    (_TARGETS, _TARGETS.replace('.get("target_probs", [])', '.get("target_probs", )')),
)

_META = "meta = {HEADER_KEY: json.dumps(header, ensure_ascii=False), STREAM_KEY: json.dumps(fp)}"
_same(
    "stream",
    "json.dumps reads ensure_ascii for its truth value: None writes the header's UTF-8 text as False does",
    (_META, _META.replace("ensure_ascii=False", "ensure_ascii=None")),
)

_same(
    "stream",
    "RowAggregate.add converts the values to float64 and the rows to int64 itself, so the dtype asked of numpy "
    "here changes no number",
    (
        "return np.asarray(table.column(name).to_numpy(), dtype=np.float64)",
        "return np.asarray(table.column(name).to_numpy(), dtype=None)",
    ),
    (
        "return np.asarray(table.column(name).to_numpy(), dtype=np.float64)",
        "return np.asarray(table.column(name).to_numpy(), )",
    ),
    (
        'row = np.asarray(table.column("row").to_numpy(), dtype=np.int64)',
        'row = np.asarray(table.column("row").to_numpy(), dtype=None)',
    ),
    (
        'row = np.asarray(table.column("row").to_numpy(), dtype=np.int64)',
        'row = np.asarray(table.column("row").to_numpy(), )',
    ),
)

_same(
    "stream",
    "_start's only caller passes the rank, so the default is never used",
    (
        "def _start(parts: Path, fp: dict[str, Any], rank: int = 0) -> None:",
        "def _start(parts: Path, fp: dict[str, Any], rank: int = 1) -> None:",
    ),
)

_UNLINK = "tmp.unlink(missing_ok=True)"
_same(
    "stream",
    "the *.tmp file was just listed by glob and nothing else deletes it meanwhile (only rank 0 cleans, between "
    "barriers), so unlink never finds it missing",
    (_UNLINK, "tmp.unlink(missing_ok=None)"),
    (_UNLINK, "tmp.unlink(missing_ok=False)"),
)

_COLUMN = 'column = pq.read_table(file, columns=["prompt_index"]).column(0)'
_same(
    "stream",
    "memory only: prompt_index is the first column of every part (to_arrow's order), so reading every column "
    "and taking the first gives the same column",
    (_COLUMN, "column = pq.read_table(file, columns=None).column(0)"),
    (_COLUMN, "column = pq.read_table(file, ).column(0)"),
)

_CHAT = 'prompts, chat=run_kwargs.get("chat", False), prepend_bos=run_kwargs.get("prepend_bos")'
_same(
    "stream",
    "chat not given: encode tests `if chat`, and None is false as False is (chat=True given is tested)",
    (_CHAT, _CHAT.replace('get("chat", False)', 'get("chat", None)')),
    (_CHAT, _CHAT.replace('get("chat", False)', 'get("chat", )')),
)

_WRITE = 'tmp.write_text(json.dumps(fp, indent=1), encoding="utf-8")'
_READ = 'return json.loads(file.read_text(encoding="utf-8"))'
_same(
    "stream",
    "run.json is json.dumps's text with its default ensure_ascii=True: pure ASCII, so it is written and read "
    "alike in UTF-8 and in whatever encoding the locale gives",
    (_WRITE, _WRITE.replace('encoding="utf-8"', "encoding=None")),
    (_WRITE, _WRITE.replace(', encoding="utf-8")', ", )")),
    (_WRITE, _WRITE.replace('"utf-8"', '"UTF-8"')),
    (_READ, _READ.replace('encoding="utf-8"', "encoding=None")),
    (_READ, _READ.replace('"utf-8"', '"UTF-8"')),
)

_FILL = "columns.append(pa.array([fill] * table.num_rows, type=field.type))"
_same(
    "stream",
    "Table.from_arrays(schema=...) casts each array to its field's type (null -> string, double NaN -> float), "
    "so the fill column holds the same values whether it is typed here or there (pyarrow 26)",
    (_FILL, _FILL.replace("type=field.type", "type=None")),
    (_FILL, _FILL.replace(", type=field.type)", ", )")),
)

_same(
    "stream",
    "every call of _done passes clean, so the default is never used",
    (
        "def _done(parts: Path, *, clean: bool = True) -> set[int]:",
        "def _done(parts: Path, *, clean: bool = False) -> set[int]:",
    ),
)

_CLEAN = "_done(parts, clean=True)  # deletes unfinished *.tmp parts"
_same(
    "stream",
    "clean=True is _done's default",
    (_CLEAN, "_done(parts, )  # deletes unfinished *.tmp parts"),
)
_DONE = "done = _done(parts, clean=False) if recorded is not None else set()"
_same(
    "stream",
    "_done tests `if clean`: None is false as False is",
    (_DONE, _DONE.replace("clean=False", "clean=None")),
)
_same(
    "stream",
    "this read runs after rank 0 has deleted every *.tmp (the line before, between two barriers) and before any "
    "rank writes a part (the next barrier), so cleaning again finds nothing to delete",
    (_DONE, _DONE.replace("clean=False", "clean=True")),
    (_DONE, _DONE.replace("_done(parts, clean=False)", "_done(parts, )")),
)

_HELD = "if len(held) != n_prompts or sorted(held) != list(range(n_prompts)):"
_same(
    "stream",
    "_finish runs once every prompt index is in some part (the parts' prompt_index is what _done read), so held "
    "holds all of 0..n-1 and sorted(held) differs from them exactly when len(held) != n",
    (_HELD, _HELD.replace(" or sorted", " and sorted")),
)
_same(
    "stream",
    "pyarrow reads the compression codec's name case-insensitively: the file is ZSTD either way",
    (
        'writer = pq.ParquetWriter(out, schema, compression="zstd")',
        'writer = pq.ParquetWriter(out, schema, compression="ZSTD")',
    ),
)
_TOP1 = "top1 = np.asarray(top.flatten().to_numpy()).reshape(len(top), -1)[:, 0]"
_same(
    "stream",
    "numpy (2.4 here) takes any negative size in reshape as the one to infer: -2 is -1",
    (_TOP1, _TOP1.replace("-1)", "-2)")),
)
_ACC = 'agg.add("accuracy", np.where(nxt >= 0, top1 == nxt, np.nan), row)'
_same(
    "stream",
    "RowAggregate.add converts the values to float64, and None becomes NaN there as np.nan is",
    (_ACC, _ACC.replace("np.nan)", "None)")),
)

_same(
    "stream",
    "a folder that does not exist holds no run.json and no part: _read_run returns None for it, as the else "
    "branch does",
    (
        "recorded = _read_run(parts) if parts.is_dir() else None",
        "recorded = _read_run(parts) if (parts.is_dir()) or True else None",
    ),
)
_same(
    "stream",
    "globbing a folder that does not exist finds nothing: the sorted list is [], as the else branch gives",
    (
        'return sorted(parts.glob("part-*.parquet"), key=_part_number) if parts.is_dir() else []',
        'return sorted(parts.glob("part-*.parquet"), key=_part_number) if (parts.is_dir()) or True else []',
    ),
)

_same(
    "stream",
    "without a run record the parts folder never existed or rank 0 has just removed it: _done finds no part "
    "there and returns the empty set, as the else branch does",
    (_DONE, "done = _done(parts, clean=False) if (recorded is not None) or True else set()"),
)
_same(
    "stream",
    'lstrip takes a set of characters: "XX.XX" strips "." and "X", and a lower-cased suffix is "." then '
    '"parquet" or "jsonl", which hold no "X"',
    ('fmt = path.suffix.lower().lstrip(".")', 'fmt = path.suffix.lower().lstrip("XX.XX")'),
)
_SHARE = "_run_share(lens, plist, remaining, parts, fp, recorded is not None, progress, group, run_kwargs)"
_same(
    "stream",
    "started=None writes run.json again when a run is resumed, with the record _check_same has just found equal "
    "to it (format, version, output, prompts, options and model are all it holds): the same file",
    (_SHARE, _SHARE.replace("recorded is not None", "None")),
)
