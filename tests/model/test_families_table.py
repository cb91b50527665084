"""docs/families.md is what scripts/families_table.py measures on the test zoo today (it cannot drift)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_families_table_is_up_to_date():
    spec = importlib.util.spec_from_file_location("families_table", ROOT / "scripts" / "families_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "docs" / "families.md").read_text()
    assert committed == module.generate(), (
        "docs/families.md is out of date: run python scripts/families_table.py"
    )
