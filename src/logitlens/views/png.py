"""A static heatmap image of one prompt with matplotlib (Agg; no display, no browser, no pyplot state).

Same picture as ``views.plotly.heatmap``: rows (embedding at the bottom) x input positions, the top-1 token
written in each cell, colour = one statistic, the actual next token above each column (green with ✓ where
the final row's top-1 equals it). Sized so that 40 positions x 40 rows read at 100% zoom. A thin renderer
over ``views.model.heatmap_model``.

Example:
    >>> write_png(res, "eiffel.png", stat="top_probs")
"""

from __future__ import annotations

import contextlib
import re
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from logitlens.core.files import write_atomic
from logitlens.engine.result import LensResult
from logitlens.errors import LogitLensError
from logitlens.views.model import (
    CELL_CHARS,
    LABEL_CHARS,
    ROW_AXIS,
    HeatmapModel,
    clip,
    heatmap_model,
    prob_text,
)

__all__ = [
    "CELL_H",
    "CELL_W",
    "FONTS",
    "MATCH",
    "answer_line",
    "compare_figure",
    "critical_line",
    "figure",
    "font_families",
    "image_format",
    "save_figure",
    "subtitle",
    "write_compare_png",
    "write_png",
]

IMAGE_FORMATS = {
    ".png": "png",
    ".svg": "svg",
    ".pdf": "pdf",
    ".jpg": "jpg",
    ".jpeg": "jpg",
}  # suffix -> format
CELL_W = 0.78  # inches per position (about 8 characters of 9 pt text)
CELL_H = 0.26  # inches per row
FONT_SIZE = 9  # points, cell text and tick labels
# DejaVu Sans (bundled with matplotlib) has ␣ ↵ ⇥ ✓; the others, where installed, add CJK and more.
FONTS = ["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans", "Arial Unicode MS"]
MATCH = "#1a7f37"  # next-token labels the final top-1 gets right
CHARS_PER_INCH = 12  # characters of 9 pt DejaVu Sans per inch, with room to spare
MAX_TARGET_LINES = 3  # at most this many target lines under the title


# Where systems put a CJK font (Debian/Ubuntu fonts-noto-cjk, Fedora, Arch, macOS): matplotlib's font cache,
# built once, does not see a font installed after it; ``font_families`` adds the first one found here.
CJK_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
)


def font_families(candidates: list[str] = FONTS) -> list[str]:
    """The ``candidates`` that matplotlib has, in order (a CJK font of ``CJK_FONT_FILES`` added to its
    list when it lacks one); its default sans-serif if none."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    if not any("CJK" in name for name in have):
        for file in CJK_FONT_FILES:
            if Path(file).is_file():
                with contextlib.suppress(OSError, RuntimeError, ValueError):
                    for face in (file, file.replace("-Regular.", "-Bold.")):  # bold: titles
                        if Path(face).is_file():
                            font_manager.fontManager.addfont(face)
                    added = {f.name for f in font_manager.fontManager.ttflist} - have
                    have |= added
                    candidates = [
                        *candidates,
                        *sorted(n for n in added if "CJK" in n and "Mono" not in n)[:1],
                    ]
                    break
    return list(dict.fromkeys(f for f in candidates if f in have)) or ["sans-serif"]


def subtitle(m: HeatmapModel) -> str:
    """The grey lines under the title: model · colour · lens, then how each target ends at the last position."""
    sub = " · ".join(x for x in (m.model or "", f"colour: {m.grid.label}", f"{m.lens} lens") if x)
    for t in m.summary.targets[:MAX_TARGET_LINES]:
        sub += f"\n{t.name} at the last position: p {prob_text(t.prob)}, rank {t.rank:,} in the last row"
        sub += f", top-1 from: {t.first_label}" if t.first_label is not None else ", never top-1"
    return sub


def critical_line(m: HeatmapModel) -> str:
    """◆ the critical layers at the last position (rows where log p(final top-1) rises / KL falls most)."""
    s = m.summary
    parts = []
    if s.rises:
        parts.append(
            "log p(final top-1) rises most " + ", ".join(f"{c.label} (+{c.size:.1f})" for c in s.rises)
        )
    if s.falls:
        parts.append("KL to final falls most " + ", ".join(f"{c.label} (-{c.size:.1f})" for c in s.falls))
    return ("◆ " + "; ".join(parts)) if parts else ""


def answer_line(m: HeatmapModel) -> str:
    """The answer under the title: its teacher-forced log-probability, first token's p / rank, first top-1."""
    a = m.summary.answer
    if a is None:
        return ""
    text = f"answer {a.text}: log p {a.logprob:.2f} ({a.n_tokens} token{'s' if a.n_tokens != 1 else ''})"
    text += f", first token p {prob_text(a.prob)}, rank {a.rank:,}"
    return text + (f", top-1 first {a.first_top1}" if a.first_top1 else ", never top-1")


