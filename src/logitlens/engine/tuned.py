"""The tuned lens (Belrose et al. 2023): one affine translator per row, applied before the final norm.

Row ``j`` of a run ("embed" is 0, "after block i" is i + 1) is decoded as ``h + W_j h + b_j`` (W_j, b_j start
at zero: the identity, i.e. the logit lens), then through the model's own final norm and unembedding. The
output row has no translator. This is the tuned-lens package's parametrisation: its translator ``i``
(``layer_translators.i``, an ``nn.Linear(d, d)``) is ours for row ``i``.

Two folder layouts are read and written:

- logitlens: ``config.json`` + ``translators.safetensors`` (``weight`` (L, d, d), ``bias`` (L, d)); the
  config names the base model, its revision, the layer count, d_model and the unembedding's hash, and what
  the lens was trained on.
- the tuned-lens package: ``config.json`` + ``params.pt`` (the state dict of its ``layer_translators``,
  keys ``"{i}.weight"`` and ``"{i}.bias"``), read with ``torch.load(weights_only=True)``: no object is
  ever unpickled.

Example:
    >>> lens = TunedLens.load("lens/SmolLM2-135M")          # either layout
    >>> logitlens.LogitLens.from_pretrained("default", tuned_lens="lens/SmolLM2-135M").run("Hello")
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from logitlens.core.rows import Row
from logitlens.engine.lenses import LENSES, Lens
from logitlens.errors import LogitLensError, first_line

__all__ = ["TunedLens", "load_lens", "unembed_hash"]

CONFIG = "config.json"
OURS = "translators.safetensors"
PACKAGE = "params.pt"
FORMATS = ("logitlens", "tuned-lens")


def unembed_hash(weight: torch.Tensor) -> str | None:
    """The tuned-lens package's fingerprint of an unembedding matrix (robust to dtype: the rounded corners
    numpy prints); None for a weight that is not here (a meta tensor: a remote model)."""
    if weight.is_meta:
        return None
    import numpy as np

    array = weight.detach().float().cpu().numpy()
    return hashlib.sha256(str.encode(np.array_str(array, precision=1))).hexdigest()


def _lens_unembed_hash(lens: Any) -> str | None:
    """``unembed_hash`` of a LogitLens's unembedding, computed once per weight (it copies the whole matrix
    to the CPU): kept on the lens's decoder, keyed by the weight's storage and version."""
    weight = lens.decoder.weight
    key = (weight.data_ptr(), weight._version)
    cached = lens.decoder.derived.get("unembed_hash")
    if cached is None or cached[0] != key:
        cached = (key, unembed_hash(weight))
        lens.decoder.derived["unembed_hash"] = cached
    return cached[1]


def translator_index(row: Row) -> int | None:
    """Which translator decodes ``row``: 0 for the embeddings, i + 1 after block i; None for sub-block rows."""
    if row.site == "embed":
        return 0
    if row.site == "resid":
        return row.layer + 1
    return None


class TunedLens(Lens, nn.Module):
    """Affine translators ``h + W_j h + b_j`` for the embeddings and every block output but the last
    (Belrose et al. 2023); the output row is never translated.

    ``weight`` (L, d, d) and ``bias`` (L, d) are parameters (``nn.Linear`` layout: ``W_j h`` is
    ``h @ W_j.T``); ``config`` holds what the lens was made for (see the module docstring). Zero weights and
    biases are the identity, i.e. the logit lens. It reads and writes ours (``config.json`` +
    ``translators.safetensors``) and the tuned-lens package's layout (``config.json`` + ``params.pt``).

    Args:
        n_layers: the model's block count L (one translator for the embeddings and each block but the last).
        d_model: the residual stream's width d.
        bias: translators with a bias ``b_j``.
        **config: what the lens was made for (``base_model_name_or_path``, ``unembed_hash``, ``training``
            ...), kept in ``meta``.

    Example:
        >>> tuned = TunedLens.load("lenses/SmolLM2-135M")              # either layout
        >>> lens = logitlens.LogitLens.from_pretrained("default", tuned_lens=tuned)
        >>> tuned.save("lenses/for-the-package", format="tuned-lens")  # the tuned-lens package reads it
    """

    name = "tuned"
    kind: ClassVar[str] = "tuned"

    def __init__(self, n_layers: int, d_model: int, *, bias: bool = True, **config: Any):
        nn.Module.__init__(self)
        for what, value in (("n_layers", n_layers), ("d_model", d_model)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LogitLensError(f"a tuned lens needs a positive integer {what}, got {value!r}")
        self.n_layers = n_layers
        self.d_model = d_model
        self.weight = nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model), requires_grad=bias)
        self.has_bias = bias
        self.meta: dict[str, Any] = dict(config)  # base_model_name_or_path, unembed_hash, training, ...
        self._cast: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def for_model(cls, lens: Any, *, bias: bool = True) -> TunedLens:
        """An identity tuned lens shaped for a ``LogitLens`` (its model's name, layer count, d_model, hash)."""
        model = lens.model
        return cls(
            lens.n_layers,
            int(lens.decoder.weight.shape[1]),
            bias=bias,
            base_model_name_or_path=str(lens.name),
            base_model_revision=getattr(model.config, "_commit_hash", None),
            unembed_hash=_lens_unembed_hash(lens),
        )

    # ---- decoding -------------------------------------------------------------------------------------
    def translate(self, index: int | torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``h + W h + b`` with translator(s) ``index``: an int with h (..., d), or a (R,) tensor with h
        (m, R, d) (one translator per row, in one batched product)."""
        w, b = self._weights(h)
        if isinstance(index, int):
            return h + (h.to(w.dtype) @ w[index].T + b[index]).to(h.dtype)
        idx = index.to(w.device)
        moved = torch.einsum("mri,roi->mro", h.to(w.dtype), w[idx]) + b[idx]
        return h + moved.to(h.dtype)

    def _weights(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.weight, self.bias
        if torch.is_grad_enabled() and w.requires_grad:
            return w.to(h.device), b.to(h.device)  # training: keep the graph
        key = (h.device, w._version, b._version, w.data_ptr(), b.data_ptr())  # a new bias Parameter too
        if key not in self._cast:
            self._cast = {key: (w.detach().to(h.device), b.detach().to(h.device))}
        return self._cast[key]

    def transform(self, row: Row, index: int, h: torch.Tensor) -> torch.Tensor:
        j = self._index(row)
        return h if j is None else self.translate(j, h)

    def _index(self, row: Row) -> int | None:
        j = translator_index(row)
        if j is None:
            raise LogitLensError(
                f"the tuned lens has no translator for the sub-block row {row.name!r}; run it without "
                "include_subblocks=True, or see them through the logit lens: lens=logitlens.IdentityLens()"
            )
        if j > self.n_layers:
            raise LogitLensError(
                f"the tuned lens has {self.n_layers} translators, for a {self.n_layers}-block model; "
                f"row {row.name!r} is past them (was it trained for a deeper model?)"
            )
        return None if j == self.n_layers else j  # the output row: decoded as it is

    def chunk_transform(
        self, rows: Sequence[Row], output_row: int
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        index = [self._index(row) for row in rows]
        keep = [r for r, j in enumerate(index) if j is not None and r != output_row]
        if not keep:
            return None
        sel = torch.tensor(keep)
        which = torch.tensor([index[r] for r in keep])

        def apply(h: torch.Tensor) -> torch.Tensor:
            out = h.clone()
            s = sel.to(h.device)
            out[:, s] = self.translate(which, h.index_select(1, s))
            return out

        return apply

    # ---- compatibility --------------------------------------------------------------------------------
    def check_shape(self, n_layers: int | None, d_model: int | None, model_name: str) -> None:
        """Refuse, in one line, a tuned lens for another block count or width (None: not known, skipped).
        Needs only the model's config: runs before its weights load."""
        trained_for = self.meta.get("base_model_name_or_path") or "an unnamed model"
        for what, ours, theirs in (("blocks", self.n_layers, n_layers), ("d_model", self.d_model, d_model)):
            if theirs is not None and ours != theirs:
                raise LogitLensError(
                    f"this tuned lens was trained for {trained_for} with {what} = {ours}, but "
                    f"{model_name} has {what} = {theirs}; train one for it with `logitlens train-lens`"
                )

    def check(self, lens: Any, *, check_hash: bool = True) -> None:
        """Refuse, in one line, a tuned lens made for another model than ``lens``'s (a LogitLens)."""
        trained_for = self.meta.get("base_model_name_or_path") or "an unnamed model"
        self.check_shape(lens.n_layers, int(lens.decoder.weight.shape[1]), lens.name)
        want = self.meta.get("unembed_hash")
        have = _lens_unembed_hash(lens) if check_hash and want else None
        if have is not None and have != want:
            raise LogitLensError(
                f"this tuned lens was trained for {trained_for}, whose unembedding differs from "
                f"{lens.name}'s (hash mismatch); use a lens trained for this model, or pass "
                "check_hash=False (--no-lens-check) to decode with it anyway"
            )

    # ---- state ----------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "format": "logitlens.tuned_lens",
            "lens_type": "linear_tuned_lens",
            "num_hidden_layers": self.n_layers,
            "d_model": self.d_model,
            "bias": self.has_bias,
            **self.meta,
        }

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        if args or kwargs:  # nn.Module's signature (optimisers, checkpoints)
            return nn.Module.state_dict(self, *args, **kwargs)
        return {"weight": self.weight.detach(), "bias": self.bias.detach()}

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> TunedLens:
        config = dict(config)
        try:
            n_layers, d_model = int(config.pop("num_hidden_layers")), int(config.pop("d_model"))
        except (KeyError, TypeError, ValueError) as exc:
            raise LogitLensError(
                f"a tuned lens config needs integer num_hidden_layers and d_model ({exc})"
            ) from exc
        bias = bool(config.pop("bias", True))
        for key in ("format", "lens_type", "kind", "name"):
            config.pop(key, None)
        lens = cls(n_layers, d_model, bias=bias, **config)
        weight, b = state.get("weight"), state.get("bias")
        if weight is None or tuple(weight.shape) != (n_layers, d_model, d_model):
            got = None if weight is None else tuple(weight.shape)
            raise LogitLensError(
                f"tuned lens weights have shape {got}, expected {(n_layers, d_model, d_model)} "
                f"(num_hidden_layers={n_layers}, d_model={d_model} in {CONFIG})"
            )
        with torch.no_grad():
            lens.weight.copy_(weight.float())
            if b is not None:
                if tuple(b.shape) != (n_layers, d_model):
                    raise LogitLensError(
                        f"tuned lens biases have shape {tuple(b.shape)}, expected {(n_layers, d_model)}"
                    )
                lens.bias.copy_(b.float())
        return lens

    def save(self, directory: str | Path, format: str = "logitlens") -> Path:  # noqa: A002
        """Write the lens into ``directory`` (created if needed).

        Args:
            directory: the lens folder.
            format: "logitlens" (config.json + translators.safetensors) or "tuned-lens" (config.json +
                params.pt, as the tuned-lens package reads them).

        Returns:
            The folder.
        """
        from logitlens.core.files import write_atomic

        if format not in FORMATS:
            raise LogitLensError(f"unknown tuned lens format {format!r}; choose one of: {', '.join(FORMATS)}")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        config = self.config()
        if format == "logitlens":
            from safetensors.torch import save_file

            state = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
            write_atomic(path / OURS, lambda tmp: save_file(state, str(tmp)), "the tuned lens weights")
        else:
            config = {k: config.get(k) for k in _PACKAGE_KEYS}
            package = self._package_state()
            write_atomic(path / PACKAGE, lambda tmp: torch.save(package, tmp), "the tuned lens weights")
        text = json.dumps(config, indent=1)
        write_atomic(path / CONFIG, lambda tmp: tmp.write_text(text), "the tuned lens config")
        return path

    def _package_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for i in range(self.n_layers):
            state[f"{i}.weight"] = self.weight[i].detach().float().cpu().clone()
            if self.has_bias:
                state[f"{i}.bias"] = self.bias[i].detach().float().cpu().clone()
        return state

    @classmethod
    def load(cls, directory: str | Path) -> TunedLens:
        """Read a tuned lens folder in either layout (see the module docstring).

        ``params.pt`` is read with ``torch.load(weights_only=True)``, which never unpickles an object.

        Args:
            directory: a folder with ``config.json`` and ``translators.safetensors`` or ``params.pt``.

        Returns:
            The ``TunedLens``.

        Raises:
            LogitLensError: a missing folder or file, or a config or tensors that do not fit.
        """
        path = Path(directory)
        if not path.is_dir():
            raise LogitLensError(f"tuned lens folder {path} does not exist (or is not a folder)")
        if not (path / CONFIG).is_file():
            raise LogitLensError(
                f"tuned lens folder {path} has no {CONFIG}; it needs {CONFIG} and {OURS} or {PACKAGE}"
            )
        try:
            config = json.loads((path / CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise LogitLensError(f"cannot read {path / CONFIG}: {exc}") from exc
        if not isinstance(config, dict):
            raise LogitLensError(f"{path / CONFIG} holds a {type(config).__name__}, not a JSON object")
        if (path / OURS).is_file():
            from safetensors.torch import load_file

            try:
                state = load_file(str(path / OURS))
            except Exception as exc:  # safetensors raises its own error types
                raise LogitLensError(f"cannot read {path / OURS}: {first_line(exc)}") from None
        elif (path / PACKAGE).is_file():
            state = _read_package_state(path / PACKAGE, config)
        else:
            raise LogitLensError(f"tuned lens folder {path} has {CONFIG} but neither {OURS} nor {PACKAGE}")
        lens = cls.from_state(config, state)
        lens.meta.setdefault("source", str(path))
        return lens

    def __repr__(self) -> str:
        trained_for = self.meta.get("base_model_name_or_path") or "?"
        return f"TunedLens({self.n_layers} translators, d_model={self.d_model}, for {trained_for!r})"


# What the tuned-lens package's TunedLensConfig holds (it warns about, and drops, any other key).
_PACKAGE_KEYS = (
    "base_model_name_or_path",
    "d_model",
    "num_hidden_layers",
    "bias",
    "base_model_revision",
    "unembed_hash",
    "lens_type",
)


def _read_package_state(file: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tuned-lens package's ``params.pt`` as (L, d, d) weight and (L, d) bias tensors."""
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's refusal of a pickled object (a long, multi-line text)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise LogitLensError(
            f"{file} holds a pickled object{what}, not only tensors; it was not loaded (weights_only=True "
            "never runs pickled code): save the translators as a dict of tensors"
        ) from None
    except Exception as exc:  # a damaged or truncated file
        raise LogitLensError(
            f"cannot read {file} as tensors: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise LogitLensError(f"{file} holds a {type(raw).__name__}, not a state dict of translators")
    state = {str(k).removeprefix("layer_translators."): v for k, v in raw.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise LogitLensError(f"{file}: entry {bad[0]!r} is a {type(state[bad[0]]).__name__}, not a tensor")
    try:
        n = int(config["num_hidden_layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LogitLensError(f"{file.parent / CONFIG} needs an integer num_hidden_layers") from exc
    missing = [f"{i}.weight" for i in range(n) if f"{i}.weight" not in state]
    if missing:
        raise LogitLensError(
            f"{file} lacks {len(missing)} of the {n} translators num_hidden_layers asks for "
            f"(first missing: {missing[0]!r}); is num_hidden_layers right?"
        )
    try:
        out = {"weight": torch.stack([state[f"{i}.weight"].float() for i in range(n)])}  # (L, d, d)
        if all(f"{i}.bias" in state for i in range(n)):
            out["bias"] = torch.stack([state[f"{i}.bias"].float() for i in range(n)])  # (L, d)
    except RuntimeError:
        shapes = sorted({tuple(v.shape) for k, v in state.items() if k.endswith(".weight")})
        raise LogitLensError(
            f"{file}: the translators differ in shape ({', '.join(map(str, shapes))}); each must be "
            "(d_model, d_model) with a (d_model,) bias"
        ) from None
    return out


def load_lens(directory: str | Path) -> Lens:
    """Read a lens written by ``Lens.save``, or a tuned lens folder (``config.json``: ``TunedLens.load``, in
    the logitlens or the tuned-lens package layout); tensors load through safetensors or
    ``torch.load(weights_only=True)`` (no object is unpickled)."""
    path = Path(directory)
    if not (path / "lens.json").exists() and (path / "config.json").exists():
        return TunedLens.load(path)
    try:
        info = json.loads((path / "lens.json").read_text())
        kind = info["kind"]
    except (OSError, ValueError, KeyError) as exc:
        raise LogitLensError(f"cannot read a lens from {path}: {type(exc).__name__}: {exc}") from exc
    if kind not in LENSES:
        raise LogitLensError(
            f"unknown lens kind {kind!r} in {path}; known kinds: {', '.join(sorted(LENSES))}"
        )
    state: dict[str, torch.Tensor] = {}
    if (path / "lens.safetensors").exists():
        from safetensors.torch import load_file

        state = load_file(str(path / "lens.safetensors"))
    lens = LENSES[kind].from_state(info.get("config") or {}, state)
    lens.name = info.get("name", lens.name)
    return lens
