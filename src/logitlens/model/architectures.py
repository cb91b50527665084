"""Where each model family keeps its blocks, final norm and unembedding: one declarative table.

The logit lens decodes a residual-stream vector ``h`` exactly the way the model decodes its last one:

    logits = post(unembed(pre_unembed(final_norm(h))))

``Architecture`` names those pieces by dotted module path (relative to the ``*ForCausalLM`` object) and the
config attributes of the logit post-processing. ``ARCHITECTURES`` maps ``config.model_type`` to one;
unknown families fall back to discovery over common names. Whatever the source, ``check_decoder`` runs a
probe input at load time and compares the decoded last block with the model's real logits, so a wrong
entry raises instead of drawing a silently wrong lens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from logitlens.core import kernels
from logitlens.errors import LogitLensError, first_line


@dataclass(frozen=True)
class Architecture:
    """Module paths and logit post-processing of one model family (an entry of ``ARCHITECTURES``).

    A path may list alternatives, ``"lm_head|embed_out"``: the first that exists is used (for modules that
    transformers renamed between versions). Every field is commented in the source; the load-time
    self-check proves an entry on the real model.

    Attributes:
        layers: dotted path to the ModuleList of transformer blocks.
        final_norm: dotted path to the final norm (None: no norm).
        unembed: dotted path to the unembedding ``nn.Linear`` (its bias is used when present).
        pre_unembed: modules applied after the norm, before the unembedding (OPT's project_out).
        logit_scale: config attribute: logits *= value (Cohere).
        logit_divisor: config attribute: logits /= value (Granite).
        softcap: config attribute: logits = cap * tanh(logits / cap) (Gemma 2/3).
        attn: the attention module, relative to a block.
        mlp: the MLP module, relative to a block.
        mid: a module whose first input is the residual stream after attention, before the MLP ("attn"
            rows); None where the family has no such point.
        parallel: attention and MLP read the same input (GPT-J, Phi, Cohere, ...): no "attn" row.

    Example:
        >>> Architecture(layers="model.layers", final_norm="model.norm", unembed="lm_head")
    """

    layers: str  # dotted path to the ModuleList of transformer blocks
    final_norm: str | None  # dotted path to the final norm; an attribute that is None is skipped (OPT-350m)
    unembed: str = "lm_head"  # dotted path to the unembedding nn.Linear (bias used when present)
    pre_unembed: tuple[str, ...] = ()  # applied after the norm, before the unembedding (OPT's project_out)
    logit_scale: str | None = None  # config attribute: logits *= value (Cohere)
    logit_divisor: str | None = None  # config attribute: logits /= value (Granite)
    softcap: str | None = None  # config attribute: logits = cap * tanh(logits / cap) (Gemma 2/3)
    # Inside a block (paths relative to it):
    attn: str | None = "self_attn"  # the attention module
    mlp: str | None = "mlp"  # the MLP module
    mid: str | None = None  # a module whose first input is the residual stream after attention, before the
    # MLP ("attn" rows); None where the family has no such point (parallel attention and MLP)
    parallel: bool = False  # attention and MLP read the same input (gpt-j, phi, cohere, ...): no "attn" row
    # The final norm's description (for a component normalised with another vector's statistics); None =
    # found at load time by matching the module's output against RMSNorm / LayerNorm with weight w or 1 + w.
    norm: str | None = None  # "rms" | "layer"
    norm_offset: float | None = None  # weight used as (offset + w): 1.0 for Gemma, 0.0 elsewhere

    def replace(self, **changes) -> Architecture:
        return dataclasses.replace(self, **changes)


_GPT2 = Architecture(layers="transformer.h", final_norm="transformer.ln_f", attn="attn", mid="ln_2")
_GPTJ = _GPT2.replace(mid=None, parallel=True)  # attention and MLP both read ln_1's output
_LLAMA = Architecture(layers="model.layers", final_norm="model.norm", mid="post_attention_layernorm")
_PARALLEL_LLAMA = _LLAMA.replace(mid=None, parallel=True)
_GEMMA2 = _LLAMA.replace(softcap="final_logit_softcapping", mid="pre_feedforward_layernorm")

# model_type -> Architecture. Families share entries; only the differences are spelled out.
ARCHITECTURES: dict[str, Architecture] = {
    # GPT-2 style: transformer.h / transformer.ln_f / lm_head
    "gpt2": _GPT2,
    "gptj": _GPTJ,  # lm_head has a bias
    "gpt_neo": _GPT2,
    "gpt_bigcode": _GPT2,
    "codegen": _GPTJ,
    "bloom": _GPT2.replace(attn="self_attention", mid="post_attention_layernorm"),
    # falcon: parallel or not by config (parallel_attn, new_decoder_architecture): no "attn" row
    "falcon": _GPT2.replace(attn="self_attention", mid=None),
    "mpt": Architecture(
        layers="transformer.blocks", final_norm="transformer.norm_f", attn="attn", mlp="ffn", mid="norm_2"
    ),
    "gpt_neox": Architecture(  # the unembedding is lm_head from transformers 5 on, embed_out before;
        # parallel residual by default (use_parallel_residual): no "attn" row
        layers="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head|embed_out",
        attn="attention",
    ),
    "opt": Architecture(  # pre- or post-norm by config (do_layer_norm_before): no "attn" row
        layers="model.decoder.layers",
        final_norm="model.decoder.final_layer_norm",
        pre_unembed=("model.decoder.project_out",),
        mlp=None,
    ),
    # Llama style: model.layers / model.norm / lm_head
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "mixtral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen2_moe": _LLAMA,
    "qwen3": _LLAMA,
    "qwen3_moe": _LLAMA,
    "gemma": _LLAMA,  # the (1 + weight) RMSNorm lives in the module itself
    "gemma2": _GEMMA2,
    "gemma3_text": _GEMMA2,
    "phi": Architecture(  # lm_head has a bias; parallel attention and MLP
        layers="model.layers", final_norm="model.final_layernorm", parallel=True
    ),
    "phi3": _LLAMA,
    "stablelm": _LLAMA,  # sequential unless config.use_parallel_residual (then no "attn" row)
    "olmo": _LLAMA,  # parameter-free LayerNorm
    "olmo2": _LLAMA.replace(mid="mlp"),  # norms after attention and MLP: the MLP reads the residual
    "olmoe": _LLAMA,
    "starcoder2": _LLAMA,
    "cohere": _PARALLEL_LLAMA.replace(logit_scale="logit_scale"),
    "cohere2": _PARALLEL_LLAMA.replace(logit_scale="logit_scale"),
    "granite": _LLAMA.replace(logit_divisor="logits_scaling"),
    "granitemoe": _LLAMA.replace(logit_divisor="logits_scaling"),
    "smollm3": _LLAMA,
    "exaone4": _LLAMA.replace(mid=None),  # post-norm blocks, not covered by the tests
    "internlm2": Architecture(
        layers="model.layers",
        final_norm="model.norm",
        unembed="output",
        attn="attention",
        mlp="feed_forward",
        mid="ffn_norm",
    ),
}

# Discovery for families not in the table: the first path that exists wins.
_LAYER_CANDIDATES = (
    "model.layers",
    "transformer.h",
    "model.decoder.layers",
    "gpt_neox.layers",
    "transformer.layers",
    "transformer.blocks",
    "model.language_model.layers",
    "language_model.model.layers",
)
_BLOCK_NAMES = ("layers", "h", "blocks", "decoder.layers")  # also tried under model.base_model_prefix
_NORM_NAMES = (
    "norm",
    "ln_f",
    "final_layernorm",
    "final_layer_norm",
    "norm_f",
    "final_norm",
    "ln_out",
    "layer_norm",  # XGLM, BioGPT
)
_PRE_UNEMBED_NAMES = ("project_out",)  # next to the final norm: OPT-350m's projection to the embedding width
_POST_ATTRS = {
    "logit_scale": ("logit_scale",),
    "logit_divisor": ("logits_scaling",),
    "softcap": ("final_logit_softcapping",),
}


def register_architecture(model_type: str, arch: Architecture) -> None:
    """Add or replace the table entry for ``model_type`` (``config.model_type``), for every model loaded after.

    Args:
        model_type: the family's ``config.model_type``.
        arch: where its blocks, final norm, unembedding and post-processing are.

    Raises:
        LogitLensError: ``arch`` is not an ``Architecture``.

    Example:
        >>> register_architecture("my_model", Architecture(layers="backbone.blocks",
        ...                       final_norm="backbone.norm_f", unembed="head"))
    """
    if not isinstance(arch, Architecture):
        raise LogitLensError(f"register_architecture takes an Architecture, got {type(arch).__name__}")
    ARCHITECTURES[model_type] = arch


_MISSING = object()


def _get(root: nn.Module, path: str):
    """Resolve a dotted path, or the first of "a.b|c.d" that exists; _MISSING when none does."""
    for alternative in path.split("|"):
        obj: Any = root
        for part in alternative.split("."):
            if obj is None:
                break
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING:
            return obj
    return _MISSING


def discover_architecture(model: Any) -> Architecture:
    """Guess an Architecture for a family missing from the table (the self-check then verifies it)."""
    model_type = getattr(model.config, "model_type", "?")
    prefix = getattr(model, "base_model_prefix", "") or ""
    candidates = _LAYER_CANDIDATES + tuple(f"{prefix}.{n}" for n in _BLOCK_NAMES if prefix)
    layers = next((p for p in candidates if isinstance(_get(model, p), nn.ModuleList)), None)
    if layers is None:
        raise LogitLensError(
            f"cannot find the transformer blocks of model_type '{model_type}'; "
            "pass arch=logitlens.Architecture(layers=..., final_norm=..., unembed=...) or call "
            f"logitlens.register_architecture('{model_type}', ...)"
        )
    parent = layers.rsplit(".", 1)[0]
    norm = next(
        (f"{parent}.{n}" for n in _NORM_NAMES if isinstance(_get(model, f"{parent}.{n}"), nn.Module)),
        None,
    )
    pre = tuple(
        f"{parent}.{n}" for n in _PRE_UNEMBED_NAMES if isinstance(_get(model, f"{parent}.{n}"), nn.Module)
    )
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    unembed = next((name for name, mod in model.named_modules() if mod is out and name), "lm_head")
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    post: dict[str, Any] = {
        field: next((a for a in attrs if getattr(cfg, a, getattr(model.config, a, None)) is not None), None)
        for field, attrs in _POST_ATTRS.items()
    }
    return Architecture(layers=layers, final_norm=norm, unembed=unembed, pre_unembed=pre, **post)


def architecture_for(model: nn.Module) -> tuple[Architecture, str]:
    """The table entry for this model (or a discovered one) and where it came from."""
    model_type = getattr(model.config, "model_type", None)
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type], "table"
    return discover_architecture(model), "discovered"


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
            mod = _get(model, path)
            if mod is _MISSING:
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
        self.parallel = arch.parallel or any(getattr(text_cfg, f, False) is True for f in _PARALLEL_FLAGS)
        self._final_norm: FinalNorm | None | bool = False  # resolved on first use

    def block_module(self, index: int, path: str | None) -> nn.Module | None:
        """The module at ``path`` inside block ``index``, or None when the path is None or missing."""
        if path is None:
            return None
        mod = _get(self.layers[index], path)
        return mod if isinstance(mod, nn.Module) else None

    def mid_module(self, index: int) -> nn.Module:
        """Block ``index``'s module whose first input is the residual after attention ("attn" rows)."""
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
        return kernels.unembed(h, self.pre, self.unembed_module, self.scale, self.divisor, self.softcap)


def check_decoder(decoder: Decoder, last_block_output: torch.Tensor, model_logits: torch.Tensor) -> float:
    """Compare the decoded last block with the model's logits on a probe; raise on a mismatch.

    last_block_output: (T, d); model_logits: (T, V). Returns the max abs difference.
    """
    try:
        ours = decoder.logits(last_block_output)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:  # e.g. a missing projection
        raise LogitLensError(
            f"self-check failed for model_type '{decoder.model_type}': decoding the last block through "
            f"{decoder.arch} raised {type(exc).__name__}: {first_line(exc)}; fix the entry with "
            "logitlens.register_architecture or pass arch=logitlens.Architecture(...)"
        ) from exc
    ref = model_logits.float().to(ours.device)
    if ours.shape != ref.shape:
        raise LogitLensError(
            f"self-check failed for model_type '{decoder.model_type}': decoded logits have shape "
            f"{tuple(ours.shape)} but the model returns {tuple(ref.shape)}; fix the table entry with "
            "logitlens.register_architecture or pass arch=logitlens.Architecture(...)"
        )
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    tol = (1e-4 if decoder.dtype == torch.float32 else 2e-2) * (1.0 + scale)
    if not diff <= tol:  # also catches NaN
        raise LogitLensError(
            f"self-check failed for model_type '{decoder.model_type}': decoding the last block through "
            f"{decoder.arch} differs from the model's logits by {diff:.3g} (tolerance {tol:.3g}); "
            "fix the entry with logitlens.register_architecture or pass arch=logitlens.Architecture(...)"
        )
    return diff