def figure(
    result: LensResult, prompt: int = 0, stat: str = "top_probs", target: int | str = 0, *, dpi: int = 100
):
    """The matplotlib Figure of ``write_png`` (not attached to pyplot)."""
    from matplotlib.figure import Figure

    m = heatmap_model(result, prompt, stat, target, hover=False)
    lay = _layout(m)
    fig = Figure(figsize=(lay.width, lay.height), dpi=dpi)
    _draw(fig, m, lay, lay.width, lay.height)
    return fig


def compare_figure(results, names, prompt: int = 0, stat: str = "top_probs", *, dpi: int = 100):
    """Several results' heatmaps of one prompt side by side, each with its model's name as its title."""
    from matplotlib.figure import Figure

    models = [heatmap_model(r, prompt, stat, 0, hover=False) for r in results]
    layouts = [_layout(m, title) for m, title in zip(models, names, strict=True)]
    width, height = sum(lay.width for lay in layouts), max(lay.height for lay in layouts)
    fig = Figure(figsize=(width, height), dpi=dpi)
    subs = fig.subfigures(1, len(models), width_ratios=[lay.width for lay in layouts], wspace=0)
    for sub, m, lay in zip(np.atleast_1d(subs).tolist(), models, layouts, strict=True):  # type: ignore[arg-type]
        _draw(sub, m, lay, lay.width, height)
    return fig


class _Layout(NamedTuple):
    """Inches of one heatmap panel: margins, plot area, total; the title and the wrapped grey lines."""

    left: float
    right: float
    bottom: float
    top: float
    plot_w: float
    plot_h: float
    width: float
    height: float
    title: str
    sub_lines: list[str]


def _layout(m: HeatmapModel, title: str | None = None) -> _Layout:
    left, right, bottom = 1.3, 1.5, 0.85  # inches of margin: row labels and axis title | colour bar, ticks
    n_rows, n_cols = m.grid.z.shape
    plot_w, plot_h = CELL_W * max(n_cols, 4), CELL_H * max(n_rows, 6)  # tiny grids get wider cells
    width = left + right + plot_w
    # the grey lines under the title, wrapped to the image's width (never cut at its edge)
    chars = max(30, int((width - 0.7) * CHARS_PER_INCH))
    text = "\n".join(x for x in (subtitle(m), answer_line(m), critical_line(m)) if x)
    sub_lines = [w for line in text.split("\n") for w in (textwrap.wrap(line, chars) or [""])]
    top = 1.45 + 0.2 * max(0, len(sub_lines) - 2)  # title, grey lines, next-token axis
    if title is None:
        title = clip(m.text, 110) + (f"  →  {clip(m.summary.answer.text, 40)}" if m.summary.answer else "")
    title = "\n".join(textwrap.wrap(title, max(20, int((width - 0.7) * CHARS_PER_INCH * 0.75)))[:1])
    return _Layout(left, right, bottom, top, plot_w, plot_h, width, top + bottom + plot_h, title, sub_lines)


