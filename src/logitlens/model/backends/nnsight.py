"""The nnsight backend: read the rows through an nnsight trace, here or on NDIF's servers.

``NNsightBackend`` wraps an nnsight model (``TransformersModel``, or its deprecated alias
``LanguageModel``, or a bare ``NNsight``) and implements the Backend protocol with traces:
``capture`` saves the requested rows at the requested positions (B, R, P, d), ``probe`` the last block's
output and the model's logits. The lens then decodes them here, exactly as with forward hooks.

``remote_stats`` runs the WHOLE lens inside one trace, for models that are not here (``remote=True``:
NDIF; ``remote="local"``: nnsight's simulation of it): capture, final norm + unembedding by calling the
modules, post-processing, the reduction to statistics chunked under the memory budget, and the
self-check against the model's own logits. Only the small statistic tensors come back. The code that
enters the trace is ``kernels.py`` (shipped by value with ``nnsight.register``) and the trace block below,
which names nothing but locals, ``torch`` and nnsight's ``save``.

nnsight is optional: ``pip install 'logitlens[remote]'``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from logitlens.core import kernels
from logitlens.core.rows import Row
from logitlens.core.stats import REGISTRY, extra_statistics
from logitlens.errors import LogitLensError
from logitlens.model.ndif import MAX_REQUEST_TOKENS, request_groups, require_ndif, require_nnsight

if TYPE_CHECKING:
    from logitlens.model.decoder import Decoder

__all__ = ["NNsightBackend", "RemoteRun", "is_nnsight_model", "nnsight_backend", "wrap_model"]

_REMOTE_CHOICES = "True (NDIF), 'local' (nnsight's simulation), an NDIF URL, or False (a plain local trace)"


def is_nnsight_model(obj: Any) -> bool:
    """Whether ``obj`` is an nnsight model object (found without importing nnsight)."""
    return hasattr(obj, "_module") and any(
        c.__module__.partition(".")[0] == "nnsight" for c in type(obj).__mro__
    )


def wrap_model(obj: Any) -> tuple[torch.nn.Module, Any, Callable[[Decoder], NNsightBackend]] | None:
    """For an nnsight model object: (the transformers model inside, its tokenizer or None, a factory
    decoder -> NNsightBackend); None for anything else (a transformers model goes through unchanged).

    Example:
        >>> model, tok, make = wrap_model(nnsight.LanguageModel("openai-community/gpt2"))
    """
    if not is_nnsight_model(obj):
        return None
    return obj._module, getattr(obj, "tokenizer", None), lambda decoder: NNsightBackend(obj, decoder)


def nnsight_backend(model: torch.nn.Module, decoder: Decoder, tokenizer=None) -> NNsightBackend:
    """An NNsightBackend over a loaded transformers model (``backend="nnsight"``): wrapped in nnsight's
    ``TransformersModel`` when a tokenizer is given (it needs one), else in a bare ``NNsight``."""
    nnsight = require_nnsight()
    if tokenizer is not None:
        return NNsightBackend(nnsight.TransformersModel(model, tokenizer=tokenizer), decoder)
    return NNsightBackend(nnsight.NNsight(model), decoder)


@dataclass(frozen=True)
class RemoteRun:
    """What the last ``remote_stats`` call cost: requests sent, bytes of statistics that came back, the
    bytes the classic recipe downloads for the same work (layers x positions x vocab in fp32), the
    server-side self-check's max abs difference, and the wall time."""

    requests: int
    bytes_returned: int
    recipe_bytes: int
    self_check_diff: float | None
    seconds: float

    @property
    def ratio(self) -> float:
        """bytes_returned / recipe_bytes (the target is at most 1/1000)."""
        return self.bytes_returned / max(1, self.recipe_bytes)


