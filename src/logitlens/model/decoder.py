"""The decoder: the model's own final norm, head and logit post-processing as the lens applies them to
every row (``Decoder``), the final norm's description (``FinalNorm``), and the load-time self-check
(``check_decoder``) that compares the decoded last block with the model's real logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from logitlens.core import kernels
from logitlens.core.kernels import block_hidden
from logitlens.errors import LogitLensError, first_line
from logitlens.model.architectures import MISSING, Architecture, module_at
from logitlens.model.streams import KINDS as STREAM_KINDS
from logitlens.model.streams import Readout, make_readout

__all__ = ["Decoder", "FinalNorm", "check_decoder", "describe_norm", "execution_device"]


def execution_device(module: nn.Module, tensor: torch.Tensor | None = None) -> torch.device:
    """The device ``module`` computes on: accelerate's execution device where a device map placed a hook on
    it (offloaded weights are meta tensors then), else the device of ``tensor`` (default: its first
    parameter), else the CPU."""
    hook = getattr(module, "_hf_hook", None)
    for h in (hook, *getattr(hook, "hooks", ())):  # an AlignDevicesHook, or a SequentialHook of them
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev)
    if tensor is None:
        tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None and tensor.device.type != "meta" else torch.device("cpu")


_PARALLEL_FLAGS = ("use_parallel_residual", "parallel_attn", "parallel_residual")  # config switches


@dataclass(frozen=True)
class FinalNorm:
    """The final norm as arithmetic: ``norm(x) = (x - mean) * scale(x) * (offset + weight) + bias``.

    kind "rms": no centring, scale = 1 / sqrt(mean(x^2) + eps); kind "layer": centred,
    scale = 1 / sqrt(var(x) + eps); "identity": no norm at all. ``apply(x, scale=s)`` normalises ``x``
    with another vector's statistics (a residual component with the output row's scale: direct logit
    attribution's frozen-norm linearisation).
    """

    kind: str
    eps: float = 0.0
    weight: torch.Tensor | None = None  # (d,)
    bias: torch.Tensor | None = None  # (d,)
    offset: float = 0.0

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.kind == "layer" else x

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., 1) the factor the norm multiplies the (centred) vector by, in fp32."""
        if self.kind == "identity":
            return torch.ones_like(x[..., :1], dtype=torch.float32)
        c = self.centre(x.float())
        return torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + self.eps)

    def apply(self, x: torch.Tensor, scale: torch.Tensor | None = None, bias: bool = True) -> torch.Tensor:
        """(..., d) -> (..., d) in fp32; ``scale`` (..., 1) overrides x's own; ``bias=False`` leaves it out."""
        if self.kind == "identity":
            return x.float()
        y = self.centre(x.float()) * (self.scale(x) if scale is None else scale)
        if self.weight is not None:
            y = y * (self.offset + self.weight.float().to(y.device))
        if bias and self.bias is not None:
            y = y + self.bias.float().to(y.device)
        return y


def describe_norm(module: nn.Module | None, arch: Architecture, d_model: int) -> FinalNorm | None:
    """The FinalNorm that reproduces ``module`` on a probe, or None when no description matches.

    Tries RMSNorm and LayerNorm with weight w and 1 + w (or only the ones the Architecture names) and keeps
    the first whose output equals the module's (relative 1e-5 in fp32): a description is never guessed.
    """
    if module is None:
        return FinalNorm("identity")
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    weight = weight if isinstance(weight, torch.Tensor) and weight.dim() == 1 else None
    bias = bias if isinstance(bias, torch.Tensor) and bias.dim() == 1 else None
    eps = next(
        (
            float(v)
            for a in ("variance_epsilon", "eps", "epsilon")
            if isinstance(v := getattr(module, a, None), float | int)
        ),
        1e-5,
    )
    ref_param = weight if weight is not None else next(module.parameters(), None)
    device = ref_param.device if ref_param is not None else torch.device("cpu")
    dtype = ref_param.dtype if ref_param is not None else torch.float32
    if device.type == "meta":
        return None
    g = torch.Generator().manual_seed(0)
    d = weight.shape[0] if weight is not None else d_model
    x = (torch.randn(4, d, generator=g) * 3 + 0.5).to(device=device, dtype=dtype)
    try:
        with torch.inference_mode():
            want = module(x.unsqueeze(0))[0].float()
    except Exception:  # noqa: BLE001 - a norm that cannot run on a probe has no description
        return None
    kinds = (arch.norm,) if arch.norm else ("rms", "layer")
    offsets = (arch.norm_offset,) if arch.norm_offset is not None else (0.0, 1.0)
    tol = (1e-5 if dtype == torch.float32 else 2e-2) * (1 + want.abs().max().item())
    for kind in kinds:
        for offset in offsets:
            if weight is None and offset:
                continue
            cand = FinalNorm(kind, eps, weight, bias, offset)
            with torch.inference_mode():
                got = cand.apply(x)
            if got.shape == want.shape and (got - want).abs().max().item() <= tol:
                return cand
    return None


