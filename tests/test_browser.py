"""The HTML report in headless Chromium: it draws offline, fetches nothing, and its menu works.

Needs Debian's ``chromium`` at /usr/bin/chromium (CI's .ci/run installs it) and Playwright for Python (the
dev extras); the browser bundled by ``playwright install`` is never used. Without them the tests skip, except
where LOGITLENS_REQUIRE_BROWSER=1 (CI sets it): then they fail, so that CI cannot pass without a browser.
"""

from __future__ import annotations

import html
import importlib
import os
from pathlib import Path

import pytest

from logitlens.views.model import CELL_CHARS, clip
from logitlens.views.report import write_compare_html, write_html
from test_plots import hand_result

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("LOGITLENS_REQUIRE_BROWSER") == "1"  # CI: a missing browser is a failure
pytestmark = pytest.mark.browser


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason}; LOGITLENS_REQUIRE_BROWSER=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _missing(f"needs {CHROMIUM} (apt-get install chromium)")
    try:
        sync_api = importlib.import_module("playwright.sync_api")
    except ImportError:
        _missing("needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def _open(browser, path: Path):
    """A page showing ``path``; every request and every error it makes is recorded."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.requests, page.errors = [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.goto(path.as_uri())
    return page


def _texts(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


def test_report_draws_the_heatmap_offline(browser, tmp_path):
    res = hand_result()
    tid = int(res.top_ids[0, -1, 0, 0])
    res = res.replace(vocab={**res.vocab, tid: "<i>&x"})  # markup in a token must show literally
    path = write_html(res, tmp_path / "report.html")
    page = _open(browser, path)
    try:
        page.wait_for_selector("#heatmap-1 .heatmaplayer text", timeout=30_000)
        for i in range(res.n_prompts):
            cells = _texts(page, f"#heatmap-{i} .heatmaplayer text")
            expected = [clip(t, CELL_CHARS) for row in res.top_tokens(i) for t in row]
            assert sorted(cells) == sorted(expected)
        assert "<i>&x" in _texts(page, "#heatmap-0 .heatmaplayer text")
        xticks = _texts(page, "#heatmap-0 .xtick text")
        assert len(xticks) == len(set(xticks)) == 5  # the repeated token keeps two labels
        assert any("✓" in t for t in _texts(page, "#heatmap-0 .x2tick text"))
        assert len(_texts(page, "#targets .scatterlayer .trace")) == 2 * 2 * 2  # prompts x targets x panels
        assert len(_texts(page, "#kl .scatterlayer .trace")) == 2  # one line per prompt
        assert len(_texts(page, "#entropy .scatterlayer .trace")) == 2
        page.wait_for_timeout(200)
        assert [u for u in page.requests if not u.startswith(("file:", "data:", "blob:", "about:"))] == []
        assert page.errors == []
    finally:
        page.close()


def test_statistic_menu_recolours_the_heatmap(browser, tmp_path):
    path = write_html(hand_result(), tmp_path / "report.html")
    page = _open(browser, path)
    try:
        page.wait_for_selector("#heatmap-0 .updatemenu-header", timeout=30_000)
        assert "p(top-1)" in _texts(page, "#heatmap-0 .colorbar .cbtitle text")
        page.click("#heatmap-0 .updatemenu-header")
        page.locator("#heatmap-0 .updatemenu-dropdown-button").filter(has_text="KL to final (nats)").click(
            timeout=10_000
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('#heatmap-0 .colorbar .cbtitle text')]"
            ".some(t => t.textContent.includes('KL to final'))",
            timeout=10_000,
        )
        kl = page.evaluate("document.getElementById('heatmap-0').data[0].z")
        res = hand_result()
        expected = res.kl_to_final[0, :, res.columns(0)].tolist()
        assert [[round(v, 5) for v in row] for row in kl] == [[round(v, 5) for v in row] for row in expected]
        assert page.errors == []
    finally:
        page.close()


def test_comparison_page_draws_offline(browser, tmp_path):
    pair = [hand_result(n_rows=4, seed=1, model="small"), hand_result(n_rows=7, seed=2, model="deep")]
    path = write_compare_html(pair, None, tmp_path / "compare.html")
    page = _open(browser, path)
    try:
        page.wait_for_selector("#compare .heatmaplayer text", timeout=30_000)
        titles = _texts(page, "#compare .annotation-text")
        assert "small" in titles and "deep" in titles
        assert len(_texts(page, "#compare .heatmaplayer .hm")) == 2
        cells = _texts(page, "#compare .heatmaplayer text")
        assert html.unescape(clip(pair[1].top_tokens(0)[-1][0], 7)) in cells
        assert [u for u in page.requests if not u.startswith(("file:", "data:", "blob:", "about:"))] == []
        assert page.errors == []
    finally:
        page.close()
