"""The standalone HTML report, the model comparison and the notebook view (views/report.py, compare.py),
offline."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_plots import hand_result

from logitlens import LensResult, LogitLensError
from logitlens.tasks.comparison import compare
from logitlens.views.plotly import compare_figure
from logitlens.views.report import (
    notebook_html,
    report_html,
    scrub_js,
    scrub_text,
    write_compare_html,
    write_html,
)

# Anything that could make a browser fetch: an absolute or protocol-relative URL in src/href/url()/import.
RESOURCE = re.compile(
    r"""(?:\bsrc|\bhref|\baction|\bposter|\bdata)\s*=\s*["']?\s*(?:https?:|//)|url\(\s*["']?\s*(?:https?:|//)|@import""",
    re.IGNORECASE,
)


def assert_offline(text: str) -> None:
    assert "http://" not in text.lower() and "https://" not in text.lower()
    assert not RESOURCE.search(text), RESOURCE.search(text)
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.IGNORECASE)
    assert not re.search(r"<link\b", text, re.IGNORECASE)


@pytest.fixture(scope="module")
def res():
    r = hand_result()
    return r.replace(prompts=["see https://example.com/x?a=1&b=<2>", r.prompts[1]])


@pytest.fixture(scope="module")
def report(res, tmp_path_factory):
    path = write_html(res, tmp_path_factory.mktemp("report") / "r.html", title="Hand & made")
    return path, path.read_text(encoding="utf-8")


def test_report_is_one_offline_file(report):
    path, text = report
    assert path.suffix == ".html" and text.startswith("<!DOCTYPE html>")
    assert_offline(text)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "plotly.js v" in text  # the library itself is inline
    assert len(text) > 3_000_000


def test_report_holds_summary_heatmaps_and_trajectories(res, report):
    _, text = report
    assert "<title>Hand &amp; made</title>" in text
    assert (
        'class="dataframe summary"' in text
        and "top-1 from" in text
        and "first_stable_row" not in text
        and "p(␣Paris)" in text
    )
    for i in range(res.n_prompts):
        assert f'id="heatmap-{i}"' in text
    assert 'id="targets"' in text and 'id="kl"' in text and 'id="entropy"' in text
    assert text.count("Plotly.newPlot(") == res.n_prompts + 3
    assert '"updatemenus"' in text  # the statistic selector
    # the prompt's URL is shown, not linked, and markup in it is escaped
    assert "see https&#58;//example.com/x?a=1&amp;b=&lt;2&gt;" in text


def test_report_without_targets_skips_the_target_chart(res, tmp_path):
    bare = res.replace(target_names=[], target_ids=[], target_probs=res.target_probs[..., :0])
    text = report_html(bare)
    assert 'id="targets"' not in text and 'id="kl"' in text
    assert_offline(text)


def test_scrubbing_keeps_javascript_meaning():
    assert scrub_js('a="https://x.org/y";// see http://z') == r'a="https\x3a\/\/x.org/y";// see http\x3a\/\/z'
    assert scrub_js("HTTPS://A") == r"HTTPS\x3a\/\/A"
    assert scrub_text("<td>http://a</td>") == "<td>http&#58;//a</td>"
    assert scrub_js("no urls: a//b, https:/x") == "no urls: a//b, https:/x"


def test_write_html_error_names_the_path(res, tmp_path):
    with pytest.raises(LogitLensError, match="cannot write the HTML report to"):
        write_html(res, tmp_path / "no" / "r.html")


def test_repr_html_is_self_contained(res, monkeypatch):
    from logitlens.views import report

    monkeypatch.setitem(report._NOTEBOOK, "plotlyjs_sent", False)  # a fresh notebook session
    text = res._repr_html_()
    again = notebook_html(res, embed_plotlyjs=True)
    assert re.sub(r"[0-9a-f-]{36}", "ID", text) == re.sub(r"[0-9a-f-]{36}", "ID", again)
    assert text.startswith("<script>") and "plotly.js v" in text and "Plotly.newPlot(" in text
    assert_offline(text)
    assert f"prompt 1 of {res.n_prompts}; show another" in text  # a multi-prompt result says so


