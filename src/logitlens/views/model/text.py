"""Names, indices and texts the views share: clipped tokens, labels, statistic lookup, value formats."""

from __future__ import annotations

import math

from logitlens.core.stats import Statistic, drawable_names, get_statistic
from logitlens.core.tokens import visible
from logitlens.engine.result import LensResult
from logitlens.errors import LogitLensError

__all__ = [
    "CELL_CHARS",
    "HOVER_K",
    "LABEL_CHARS",
    "check_prompt",
    "clip",
    "column_labels",
    "format_value",
    "next_labels",
    "position_text",
    "prob_text",
    "prompt_label",
    "stat_label",
    "statistic",
    "target_index",
]


CELL_CHARS = 8  # a heatmap cell shows at most this many characters of its token
LABEL_CHARS = 9  # axis labels: at most this many characters of a token
HOVER_K = 10  # a hover box lists at most this many top tokens


# ---- names, indices and text ----------------------------------------------------------------------------
def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with … when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def statistic(name: str) -> Statistic:
    """The drawable registry statistic called ``name`` (older aliases accepted); one-line error otherwise."""
    stat = get_statistic(name)
    if stat.kind == "ids" or stat.scale is None:
        raise LogitLensError(
            f"statistic {stat.name!r} holds token ids and is not drawn; choose one of: "
            f"{', '.join(drawable_names())}"
        )
    return stat


def check_prompt(result: LensResult, prompt: int) -> int:
    """A prompt index (negative counts from the end) -> 0..N-1; one-line error when out of range."""
    n = result.n_prompts
    if isinstance(prompt, bool) or not isinstance(prompt, int) or not -n <= prompt < n:
        raise LogitLensError(f"prompt index {prompt!r} is out of range: this result has {n}")
    return prompt % n


def target_index(result: LensResult, target: int | str) -> int:
    """A target given by index or by name (as given to ``run``, or with ␣ for spaces) -> its index."""
    if not result.target_names:
        raise LogitLensError("this result has no targets; run the lens with targets=[' Paris', ...]")
    names = result.target_names
    if isinstance(target, str):
        for t, name in enumerate(names):
            if target in (name, visible(name)):
                return t
        raise LogitLensError(f"unknown target {target!r}; this result tracks: {', '.join(map(repr, names))}")
    if isinstance(target, bool) or not isinstance(target, int) or not -len(names) <= target < len(names):
        raise LogitLensError(f"target index {target!r} is out of range: this result tracks {len(names)}")
    return target % len(names)


def stat_label(result: LensResult, stat: Statistic, target: int | None) -> str:
    return stat.label_for(visible(result.target_names[target]) if target is not None else None)


def prompt_label(result: LensResult, prompt: int, width: int | None = 70) -> str:
    """The prompt's text (or its tokens joined), newlines as ↵, cut to ``width`` characters (None: all)."""
    text = (result.prompts[prompt] if result.prompts else None) or "".join(result.tokens[prompt])
    text = text.replace("\n", "↵")
    return text if width is None else clip(text, width)


def column_labels(result: LensResult, prompt: int = 0, width: int = LABEL_CHARS) -> list[str]:
    """(C,) distinct plain labels of the existing columns: the input token and its position, "␣Tower·3"."""
    pos = result.positions[prompt].tolist()
    return [
        f"{clip(tok, width)}·{pos[j]}"
        for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=True)
    ]


def next_labels(result: LensResult, prompt: int = 0) -> list[tuple[str, bool]]:
    """(C,) the actual next token ("" after the last) and whether the final row's top-1 equals it."""
    ids = result.input_ids[prompt]
    pos = result.positions[prompt].tolist()
    final = result.stats["top_ids"][prompt, -1, :, 0].tolist()  # (P,) the final row's top-1
    out = []
    for j in result.columns(prompt):
        if pos[j] + 1 >= len(ids):
            out.append(("", False))
        else:
            nxt = ids[pos[j] + 1]
            out.append((result.token(nxt), final[j] == nxt))
    return out


def position_text(position: int | str) -> str:
    """How a trajectory's column is described: "last position", "mean over positions", "column 3"."""
    if position == "mean":
        return "mean over positions"
    return "last position" if position == -1 else f"column {position}"


def format_value(stat: Statistic, value: float) -> str:
    """A cell's value as the hover box and tables write it: p 0.123, nats 1.23, rank 1,234, bool yes/no."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if stat.kind == "prob":
        return prob_text(value)
    if stat.kind == "rank":
        return f"{int(value):,}" if value >= 0 else "–"
    if stat.kind == "bool":
        return "yes" if value else "no"
    return f"{value:.3g}"


def prob_text(p: float | None, digits: int = 3) -> str:
    """A probability that reads at every size: ``digits`` decimals from 0.01 up (0.412), two significant
    digits below (2.9e-4, never 0.000); exactly 0 (fp32 underflow) as "0", NaN or None as "–"."""
    if p is None or p != p:
        return "–"
    if p == 0:
        return "0"
    if abs(p) >= 0.01:
        return f"{p:.{digits}f}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"
