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
