"""Equivalent mutants of ``lenses`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

_same(
    "lenses",
    "whitespace of lens.json only: every reader parses the JSON, whose content is tested",
    *(
        (
            'json.dumps({"kind": self.kind, "name": self.name, "config": self.config()}, indent=1)',
            f'json.dumps({{"kind": self.kind, "name": self.name, "config": self.config()}}, {arg})',
        )
        for arg in ("indent=None", "", "indent=2")
    ),
)