def _draw(fig, m: HeatmapModel, lay: _Layout, width: float, height: float) -> None:
    """Draw one heatmap panel into ``fig`` (a Figure or SubFigure of ``width`` x ``height`` inches)."""
    fonts = font_families()
    left, bottom, plot_w, plot_h = lay.left, lay.bottom, lay.plot_w, lay.plot_h
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, plot_h / height))
    mesh = _draw_cells(ax, m, fonts)
    _draw_axes(ax, m, fonts)
    cax = fig.add_axes(((left + plot_w + 0.25) / width, bottom / height, 0.16 / width, plot_h / height))
    bar = fig.colorbar(mesh, cax=cax)
    bar.set_label(m.grid.label, fontsize=FONT_SIZE + 1, family=fonts, parse_math=False)
    bar.ax.tick_params(labelsize=FONT_SIZE)
    if m.grid.tickvals is not None:
        bar.set_ticks(m.grid.tickvals, labels=m.grid.ticktext)
    bar.outline.set_visible(False)
    fig.text(
        0.5 / width,
        1 - 0.2 / height,
        lay.title,
        fontsize=FONT_SIZE + 3,
        family=fonts,
        weight="bold",
        va="top",
        parse_math=False,
    )
    fig.text(
        0.5 / width,
        1 - 0.5 / height,
        "\n".join(lay.sub_lines),
        fontsize=FONT_SIZE,
        family=fonts,
        color="#555",
        va="top",
        linespacing=1.5,
        parse_math=False,
    )


def _draw_cells(ax, m: HeatmapModel, fonts: list[str]):
    """The coloured cells, each with its top-1 token in a colour that reads on it; returns the mesh (for
    the colour bar)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    grid = m.grid
    n_rows, n_cols = grid.z.shape
    cmap = colormaps[grid.colorscale + ("_r" if grid.reverse else "")].with_extremes(bad="#f0f0f0")
    norm = Normalize(grid.zmin, grid.zmax)
    z = np.ma.masked_invalid(grid.z)
    mesh = ax.pcolormesh(
        np.arange(n_cols + 1) - 0.5,
        np.arange(n_rows + 1) - 0.5,
        z,
        cmap=cmap,
        norm=norm,
        edgecolors="white",
        linewidth=0.6,
    )
    rgba = cmap(norm(np.nan_to_num(grid.z, nan=grid.zmin)))  # (R, C, 4) to pick a readable text colour
    lum = 0.2126 * rgba[..., 0] + 0.7152 * rgba[..., 1] + 0.0722 * rgba[..., 2]
    text_kw: dict[str, Any] = {
        "ha": "center",
        "va": "center",
        "fontsize": FONT_SIZE,
        "family": fonts,
        "parse_math": False,
    }
    for r in range(n_rows):
        for c in range(n_cols):
            ax.text(
                c, r, clip(m.cells[r][c], CELL_CHARS), color="white" if lum[r, c] < 0.5 else "#111", **text_kw
            )
    return mesh


def _draw_axes(ax, m: HeatmapModel, fonts: list[str]) -> None:
    """Row labels, input tokens and positions below, next tokens above (green ✓ where the final top-1
    equals them); no spines, no ticks, no mathtext."""
    n_rows, n_cols = m.grid.z.shape
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(-0.5, n_rows - 0.5)
    ax.set_yticks(range(n_rows), m.row_labels, fontsize=FONT_SIZE, family=fonts)
    labels = [f"{clip(t, LABEL_CHARS)}\n{p}" for t, p in zip(m.tokens, m.positions, strict=True)]
    ax.set_xticks(range(n_cols), labels, fontsize=FONT_SIZE, family=fonts)
    ax.set_ylabel(ROW_AXIS, fontsize=FONT_SIZE + 1, family=fonts)
    ax.set_xlabel("input token / position", fontsize=FONT_SIZE + 1, family=fonts)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)

    top_ax = ax.secondary_xaxis("top")
    nexts = list(zip(m.next_tokens, m.next_hits, strict=True))
    top_ax.set_xticks(range(n_cols), [("✓" if hit else "") + clip(t, LABEL_CHARS) for t, hit in nexts])
    top_ax.tick_params(length=0, labelsize=FONT_SIZE)
    for label, (_, hit) in zip(top_ax.get_xticklabels(), nexts, strict=True):
        label.set_fontfamily(fonts)
        if hit:
            label.set_color(MATCH)
            label.set_fontweight("bold")
    top_ax.set_xlabel(
        "actual next token (✓ green: the final top-1 equals it)" if n_cols >= 6 else "next token",
        fontsize=FONT_SIZE,
        family=fonts,
        color="#444",
    )
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels(), *top_ax.get_xticklabels()]:
        label.set_parse_math(False)


def write_png(
    result: LensResult,
    path: str | Path,
    prompt: int = 0,
    stat: str = "top_probs",
    target: int | str = 0,
    *,
    dpi: int = 100,
) -> Path:
    """Write a static heatmap of ``prompt`` coloured by ``stat`` and return its path; the suffix picks the
    format: .png, .svg, .pdf, .jpg / .jpeg.

    Args:
        result: the ``LensResult``.
        path: the image file.
        prompt: which prompt (index).
        stat: any drawable statistic ("top_probs", "final_probs", "entropy", "kl_to_final",
            "target_probs", "target_ranks", ...; older names such as "kl" work too; see
            ``views.model.stat_grid``).
        target: the target of per-target statistics (index or name).
        dpi: 100 is readable at 100% zoom (about 78 px per position, 26 px per row); raise it for print.

    Returns:
        The path written.

    Example:
        >>> write_png(res, "eiffel.png")   # what `logitlens run ... --png eiffel.png` writes
    """
    image_format(path)  # before drawing: a bad suffix fails at once
    return save_figure(figure(result, prompt, stat, target, dpi=dpi), path, dpi)


def write_compare_png(
    results, names, path: str | Path, prompt: int = 0, stat: str = "top_probs", *, dpi: int = 100
) -> Path:
    """Write several results' heatmaps of one prompt side by side (``compare_figure``); format by suffix."""
    return save_figure(compare_figure(results, names, prompt, stat, dpi=dpi), path, dpi)


