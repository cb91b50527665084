"""The statistics registry: one entry per statistic, read by the reduction, the result, save/load, the
table export and every view.

Each ``Statistic`` says what it is called (one name everywhere: the result's attribute, the export's
column, the view's menu entry), its dtype and the fill value of cells that do not exist, whether it has a
value per target or per top-k slot, and how it is drawn (label, colour scale, which end is dark, kind of
scale). The built-in statistics are computed by the reduction (``reduce.py``); a statistic registered with
``register_statistic`` brings its own ``compute`` and reaches every layer above from that one place.

Conventions (all in nats): entropy H(p_r); ``kl_to_final`` KL(p_final || p_r); ``cross_entropy``
-log p_r(next token); ranks are 1 for the most probable token.

Example:
    >>> register_statistic(Statistic(
    ...     "max_logprob", torch.float32, float("nan"), label="max log p", kind="nats",
    ...     meaning="log-probability of the top-1 token", compute=lambda ctx: ctx.logp.amax(-1)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from logitlens.core.kernels import (
    Reduction,
)  # what ``compute`` sees: a plain class, rebuilt inside remote traces
from logitlens.errors import LogitLensError

__all__ = [
    "BUILTIN",
    "CORPUS_METRICS",
    "REGISTRY",
    "Reduction",
    "Statistic",
    "drawable",
    "get_statistic",
    "register_statistic",
    "unregister_statistic",
]

KINDS = ("prob", "nats", "rank", "bool", "ids")  # how a value maps to colour (views) and types (export)


@dataclass(frozen=True)
class Statistic:
    """One statistic of a lens run: one entry of the registry that the reduction, results, files, tables and
    every view read.

    Shape of its tensor in a result: (N, R, P), then (k,) when ``per_k``, (T,) when ``per_target``.
    ``compute`` (registered statistics only) maps a ``Reduction`` to (m, R) or, per target, (m, R, T).
    Each field is commented in the source.

    Example:
        >>> Statistic("max_logprob", torch.float32, float("nan"), label="max log p",
        ...           compute=lambda ctx: ctx.logp.amax(-1))
    """

    name: str  # the one name: attribute, column, menu entry, JSON key
    dtype: torch.dtype
    fill: float | int | bool  # value of cells that do not exist (padding columns)
    label: str = ""  # axis / colour-bar label; "{target}" is replaced by the target's name
    kind: str = "nats"  # "prob" 0..1, "nats" 0..max, "rank" log scale, "bool", "ids" (not drawn)
    scale: str | None = "Blues"  # sequential colour scale (Plotly and matplotlib share the name)
    reverse: bool = False  # dark at the low end (low entropy, low KL, rank 1 = close / certain)
    per_target: bool = False
    per_k: bool = False
    meaning: str = ""
    compute: Callable[[Reduction], torch.Tensor] | None = None
    aliases: tuple[str, ...] = ()  # older names still accepted where a statistic is named
    column: str = ""  # per-target statistics: the export's column per target, "{target}" its name

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LogitLensError(f"statistic {self.name!r}: kind must be one of {', '.join(KINDS)}")

    def label_for(self, target: str | None = None) -> str:
        return self.label.replace("{target}", target or "target")

    def column_for(self, target: str) -> str:
        """The export's column name of this per-target statistic for ``target``."""
        return (self.column or self.name + "({target})").replace("{target}", target)


