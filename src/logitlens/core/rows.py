"""Rows: which residual-stream vectors the lens decodes, as (layer, site) specs.

A row is where in the model a vector is read:

- ``Row(-1, "embed")``: the residual stream entering block 0 (embeddings, with any scaling or position
  embeddings the model adds); named ``"embed"``, labelled "embeddings", depth 0.
- ``Row(i, "resid")``: the output of block ``i`` (0-based), named ``"i"``, labelled "after block i",
  depth ``(i + 1) / L``.
- ``Row(i, "attn")``: inside block ``i``, after its attention and before its MLP (sequential blocks only),
  named ``"i.attn"``, depth ``(i + 0.5) / L``.

Depth runs from 0 (embeddings) to 1 (the last block, the model's output) so that models of different
depth line up; views take it from the row, never from the row's index in a result.

Example:
    >>> [r.name for r in default_rows(3)]
    ['embed', '0', '1', '2']
"""

from __future__ import annotations

from dataclasses import dataclass

from logitlens.errors import LogitLensError

__all__ = ["SITES", "Row", "default_rows", "parse_row_name"]

SITES = ("embed", "resid", "attn")  # where a row is read; component outputs come with attribution


@dataclass(frozen=True)
class Row:
    """One decoded row: ``layer`` is the block index (-1 for "embed"), ``site`` where in it the row is read.

    Attributes:
        layer: the block index, -1 for the embeddings.
        site: "embed" (the input to block 0), "resid" (the block's output) or "attn" (after the block's
            attention, before its MLP).

    Example:
        >>> Row(12).name, Row(12).label, Row(12, "attn").name, Row(-1, "embed").name
        ('12', 'after block 12', '12.attn', 'embed')
    """

    layer: int
    site: str = "resid"

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise LogitLensError(f"unknown row site {self.site!r}; choose one of: {', '.join(SITES)}")
        if (self.site == "embed") != (self.layer == -1):
            raise LogitLensError(
                f"row layer {self.layer} with site {self.site!r}: -1 is the embeddings' layer alone"
            )

    @property
    def name(self) -> str:
        if self.site == "embed":
            return "embed"
        return str(self.layer) if self.site == "resid" else f"{self.layer}.{self.site}"

    @property
    def label(self) -> str:
        """How texts people read name the row: "embeddings", "after block 12", "block 12 after attention"."""
        if self.site == "embed":
            return "embeddings"
        return f"after block {self.layer}" if self.site == "resid" else f"block {self.layer} after attention"

    def depth(self, n_layers: int) -> float:
        """0 for the embeddings, 1 for the output of the last of ``n_layers`` blocks."""
        if self.site == "embed":
            return 0.0
        done = self.layer + (1.0 if self.site == "resid" else 0.5)  # blocks (or halves) applied
        return done / max(1, n_layers)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "site": self.site, "name": self.name}


def default_rows(n_layers: int, include_subblocks: bool = False) -> list[Row]:
    """The embedding row, then each block's output (preceded by its "attn" row when asked for)."""
    rows = [Row(-1, "embed")]
    for i in range(n_layers):
        if include_subblocks:
            rows.append(Row(i, "attn"))
        rows.append(Row(i, "resid"))
    return rows


def parse_row_name(name: str) -> Row:
    """The inverse of ``Row.name``: "embed", "12", "12.attn"."""
    if name == "embed":
        return Row(-1, "embed")
    layer, _, site = name.partition(".")
    if not layer.isdigit():
        raise LogitLensError(f"not a row name: {name!r} (expected 'embed', '3' or '3.attn')")
    return Row(int(layer), site or "resid")