def test_notebook_embeds_plotlyjs_once_per_session(res, monkeypatch):
    from logitlens.views import report

    monkeypatch.setitem(report._NOTEBOOK, "plotlyjs_sent", False)
    first, second = res._repr_html_(), res._repr_html_()
    assert len(first) > 1_000_000 > 200_000 > len(second)  # plotly.js (~4.8 MB) once, not per output
    assert "Plotly.newPlot(" in second and "if (!window.Plotly)" in second


# ---- comparing models ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair():
    return [hand_result(n_rows=4, seed=1, model="small"), hand_result(n_rows=7, seed=2, model="deep")]


def test_compare_heatmaps_side_by_side_and_curves_on_relative_depth(pair):
    fig = compare_figure(pair, ["small", "deep"], prompt=1)
    heat = [d for d in fig.data if d.type == "heatmap"]
    lines = [d for d in fig.data if d.type == "scatter"]
    assert [h.name for h in heat] == ["small", "deep"]
    assert all(h.coloraxis == "coloraxis" for h in heat)  # one shared colour scale
    assert [len(h.z) for h in heat] == [4, 7]
    assert len(lines) == 3 * 2  # KL, entropy, p(target) x models
    for line in lines:
        assert line.x[0] == 0 and line.x[-1] == 1
    deep_kl = lines[1]
    np.testing.assert_allclose(deep_kl.x, np.arange(7) / 6)
    np.testing.assert_allclose(deep_kl.y, pair[1].kl_to_final[1, :, 2].numpy(), rtol=1e-6)
    deep_p = lines[5]
    np.testing.assert_allclose(deep_p.y, pair[1].target_probs[1, :, 2, 0].numpy(), rtol=1e-6)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["small", "deep"] and "p(␣Paris)" in titles
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels[:4] == ["p(top-1)", "p(final top-1)", "entropy (nats)", "KL to final (nats)"]
    # the heatmaps' x axes are distinct from the curves' shared-depth axes
    assert heat[0].xaxis != lines[0].xaxis


def test_compare_curves_sit_at_each_rows_depth():
    """x of every curve is its row's relative depth from the row specs (not row index / (R - 1))."""
    small = hand_result(n_rows=4, seed=1, model="small").replace(row_names=["embed", "0", "1.attn", "1"])
    deep = hand_result(n_rows=7, seed=2, model="deep")
    fig = compare_figure([small, deep], prompt=0)
    lines = [d for d in fig.data if d.type == "scatter"]
    assert len(lines) == 3 * 2
    for i, line in enumerate(lines):
        res = (small, deep)[i % 2]
        assert list(line.x) == pytest.approx(res.depths)
        assert list(line.text) == res.row_names
    assert small.depths == [0.0, 0.5, 0.75, 1.0]  # not row index / 3
    assert deep.depths == pytest.approx([r / 6 for r in range(7)])
    # curves in order: KL (small, deep), entropy (small, deep), p(␣Paris) (small, deep)
    np.testing.assert_allclose(lines[1].y, deep.kl_to_final[0, :, 4].numpy(), rtol=1e-6)
    np.testing.assert_allclose(lines[2].y, small.entropy[0, :, 4].numpy(), rtol=1e-6)


class _FakeLens:
    """Stands in for a LogitLens: records what ``run`` is given and returns a hand-made result."""

    def __init__(self, name: str, n_rows: int):
        self.name, self.n_rows, self.calls = name, n_rows, []

    def run(self, prompt, **kwargs) -> LensResult:
        self.calls.append(kwargs)
        return hand_result(n_rows=self.n_rows, model=self.name).select(0).replace(prompts=[prompt])


def test_compare_passes_batch_size_and_options_to_each_run():
    lenses = [_FakeLens("a", 4), _FakeLens("b", 6)]
    fig = compare(lenses, "The cat the dog the", targets=[" Paris"], top_k=3, batch_size=2)
    assert [c for lens in lenses for c in lens.calls] == [
        {"targets": [" Paris"], "top_k": 3, "batch_size": 2}
    ] * 2
    assert [d.name for d in fig.data if d.type == "heatmap"] == ["a", "b"]
    compare(lenses, "The cat the dog the")
    assert all("batch_size" not in lens.calls[-1] for lens in lenses)  # None: each lens's own