def image_format(path: str | Path) -> str:
    """The image format a file name asks for; one line listing the suffixes otherwise."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise LogitLensError(
            f"cannot write an image to {path}: the file name must end in "
            f"{', '.join(sorted(IMAGE_FORMATS))} (the suffix picks the format)"
        )
    return fmt


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """Write a matplotlib figure whole or not at all, in the format its suffix names."""
    path = Path(path)
    fmt = image_format(path)
    metadata = {"png": {"Software": "logitlens"}, "pdf": {"Creator": "logitlens"}}.get(fmt)

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f, missing_glyphs_noted():
            fig.savefig(f, format=fmt, dpi=dpi, facecolor="white", metadata=metadata)

    return write_atomic(path, save, f"the {fmt.upper()} image")


CJK_FONT_PACKAGE = "fonts-noto-cjk"  # Debian / Ubuntu; Fedora: google-noto-sans-cjk-fonts


@contextlib.contextmanager
def missing_glyphs_noted() -> Iterator[None]:
    """matplotlib's warning per character no font has (one per glyph, on every draw) becomes one note of
    ours naming the characters and the font package that has them; other warnings pass as they are."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    missing: list[str] = []
    for w in caught:
        found = _GLYPH.search(str(w.message))
        if found is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif chr(int(found.group(1))) not in missing:
            missing.append(chr(int(found.group(1))))
    if missing:
        shown = "".join(missing[:12]) + ("..." if len(missing) > 12 else "")
        warnings.warn(
            f"no installed font has {len(missing)} character{'s' if len(missing) != 1 else ''} of this image "
            f"({shown}): they are drawn as empty boxes; install a font with them, e.g. `apt install "
            f"{CJK_FONT_PACKAGE}` (Debian, Ubuntu) for Chinese, Japanese and Korean",
            UserWarning,
            stacklevel=4,
        )


_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")
