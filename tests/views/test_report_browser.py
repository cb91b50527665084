"""The HTML report in headless Chromium: it draws offline, fetches nothing, and its menu works.

Needs Debian's ``chromium`` at /usr/bin/chromium (CI's .ci/run installs it) and Playwright for Python (the
dev extras); the browser bundled by ``playwright install`` is never used. Without them the tests skip, except
where LOGITLENS_REQUIRE_BROWSER=1 (CI sets it): then they fail, so that CI cannot pass without a browser.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pytest
from test_plots import hand_result

from logitlens.views.model import CELL_CHARS, clip
from logitlens.views.report import write_compare_html, write_html
from markers import headless_chromium

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as b:
        yield b


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
        caption = " ".join(_texts(page, "#heatmap-0 .gtitle"))
        assert "colour: KL to final (nats)" in caption and "p(top-1)" not in caption  # it follows the menu
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


def _boxes(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(
        selector,
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, text: e.textContent}; })",
    )


def test_a_60_token_prompt_fits_1400_pixels_with_labels_in_view(browser, tmp_path):
    """The last 40 positions at first (narrow cells: no cell text, the hover kept), upright headers that
    never overlap, row labels, colour bar and statistic menu in a 1400x900 window; dragging moves the window."""
    res = hand_result(n_rows=8, inputs=[[i % 10 for i in range(60)]])
    path = write_html(res, tmp_path / "long.html")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(path.as_uri())
        page.wait_for_selector("#heatmap-0 .xtick text", timeout=30_000)
        page.evaluate(
            "() => { window.scrollTo(document.scrollingElement.scrollWidth, 0);"
            " document.querySelectorAll('.figure').forEach(f => f.scrollLeft = f.scrollWidth); }"
        )
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 1400  # no page-wide scroller
        page.locator("#heatmap-0").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "long.png"))  # LOGITLENS_SCREENSHOT=dir keeps a copy to look at
        if os.environ.get("LOGITLENS_SCREENSHOT"):
            page.screenshot(
                path=str(Path(os.environ["LOGITLENS_SCREENSHOT"]) / "long-60.png"), full_page=True
            )
        rows = _boxes(page, "#heatmap-0 .ytick text")
        assert [b["text"].split()[0] for b in rows][:2] == ["embeddings", "0"]
        for what in ("#heatmap-0 .ytick text", "#heatmap-0 .colorbar", "#heatmap-0 .updatemenu-header"):
            boxes = _boxes(page, what)
            assert boxes and all(b["left"] >= 0 and b["right"] <= 1400 for b in boxes), (what, boxes)
        assert _boxes(page, "#heatmap-0 .main-svg")[0]["right"] <= 1400
        for axis in ("xtick", "x2tick"):
            heads = sorted(_boxes(page, f"#heatmap-0 .{axis} text"), key=lambda b: b["left"])
            assert len(heads) == (40 if axis == "xtick" else 39), axis  # the last 40 (no next after 59)
            overlaps = [
                (a, b) for a, b in zip(heads, heads[1:], strict=False) if a["right"] > b["left"] + 0.5
            ]
            assert not overlaps, (axis, overlaps[:2])  # no overlap
        heads = sorted(_boxes(page, "#heatmap-0 .xtick text"), key=lambda b: b["left"])
        assert heads[0]["text"].endswith("20") and heads[-1]["text"].endswith("59")  # positions 20..59
        assert _texts(page, "#heatmap-0 .heatmaplayer text") == []  # 28-pixel cells: text dropped
        fig = page.evaluate("document.getElementById('heatmap-0').data[0].hovertext.length")
        assert fig == res.n_rows  # the hover is kept: one row of hover text per row of the lens
        # the window moves: the range is plotly's, dragged or set (here set, as a drag does)
        page.evaluate("Plotly.relayout('heatmap-0', {'xaxis.range': [-0.5, 39.5]})")
        page.wait_for_timeout(300)
        heads = sorted(_boxes(page, "#heatmap-0 .xtick text"), key=lambda b: b["left"])
        assert heads[0]["text"].endswith(" 0") and heads[-1]["text"].endswith("39")
    finally:
        page.close()


def test_a_three_model_comparison_fits_1400_pixels(browser, tmp_path):
    trio = [
        hand_result(n_rows=r, seed=r, model=f"m{r}", inputs=[[i % 10 for i in range(20)]]) for r in (4, 6, 8)
    ]
    path = write_compare_html(trio, None, tmp_path / "compare.html")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(path.as_uri())
        page.wait_for_selector("#compare .heatmaplayer text", timeout=30_000)
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 1400
        box = _boxes(page, "#compare .main-svg")[0]
        assert box["right"] <= 1400
    finally:
        page.close()