def test_compare_batch_size_on_a_real_lens(lens):
    fig = compare([lens, lens], "Hello world, hello", batch_size=1, top_k=2)
    assert len([d for d in fig.data if d.type == "heatmap"]) == 2
    with pytest.raises(LogitLensError, match="batch_size must be a positive integer, got 0"):
        compare([lens], "Hello", batch_size=0)


def test_compare_drops_the_target_curve_when_targets_differ(pair):
    other = pair[1].replace(target_names=[" Berlin", " Rome"])
    fig = compare_figure([pair[0], other], prompt=0, target=" Paris")
    assert len([d for d in fig.data if d.type == "scatter"]) == 2 * 2
    assert [h.name for h in fig.data if h.type == "heatmap"] == ["small", "deep"]  # from meta.model


def test_compare_names_and_errors(pair):
    fig = compare_figure([pair[0], pair[0]], names=None)
    assert [h.name for h in fig.data if h.type == "heatmap"] == ["small", "small (2)"]
    with pytest.raises(LogitLensError, match="2 results but 1 names"):
        compare_figure(pair, ["a"])
    with pytest.raises(LogitLensError, match="at least one result"):
        compare_figure([])
    with pytest.raises(LogitLensError, match="LogitLens objects or LensResults"):
        compare([object()], "x")


def test_compare_runs_lenses(lens):
    fig = compare([lens, lens], "Hello world, hello", names=["a", "b"], targets=[7], top_k=3)
    heat = [d for d in fig.data if d.type == "heatmap"]
    assert len(heat) == 2 and heat[0].z == heat[1].z
    res = lens.run(["one two", "Hello world, hello"], top_k=3)
    fig = compare([res, lens], "Hello world, hello", top_k=3)
    assert len([d for d in fig.data if d.type == "heatmap"]) == 2


def test_write_compare_html_is_offline(pair, tmp_path):
    path = write_compare_html(pair, ["small", "deep"], tmp_path / "c.html", prompt=0)
    text = path.read_text(encoding="utf-8")
    assert_offline(text)
    assert "<td>small</td>" in text and "<td>deep</td>" in text and 'id="compare"' in text
    assert "<title>logitlens · small vs deep</title>" in text


def test_write_compare_html_error_names_the_path(pair, tmp_path):
    with pytest.raises(LogitLensError, match=r"cannot write the comparison to .*no.c\.html"):
        write_compare_html(pair, ["small", "deep"], tmp_path / "no" / "c.html")


# ---- issue 19, item 10: the compare page's panels and p(target) axis, the run page's headers ---------------
def test_compare_second_heatmap_labels_clear_the_first_and_p_target_has_a_log_switch():
    """Guards: the second panel's row labels ("embeddings") drawn over the first heatmap; p(target) only
    linear, where 1e-10 and 1e-3 both sit on the zero line."""
    a, b = hand_result(n_rows=6), hand_result(n_rows=4, seed=1)
    fig = compare_figure([a, b], ["a-model-with-a-very-long-name/checkpoint-123456", "b"])
    plot_w = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    gap_px = (fig.layout.xaxis2.domain[0] - fig.layout.xaxis.domain[1]) * plot_w
    assert gap_px >= 7 * len("embeddings") + 20
    switches = [m for m in fig.layout.updatemenus if m.type == "buttons"]
    assert len(switches) == 1 and [b.label for b in switches[0].buttons] == ["linear", "log"]
    (key,) = {k for k in switches[0].buttons[1].args[0] if k.endswith(".type")}
    axis = key.removesuffix(".type")
    assert fig.layout[axis].domain[1] < fig.layout.yaxis.domain[0]  # a bottom-row (curve) axis
    assert fig.layout[axis].range == (0, 1.02)  # linear first; the probability panel
    titles = [t.text for t in fig.layout.annotations[:2]]
    assert titles[0].endswith("…") and len(titles[0]) < 48  # a long name is cut to its panel, not overlapping


def test_run_page_summary_headers_are_words():
    text = report_html(hand_result())
    head = re.search(r"<thead>(.*?)</thead>", text, re.S).group(1)
    assert "final top-1" in head and "top-1 from" in head and "_" not in head