_NAN = float("nan")
BUILTIN: tuple[Statistic, ...] = (
    Statistic("top_ids", torch.long, -1, "top-k token ids", "ids", None, per_k=True,
              meaning="the k most probable tokens of each row, most probable first"),
    Statistic("top_probs", torch.float32, _NAN, "p(top-1)", "prob", "Blues", per_k=True,
              meaning="probabilities of the top-k tokens", aliases=("top_prob",)),
    Statistic("final_probs", torch.float32, _NAN, "p(final top-1)", "prob", "Blues",
              meaning="probability each row gives the final row's top-1 token", aliases=("final_prob",)),
    Statistic("entropy", torch.float32, _NAN, "entropy (nats)", "nats", "Greens", reverse=True,
              meaning="entropy of the row's distribution, nats"),
    Statistic("kl_to_final", torch.float32, _NAN, "KL to final (nats)", "nats", "Oranges", reverse=True,
              meaning="KL(final || row), nats; 0 on the last row", aliases=("kl",)),
    Statistic("cross_entropy", torch.float32, _NAN, "cross-entropy (nats)", "nats", "Reds", reverse=True,
              meaning="-log p(actual next token), nats; NaN at a prompt's last token", aliases=("ce",)),
    Statistic("agrees_with_final", torch.bool, False, "top-1 = final top-1", "bool", "Greys",
              meaning="the row's top-1 equals the final row's top-1"),
    Statistic("target_probs", torch.float32, _NAN, "p({target})", "prob", "Blues", per_target=True,
              meaning="probability of each target (summed over a target's token set)",
              aliases=("target_prob", "prob"), column="p({target})"),
    Statistic("target_ranks", torch.long, -1, "rank of {target}", "rank", "Purples", reverse=True,
              per_target=True, meaning="rank of each target, 1 = most probable (a set: its best token)",
              aliases=("target_rank", "rank"), column="rank({target})"),
)  # fmt: skip
BUILTIN_NAMES = tuple(s.name for s in BUILTIN)

REGISTRY: dict[str, Statistic] = {s.name: s for s in BUILTIN}


def register_statistic(stat: Statistic) -> Statistic:
    """Add a statistic; it must bring ``compute``. It then appears in results, exports and view menus.

    Args:
        stat: the ``Statistic``, with ``compute``: a ``Reduction`` -> (m, R) or, per target, (m, R, T).

    Returns:
        ``stat``.

    Raises:
        LogitLensError: not a Statistic, a built-in name, or no ``compute``.

    Example:
        >>> register_statistic(Statistic("max_logprob", torch.float32, float("nan"), label="max log p",
        ...                              compute=lambda ctx: ctx.logp.amax(-1)))
        >>> lens.run("Hello").stat("max_logprob")   # (N, R, P)
    """
    if not isinstance(stat, Statistic):
        raise LogitLensError(f"register_statistic takes a Statistic, got {type(stat).__name__}")
    if stat.name in BUILTIN_NAMES:
        raise LogitLensError(f"{stat.name!r} is a built-in statistic; choose another name")
    if stat.compute is None:
        raise LogitLensError(f"statistic {stat.name!r} needs compute=: a function of a Reduction")
    if stat.per_k:
        raise LogitLensError(f"statistic {stat.name!r}: only the built-in top-k statistics are per_k")
    REGISTRY[stat.name] = stat
    return stat


def unregister_statistic(name: str) -> None:
    """Remove a registered (not built-in) statistic."""
    if name in BUILTIN_NAMES:
        raise LogitLensError(f"{name!r} is a built-in statistic and cannot be removed")
    REGISTRY.pop(name, None)


def get_statistic(name: str) -> Statistic:
    """The statistic called ``name`` (or one of its older aliases); a one-line error lists the valid names."""
    if name in REGISTRY:
        return REGISTRY[name]
    for stat in REGISTRY.values():
        if name in stat.aliases:
            return stat
    raise LogitLensError(f"unknown statistic {name!r}; choose one of: {', '.join(drawable_names())}")


def extra_statistics() -> list[Statistic]:
    """The registered statistics beyond the built-ins, in registration order."""
    return [s for s in REGISTRY.values() if s.name not in BUILTIN_NAMES]


def drawable(names: Any = None) -> list[Statistic]:
    """Statistics a heatmap can be coloured by (all but the token ids), optionally among ``names``."""
    stats = [s for s in REGISTRY.values() if s.kind != "ids" and s.scale is not None]
    return stats if names is None else [s for s in stats if s.name in set(names)]


def drawable_names() -> list[str]:
    return [s.name for s in drawable()]


# Corpus metrics (``logitlens.evaluate``): name -> (label, unit); its table's columns are name and name_se,
# in this order.
CORPUS_METRICS: dict[str, tuple[str, str]] = {
    "cross_entropy": ("cross-entropy vs next token", "nats"),
    "bits_per_token": ("cross-entropy vs next token", "bits/token"),
    "kl_to_final": ("KL to final row", "nats"),
    "entropy": ("entropy", "nats"),
    "agreement": ("top-1 = final row's top-1", "share"),
    "accuracy": ("top-1 = actual next token", "share"),
}
