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