class Decoder:
    """The resolved modules of an Architecture: turns residual vectors into the model's logits.

    ``logits(h)`` maps ``(N, d_model)`` residual vectors to ``(N, vocab)`` fp32 logits with the model's own
    final norm (statistics computed for each vector), unembedding (+bias) and post-processing.
    """

    def __init__(self, model: nn.Module, arch: Architecture):
        self.arch = arch
        self.model_type = getattr(model.config, "model_type", "?")

        def need(path: str, what: str):
            mod = module_at(model, path)
            if mod is MISSING:
                raise LogitLensError(
                    f"model_type '{self.model_type}' has no module '{path}' ({what}); "
                    f"pass arch=logitlens.Architecture(...) or call logitlens.register_architecture"
                    f"('{self.model_type}', ...) with the right path"
                )
            return mod

        self.layers = need(arch.layers, "the blocks")
        if not isinstance(self.layers, nn.ModuleList | nn.Sequential) or len(self.layers) == 0:
            raise LogitLensError(
                f"'{arch.layers}' of model_type '{self.model_type}' is not a non-empty list of blocks; "
                f"pass arch=logitlens.Architecture(layers=...) or call logitlens.register_architecture"
                f"('{self.model_type}', ...) with the path of the blocks' ModuleList"
            )
        # Norm and pre-unembedding modules that are None in this checkpoint are skipped (OPT-350m).
        self.norm_module = need(arch.final_norm, "the final norm") if arch.final_norm else None
        projections = [need(p, "a projection before the unembedding") for p in arch.pre_unembed]
        self.pre = [m for m in (self.norm_module, *projections) if m is not None]
        unembed = need(arch.unembed, "the unembedding")
        self.unembed_module = unembed
        weight = getattr(unembed, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise LogitLensError(
                f"'{arch.unembed}' of model_type '{self.model_type}' has no 2-D weight to unembed with"
            )
        self.weight = weight  # (V, d) the model's own tensor, never copied
        # Values derived from the weights that are costly to recompute (a tuned lens's unembedding hash),
        # by name: (key the value was computed for, value). Callers check the key before using a value.
        self.derived: dict[str, tuple[Any, Any]] = {}
        self.bias = getattr(unembed, "bias", None)  # (V,) or None
        cfg: Any = model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

        def attr(name: str | None) -> float | None:
            if name is None:
                return None
            value = getattr(text_cfg, name, getattr(cfg, name, None))
            return None if value is None else float(value)

        self.scale = attr(arch.logit_scale)
        self.divisor = attr(arch.logit_divisor)
        self.softcap = attr(arch.softcap)
        limit = attr(arch.vocab_limit)
        # The model keeps only the first n logits (n < V): a view of the weight's first rows, never a copy.
        self.vocab_limit = int(limit) if limit is not None and int(limit) < weight.shape[0] else None
        if self.vocab_limit is not None:
            self.weight = weight[: self.vocab_limit]
            self.bias = None if self.bias is None else self.bias[: self.vocab_limit]
        self.prefix = int(attr(arch.prefix) or 0)  # positions the model prepends inside its blocks
        self.pad_left = arch.pad_left
        if arch.streams is not None and arch.streams not in STREAM_KINDS:
            raise LogitLensError(
                f"unknown Architecture(streams={arch.streams!r}); choose one of: {', '.join(STREAM_KINDS)}"
            )
        combine = (
            need(arch.combine, "the module combining the streams") if arch.streams and arch.combine else None
        )
        if arch.streams and combine is None:
            raise LogitLensError(
                f"Architecture(streams={arch.streams!r}) of model_type '{self.model_type}' needs "
                "combine=<path of the model's module that combines the streams>"
            )
        self.readout: Readout | None = make_readout(arch.streams, combine)
        self.parallel = arch.parallel or any(getattr(text_cfg, f, False) is True for f in _PARALLEL_FLAGS)
        self._final_norm: FinalNorm | None | bool = False  # resolved on first use

    def block_module(self, index: int, path: str | None) -> nn.Module | None:
        """The module at ``path`` inside block ``index``, or None when the path is None or missing."""
        if path is None:
            return None
        mod = module_at(self.layers[index], path)
        return mod if isinstance(mod, nn.Module) else None

    def embed_state(self, args, kwargs) -> torch.Tensor:
        """(B, T, d) the embedding row from block 0's forward-pre-hook arguments (combined streams on a
        multi-stream family)."""
        if self.readout is not None:
            return self.readout.embed(args, kwargs)
        return args[0] if args else kwargs["hidden_states"]

    def block_state(self, block: nn.Module, args, kwargs, output) -> torch.Tensor:
        """(B, T, d) a block's row from its forward hook's view (its input and output): the residual
        stream, or on a multi-stream family the model's own combination of its streams."""
        if self.readout is not None:
            return self.readout.resid(block, args, kwargs, output)
        return block_hidden(output)

    def refuse_streams(self, what: str, why: str | None = None) -> None:
        """One line for ``what`` (e.g. "attribution") on a multi-stream family; nothing otherwise."""
        if self.readout is not None:
            raise LogitLensError(
                f"{what} is not defined for model_type '{self.model_type}': "
                f"{why or self.readout.no_attribution}"
            )

    def mid_module(self, index: int) -> nn.Module:
        """Block ``index``'s module whose first input is the residual after attention ("attn" rows)."""
        if self.readout is not None:
            raise LogitLensError(
                f"model_type '{self.model_type}' has no 'attn' rows: {self.readout.no_subblocks}; run "
                "without sub-block rows"
            )
        mod = None if self.parallel else self.block_module(index, self.arch.mid)
        if mod is None:
            if self.parallel:
                why = "its attention and MLP run in parallel, so there is no point between them"
            elif self.arch.mid is None:  # sequential (OPT, discovered families) but no entry names the point
                why = "its architecture names no module between attention and MLP (Architecture.mid)"
            else:
                why = f"block {index} has no module '{self.arch.mid}'"
            raise LogitLensError(
                f"model_type '{self.model_type}' has no 'attn' rows: {why}; run without sub-block rows or "
                "give Architecture(mid=...) the module whose input is the residual stream after attention"
            )
        return mod

    @property
    def final_norm(self) -> FinalNorm | None:
        """The final norm as arithmetic (``FinalNorm``), or None when no description reproduces it."""
        if self._final_norm is False:
            self._final_norm = describe_norm(self.norm_module, self.arch, self.weight.shape[1])
        return self._final_norm  # type: ignore[return-value]

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        """Where the unembedding runs (for a module offloaded by accelerate: its execution device)."""
        return execution_device(self.unembed_module, self.weight)

    @property
    def offloaded(self) -> bool:
        """True when accelerate keeps the unembedding's weight off the device (CPU or disk offload): its
        tensor is then a meta placeholder, and only a call of the module (whose hook loads the weight)
        decodes."""
        return self.weight.device.type == "meta"

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @torch.inference_mode()
    def logits(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(N, d) residual vectors -> (N, V) fp32 logits, exactly as the model decodes its last block.

        ``out``: an (N, V) fp32 buffer on the weight's device to write into and return; reusing one across
        chunks spares the page faults of a fresh large allocation per product.
        """
        if self.offloaded:  # weights loaded by accelerate's hooks during each call of the modules
            got = self.logits_functional(h.to(self.device))
            return got if out is None else out.copy_(got)
        x = h.to(self.device).unsqueeze(0)  # (1, N, d): norms see the shape they were written for
        for mod in self.pre:
            x = mod(x)
        x = x[0]
        if out is not None and self.weight.dtype == torch.float32 and x.dtype == torch.float32:
            if self.bias is None:  # the same kernels F.linear calls, writing into the buffer
                torch.mm(x, self.weight.t(), out=out)
            else:
                torch.addmm(self.bias, x, self.weight.t(), out=out)
        else:
            prod = F.linear(x, self.weight, self.bias)  # (N, V) in the model's dtype, like the model
            out = prod.float() if out is None else out.copy_(prod)
        if self.scale is not None:
            out.mul_(self.scale)
        if self.divisor is not None:
            out.div_(self.divisor)
        if self.softcap is not None:
            out.div_(self.softcap).tanh_().mul_(self.softcap)
        return out

    def logits_functional(self, h: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, V) fp32 logits by calling the model's own modules (final norm, projections, the
        unembedding module itself): no weight is read and no buffer reused, the form a remote trace needs
        (reading a weight on a remote server copies it). Equal to ``logits`` (tested)."""
        return kernels.unembed(
            h, self.pre, self.unembed_module, self.scale, self.divisor, self.softcap, vocab=self.vocab_limit
        )


def check_decoder(
    decoder: Decoder, last_block_output: torch.Tensor, model_logits: torch.Tensor, *, discovered: bool = False
) -> float:
    """Compare the decoded last block with the model's logits on a probe; raise on a mismatch.

    last_block_output: (T, d); model_logits: (T, V). Returns the max abs difference. ``discovered``: the
    Architecture came from discovery, and a mismatch names what it found and what it could not.
    """
    fix = (
        _discovery_fix(decoder)
        if discovered
        else "fix the entry with logitlens.register_architecture or pass arch=logitlens.Architecture(...)"
    )
    try:
        ours = decoder.logits(last_block_output)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:  # e.g. a missing projection
        raise LogitLensError(
            f"self-check failed for model_type '{decoder.model_type}': decoding the last block through "
            f"{decoder.arch} raised {type(exc).__name__}: {first_line(exc)}; {fix}"
        ) from exc
    ref = model_logits.float().to(ours.device)
    if ours.shape != ref.shape:
        raise LogitLensError(
            f"self-check failed for model_type '{decoder.model_type}': decoded logits have shape "
            f"{tuple(ours.shape)} but the model returns {tuple(ref.shape)}; {fix}"
        )
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    tol = (1e-4 if decoder.dtype == torch.float32 else 2e-2) * (1.0 + scale)
    if not diff <= tol:  # also catches NaN
        if discovered:
            fix = _diagnosis(ours, ref, tol) + fix
        raise LogitLensError(
            f"self-check failed for model_type '{decoder.model_type}': decoding the last block through "
            f"{decoder.arch} differs from the model's logits by {diff:.3g} (tolerance {tol:.3g}); {fix}"
        )
    return diff


def _diagnosis(ours: torch.Tensor, ref: torch.Tensor, tol: float) -> str:
    """What a constant factor between our logits and the model's says (empty when it says nothing)."""
    c = ((ours * ref).sum() / (ours * ours).sum().clamp_min(1e-30)).item()
    if (ours * c - ref).abs().max().item() <= tol:
        return (
            f"the model's logits are ours times {c:.4g}: a logit multiplier the config does not name "
            "(give Architecture(logit_scale=<config field>) or logit_divisor=); "
        )
    return ""


def _discovery_fix(decoder: Decoder) -> str:
    """One clause: what discovery found, which part it could not find, and the Architecture to pass."""
    a = decoder.arch
    found = [f"blocks '{a.layers}'", f"unembedding '{a.unembed}'"]
    found.append(f"final norm '{a.final_norm}'" if a.final_norm else "no final norm")
    if a.pre_unembed:
        found.append(f"head {list(a.pre_unembed)}")
    post = [f"{k}='{v}'" for k, v in (("softcap", a.softcap), ("logit_scale", a.logit_scale)) if v]
    post += [f"logit_divisor='{a.logit_divisor}'"] if a.logit_divisor else []
    found.append(", ".join(post) if post else "no logit multiplier, divisor or soft-cap named in the config")
    missing = a.missing or (
        "the final norm (no module reads the last block's output on a probe)"
        if not a.final_norm
        else "what happens between the final norm and the logits (a module, a multiplier or a soft-cap "
        "under a name discovery does not know)"
    )
    return (
        f"discovery found {', '.join(found)} but could not find {missing}; pass it by hand: "
        f"arch=logitlens.Architecture(layers='{a.layers}', final_norm=..., unembed='{a.unembed}', "
        "pre_unembed=(...), logit_scale=..., logit_divisor=..., softcap=...) or call "
        f"logitlens.register_architecture('{decoder.model_type}', ...) (docs/architectures.md)"
    )