class NNsightBackend:
    """Capture through an nnsight trace; ``remote_stats`` runs the whole lens inside one (local or NDIF)."""

    name = "nnsight"

    def __init__(self, model: Any, decoder: Decoder):
        if not is_nnsight_model(model):
            raise LogitLensError(
                f"NNsightBackend wraps an nnsight model (TransformersModel, LanguageModel, NNsight), "
                f"got {type(model).__name__}"
            )
        why = _unsupported(decoder)
        if why:
            raise LogitLensError(
                f"the nnsight backend reads one residual stream per row at the user's positions, but "
                f"model_type '{decoder.model_type}' {why}: use the default hooks backend"
            )
        self.nnmodel = model
        self.decoder = decoder
        self._envoys = {id(e._module): e for e in model.modules()}
        self.last_run: RemoteRun | None = None

    @property
    def runs_here(self) -> bool:
        """False for a model whose weights are not loaded (nnsight's meta model, built to run remotely):
        a local trace would load them first."""
        return bool(getattr(self.nnmodel, "dispatched", True))

    def remote_backend(self, model: Any = None, decoder: Any = None, tokenizer=None) -> NNsightBackend:
        """This backend runs remote traces itself."""
        return self

    def envoy(self, module: torch.nn.Module):
        """The nnsight envoy of a submodule of the wrapped model."""
        try:
            return self._envoys[id(module)]
        except KeyError:
            raise LogitLensError(
                f"module {type(module).__name__} is not part of the nnsight model's tree"
            ) from None

    @staticmethod
    def _when(row: Row) -> tuple[int, int]:
        """Where in the forward pass a row is read: its block, then embed < attn < resid inside it."""
        return (0, 0) if row.site == "embed" else (row.layer, 1 if row.site == "attn" else 2)

    def _read(self, row: Row) -> tuple[Any, str]:
        """(envoy, "input" | "output") that holds the row's residual stream."""
        if row.site == "embed":
            return self.envoy(self.decoder.layers[0]), "input"
        if row.site == "attn":
            return self.envoy(self.decoder.mid_module(row.layer)), "input"
        return self.envoy(self.decoder.layers[row.layer]), "output"

    def _reads(self, rows: Sequence[Row]) -> tuple[list[tuple[Any, str]], list[int]]:
        """The reads in execution order (nnsight serves values in the order they happen, whatever the
        order of the rows) and, for each row, the index of its read."""
        first: dict[tuple[int, int], Row] = {}
        for row in rows:
            first.setdefault(self._when(row), row)
        order = sorted(first)
        return [self._read(first[k]) for k in order], [order.index(self._when(r)) for r in rows]

    # ---- the Backend protocol: local traces ---------------------------------------------------------
    def capture(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gather: torch.Tensor, rows: Sequence[Row]
    ) -> torch.Tensor:
        """input_ids, attention_mask: (B, T) right-padded; gather: (B, P) positions -> (B, R, P, d)."""
        nnsight = require_nnsight()
        nm = self.nnmodel
        reads, index = self._reads(rows)
        hidden = kernels.block_hidden
        save = nnsight.save
        batch = torch.arange(input_ids.shape[0]).unsqueeze(1)  # (B, 1)
        captured = None
        with torch.no_grad(), nm.trace(input_ids, attention_mask=attention_mask) as tracer:
            got = []
            for envoy, kind in reads:
                h = hidden(envoy.input if kind == "input" else envoy.output)  # (B, T, d)
                got.append(h[batch.to(h.device), gather.to(h.device)])  # (B, P, d)
            captured = save(torch.stack([got[i] for i in index], 1))  # (B, R, P, d)
            tracer.stop()  # nothing after the last row is needed
        return captured.to(self.decoder.device)

    def probe(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T) ids -> (the last block's output (T, d), the model's logits (T, V))."""
        nnsight = require_nnsight()
        nm = self.nnmodel
        last = self.envoy(self.decoder.layers[-1])
        hidden = kernels.block_hidden
        save = nnsight.save
        h_last = logits = None
        with torch.no_grad(), nm.trace(input_ids):
            h_last = save(hidden(last.output)[0])
            logits = save(nm.output.logits[0])
        return h_last, logits

    # ---- the whole lens inside one trace ------------------------------------------------------------
    def remote_stats(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        gather: torch.Tensor,
        rows: Sequence[Row],
        cells: Sequence[tuple[int, int]],
        next_ids: torch.Tensor,
        targets: Sequence[Sequence[int]] = (),
        top_k: int = 10,
        budget_bytes: int = 512 * 2**20,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        remote: bool | str = True,
        *,
        max_request_tokens: int = MAX_REQUEST_TOKENS,
    ) -> dict[str, torch.Tensor]:
        """Run capture, decode, reduction and self-check inside nnsight traces; return what
        ``decode_stats`` returns: name -> (M, R, ...) on the CPU in the registry's dtypes.

        input_ids, attention_mask: (B, T) right-padded; gather: (B, P) positions; cells: the M (b, j)
        pairs to decode (prompt b, column j: position gather[b, j]); next_ids: (M,) -1 where none;
        targets: token ids per target; transform: (m, R, d) -> (m, R, d) for each chunk, run inside the
        trace (it must be shippable: a function defined in your own code, using torch only);
        remote: True (NDIF), "local" (nnsight's simulation), an NDIF URL, or False (a plain local trace).
        Prompts are split into requests of at most ``max_request_tokens`` padded tokens. The last row
        must be the model's output; it is checked against the model's logits on the server's side.
        """
        self._prepare_remote(remote)
        started = time.perf_counter()
        ids_cpu, mask_cpu, gather_cpu = input_ids.cpu(), attention_mask.cpu(), gather.cpu()
        lengths = mask_cpu.sum(1).tolist()
        rows = list(rows)
        checked = bool(rows) and rows[-1] == Row(self.decoder.n_layers - 1, "resid")
        if not checked:
            raise LogitLensError(
                f"the last row must be the model's output (row '{self.decoder.n_layers - 1}'): statistics "
                "are measured against it and the self-check compares it with the model's logits"
            )
        plan = kernels.chunk_plan(len(rows), self.decoder.vocab_size, budget_bytes)
        targets_t = [torch.as_tensor(list(t), dtype=torch.long) for t in targets]
        extras = [(s.name, s.compute) for s in extra_statistics() if s.compute is not None]
        parts, where, checks = [], [], []
        returned = 0
        groups = request_groups(lengths, max_request_tokens)
        for group in groups:
            local = {b: i for i, b in enumerate(group)}
            picked = [k for k, (b, _) in enumerate(cells) if b in local]
            if not picked:
                continue
            t_max = max(lengths[b] for b in group)
            bi = torch.tensor([local[cells[k][0]] for k in picked], dtype=torch.long)  # (M,) prompt
            pos = gather_cpu[  # (M,) position
                torch.tensor([cells[k][0] for k in picked]), torch.tensor([cells[k][1] for k in picked])
            ]
            stats = self._one_request(
                ids_cpu[group, :t_max],
                mask_cpu[group, :t_max],
                bi,
                pos,
                rows,
                next_ids.cpu()[picked],
                targets_t,
                extras,
                top_k,
                plan,
                transform,
                remote,
            )
            returned += _saved_bytes({"stats": stats})
            checks.append(stats.pop("self_check"))  # [max |decoded - model|, max |model|]
            parts.append(stats)
            where.extend(picked)
        diff, scale = torch.stack(checks).amax(0).tolist()  # NaN stays NaN
        self._raise_on_mismatch(diff, scale)
        out = _in_cell_order(parts, where)
        self.last_run = RemoteRun(
            requests=len(parts),
            bytes_returned=returned,
            recipe_bytes=self.decoder.n_layers * len(cells) * self.decoder.vocab_size * 4,
            self_check_diff=diff,
            seconds=time.perf_counter() - started,
        )
        return out

    def _prepare_remote(self, remote: bool | str) -> None:
        """Refuse, in one line, a ``remote`` value or a model that cannot run remotely; check NDIF's key and
        server for a real remote run; register the in-trace kernels to be shipped by value."""
        if not (remote is True or remote is False or remote is None or isinstance(remote, str)):
            raise LogitLensError(f"remote must be {_REMOTE_CHOICES}; got {remote!r}")
        if isinstance(remote, str) and remote != "local" and not remote.startswith(("http://", "https://")):
            raise LogitLensError(f"remote must be {_REMOTE_CHOICES}; got {remote!r}")
        nnsight = require_nnsight()
        if remote and not hasattr(self.nnmodel, "to_model_key"):
            raise LogitLensError(
                f"remote runs need nnsight's TransformersModel (or LanguageModel), not a bare "
                f"{type(self.nnmodel).__name__}: give LogitLens the model's tokenizer, or wrap it yourself"
            )
        if remote is True or (isinstance(remote, str) and remote != "local"):
            require_ndif(remote)  # a missing key or server fails here, at once, in one line
        if remote:
            nnsight.register(kernels)  # ship the in-trace functions by value: NDIF has no logitlens

    def _one_request(
        self,
        input_ids,
        attention_mask,
        bi,
        pos,
        rows,
        next_ids,
        targets,
        extras,
        top_k,
        plan,
        transform,
        remote,
    ) -> dict[str, torch.Tensor]:
        """One trace: the block names only locals (tensors, envoys, floats, kernels' functions), torch and
        nnsight's save, so that it serializes for NDIF without logitlens."""
        nnsight = require_nnsight()
        nm = self.nnmodel
        reads, index = self._reads(rows)
        pre = [self.envoy(m) for m in self.decoder.pre]
        head = self.envoy(self.decoder.unembed_module)
        post = (self.decoder.scale, self.decoder.divisor, self.decoder.softcap, self.decoder.vocab_limit)
        hidden = kernels.block_hidden
        lens_stats = kernels.lens_stats
        save = nnsight.save
        trace_kwargs = {"attention_mask": attention_mask}
        if remote:
            trace_kwargs["remote"] = remote
        stats = None
        with torch.no_grad(), nm.trace(input_ids, **trace_kwargs):
            got = []
            for envoy, kind in reads:
                h = hidden(envoy.input if kind == "input" else envoy.output)  # (B, T, d)
                got.append(h[bi.to(h.device), pos.to(h.device)].detach())  # (M, d)
            captured = torch.stack([got[i] for i in index], 1)  # (M, R, d)
            logits = nm.output.logits  # (B, T, V): the model's own, for the self-check
            reference = logits[bi.to(logits.device), pos.to(logits.device)].detach()  # (M, V)
            stats = save(
                lens_stats(
                    captured,
                    pre,
                    head,
                    post,
                    top_k=top_k,
                    next_ids=next_ids,
                    targets=targets,
                    extras=extras,
                    plan=plan,
                    transform=transform,
                    reference=reference,
                )
            )
        return {k: v.cpu() for k, v in stats.items()}

    def _raise_on_mismatch(self, diff: float, scale: float) -> None:
        half = self.decoder.dtype in (torch.float16, torch.bfloat16)
        tol = (2e-2 if half else 1e-4) * (1.0 + scale)
        if not diff <= tol:  # also catches NaN
            raise LogitLensError(
                f"server-side self-check failed for model_type '{self.decoder.model_type}': the decoded last "
                f"block differs from the model's logits by {diff:.3g} (tolerance {tol:.3g}); the server's "
                "transformers may lay out block outputs differently, or the table entry is wrong: fix it "
                "with logitlens.register_architecture or pass arch=logitlens.Architecture(...)"
            )


def _unsupported(decoder: Decoder) -> str | None:
    """Why a family's rows cannot be read by a trace as they stand (None when they can)."""
    if decoder.readout is not None:
        return f"combines several residual streams before its final norm ({decoder.readout.kind})"
    if decoder.prefix or decoder.pad_left:
        return "prepends tokens inside its blocks and reads left padding from the token ids"
    return None


def _saved_bytes(obj: Any) -> int:
    """Bytes of ``obj`` as torch.save writes it (what NDIF sends back, before compression)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_protocol=4)
    return buffer.tell()


def _in_cell_order(parts: list[dict[str, torch.Tensor]], where: list[int]) -> dict[str, torch.Tensor]:
    """The requests' statistics joined and put back in the order of the cells (``where``: each returned
    line's cell index), in the registry's dtypes."""
    order = torch.empty(len(where), dtype=torch.long)
    order[torch.tensor(where, dtype=torch.long)] = torch.arange(len(where))
    out = {}
    for name in parts[0]:
        value = torch.cat([p[name] for p in parts])[order]
        dtype = REGISTRY[name].dtype if name in REGISTRY else value.dtype
        out[name] = value.to(dtype)
    return out
