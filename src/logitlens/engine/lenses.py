"""Lenses: what is done to a residual vector before the model's own final norm and unembedding decode it.

A ``Lens`` has a name (it goes into ``meta["lens"]``), a per-row transform of residual vectors, and a state
it can save and load. The logit lens is the identity (``IdentityLens``); the tuned lens adds one affine
translator per row. A lens never touches the output row unless it says so (``touches_output``): KL to
final and agreement are always measured against the model's own output.

Example:
    >>> lens = logitlens.LogitLens(model, tok, lens=IdentityLens())
    >>> FunctionLens(lambda row, h: h * 0.5, name="halved")   # any (row index, (N, d)) -> (N, d)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from logitlens.core.rows import Row
from logitlens.errors import LogitLensError

__all__ = ["LENSES", "FunctionLens", "IdentityLens", "Lens"]

LENSES: dict[str, type[Lens]] = {}  # saved lens kind -> class, filled by subclasses with a ``kind``


class Lens:
    """Base class: the identity on every row. Subclasses override ``transform`` (and the state methods).

    ``transform(row, index, h)``: ``row`` the Row being decoded, ``index`` its index in the run's rows,
    ``h`` (N, d) residual vectors; returns (N, d). A subclass with a ``kind`` is registered in ``LENSES``
    so that a saved lens of that kind loads back.

    Attributes:
        name: what ``meta["lens"]`` says ("logit" for the identity).
        kind: the key a saved lens is read back by.
        touches_output: True only for a lens that must transform the model's output row too.

    Example:
        >>> class Scaled(Lens):
        ...     name = "scaled"
        ...     def transform(self, row, index, h):
        ...         return h * 1.1
        >>> lens.run("Hello", lens=Scaled())
    """

    name: str = "logit"
    kind: ClassVar[str] = ""  # the key a saved lens is read back by (``logitlens.engine.tuned.load_lens``)
    touches_output: bool = False  # True only for a lens that must transform the model's output row too

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            LENSES[cls.kind] = cls

    def transform(self, row: Row, index: int, h: torch.Tensor) -> torch.Tensor:
        return h

    @property
    def is_identity(self) -> bool:
        return type(self).transform is Lens.transform

    def chunk_transform(
        self, rows: Sequence[Row], output_row: int
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The transform of a chunk of rows (m, R, d) -> (m, R, d), leaving ``output_row`` alone (unless
        ``touches_output``); None for the identity, so that the fast path skips it."""
        if self.is_identity:
            return None
        rows = list(rows)

        def apply(h: torch.Tensor) -> torch.Tensor:
            out = [
                h[:, r] if (r == output_row and not self.touches_output) else self.transform(row, r, h[:, r])
                for r, row in enumerate(rows)
            ]
            return torch.stack(out, dim=1)

        return apply

    # ---- state --------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What ``from_state`` needs besides the tensors (JSON-ready)."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Lens:
        return cls()

    def fingerprint(self) -> str:
        """What identifies this lens's decoding, for a resumed run to compare: its name, and for a lens with
        tensors (a tuned lens) the first 16 hex digits of a sha256 over their names, dtypes, shapes and
        bytes, e.g. ``"tuned:3f2a..."``. Two lenses with equal fingerprints decode alike."""
        state = self.state_dict()
        if not state:
            return self.name
        digest = hashlib.sha256(self.kind.encode())
        for key in sorted(state):
            t = state[key].detach().contiguous().cpu()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"{self.name}:{digest.hexdigest()[:16]}"

    def save(self, directory: str | Path) -> Path:
        """Write ``lens.json`` (kind, name, config) and ``lens.safetensors`` (the tensors) into ``directory``."""
        if not self.kind:
            raise LogitLensError(f"the {type(self).__name__} has no saved form (it is defined by code)")
        from safetensors.torch import save_file

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / "lens.json").write_text(
            json.dumps({"kind": self.kind, "name": self.name, "config": self.config()}, indent=1)
        )
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / "lens.safetensors"))
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class IdentityLens(Lens):
    """The logit lens: every row decoded as it is (the default lens).

    Example:
        >>> lens.run("Hello", lens=IdentityLens())   # one run through the plain logit lens
    """

    name = "logit"
    kind = "identity"


class FunctionLens(Lens):
    """A lens from a function ``fn(row_index, h) -> h`` (the ``transform=`` argument of ``run``).

    Args:
        fn: (row index, (N, d) residual vectors) -> (N, d).
        name: what ``meta["lens"]`` says.

    Example:
        >>> lens.run("Hello", lens=FunctionLens(lambda row, h: h * 1.1, name="scaled"))
    """

    def __init__(self, fn: Callable[[int, torch.Tensor], torch.Tensor], name: str = "custom"):
        if not callable(fn):
            raise LogitLensError(f"a lens function must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name

    def transform(self, row: Row, index: int, h: torch.Tensor) -> torch.Tensor:
        return self.fn(index, h)
