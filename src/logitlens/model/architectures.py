"""Where each model family keeps its blocks, final norm and unembedding: one declarative table.

The logit lens decodes a residual-stream vector ``h`` exactly the way the model decodes its last one:

    logits = post(unembed(pre_unembed(final_norm(h))))

where ``h`` is the residual stream after a block or, on a family with several residual streams
(hyper-connections, AltUp, a final mix of block states: ``streams``), the model's own combination of them
(``logitlens.model.streams``).

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
from logitlens.core.kernels import block_hidden
from logitlens.errors import LogitLensError, first_line
from logitlens.model.streams import KINDS as STREAM_KINDS
from logitlens.model.streams import Readout, make_readout


@dataclass(frozen=True)
class Architecture:
    """Module paths and logit post-processing of one model family.

    A path may list alternatives, ``"lm_head|embed_out"``: the first that exists is used (for modules that
    transformers renamed between versions).

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
    vocab_limit: str | None = None  # config attribute: the model keeps only the first n logits (Inkling)
    # Several residual streams combined before the final norm: "hyper" | "altup" | "block_mix" (see
    # logitlens.model.streams), and the path of the model's module that combines them.
    streams: str | None = None
    combine: str | None = None
    # Positions the model prepends inside its blocks (config attribute: CPM-Ant's prompt_length), and
    # whether it reads padding from the token ids, left-padded, ignoring the attention mask (CPM-Ant).
    prefix: str | None = None
    pad_left: bool = False
    # What discovery could not find, in words (set by discover_architecture; not part of the entry).
    missing: str = dataclasses.field(default="", compare=False, repr=False)
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
_LFM2 = _LLAMA.replace(final_norm="model.embedding_norm", mid=None)  # conv or attention blocks
_HYPER = _LLAMA.replace(final_norm="model.norm", streams="hyper", combine="model.hc_head", mid=None)

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
    # Hybrid and recurrent families whose final norm or logit post-processing has its own name
    "recurrent_gemma": _LLAMA.replace(final_norm="model.final_norm", softcap="logits_soft_cap", mid=None),
    "falcon_h1": _LLAMA.replace(
        final_norm="model.final_layernorm", logit_scale="lm_head_multiplier", mid=None
    ),
    "lfm2": _LFM2,
    "lfm2_moe": _LFM2,
    "lfm3": _LFM2,
    "ctrl": _GPT2.replace(
        final_norm="transformer.layernorm", attn="multi_head_attention", mlp="ffn", mid="layernorm2"
    ),
    "xlstm": Architecture(
        layers="backbone.blocks", final_norm="backbone.out_norm", softcap="output_logit_soft_cap", mid=None
    ),
    # Inkling divides the final hidden state by its muP width multiplier before a bias-free head
    "inkling_text": _LLAMA.replace(
        logit_divisor="logits_mup_width_multiplier", vocab_limit="unpadded_vocab_size", mid=None
    ),
    # ModernBERT decoder: a dense + activation + LayerNorm head, then the unembedding ("decoder")
    "modernbert-decoder": _LLAMA.replace(
        final_norm="model.final_norm",
        pre_unembed=("lm_head",),
        unembed="decoder",
        attn="attn",
        mid="mlp_norm",
    ),
    # Several residual streams (logitlens.model.streams): a row is the model's own combination of them
    "deepseek_v4": _HYPER,
    "hy_v4": _HYPER,
    "qwen4_exp_text": _HYPER.replace(final_norm=None, combine="model.hyper_connection_mixer"),
    "gemma3n_text": _GEMMA2.replace(streams="altup", combine="model.altup_unembed_projections", mid=None),
    "inkling2_text": _GEMMA2.replace(streams="block_mix", combine="model.final_input", mid=None),
    # CPM-Ant prepends prompt_length prompt tokens and reads left padding from the ids (pad id 0)
    "cpmant": Architecture(
        layers="cpmant.encoder.layers",
        final_norm="cpmant.encoder.output_layernorm",
        attn="self_att",
        mlp="ffn",
        mid="ffn",
        prefix="prompt_length",
        pad_left=True,
    ),
    "internlm2": Architecture(
        layers="model.layers",
        final_norm="model.norm",
        unembed="output",
        attn="attention",
        mlp="feed_forward",
        mid="ffn_norm",
    ),
}

# Discovery for families not in the table. Blocks: the first path that exists wins. Final norm and
# projections: the modules the data flows through from the last block's output to the unembedding on a
# probe input (whatever their names), else the first name below that exists. Logit post-processing: the
# config fields whose names say so, each tried as what its name suggests, and kept only if it reproduces the
# model's logits on the probe.
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
_BLOCK_NAMES = ("layers", "h", "blocks", "decoder.layers", "encoder.layers")  # also under base_model_prefix
_NORM_NAMES = (
    "norm",
    "ln_f",
    "final_layernorm",
    "final_layer_norm",
    "norm_f",
    "final_norm",
    "ln_out",
    "layer_norm",  # XGLM, BioGPT
    "out_norm",  # xLSTM
    "layernorm",  # CTRL
    "embedding_norm",  # LFM2: applied after the blocks despite its name
)
_PRE_UNEMBED_NAMES = ("project_out",)  # next to the final norm: OPT-350m's projection to the embedding width
# Used without a probe (weights not here): known config names of each kind of post-processing.
_POST_ATTRS = {
    "logit_scale": ("logit_scale", "lm_head_multiplier"),
    "logit_divisor": ("logits_scaling", "logits_mup_width_multiplier"),
    "softcap": ("final_logit_softcapping", "logits_soft_cap", "output_logit_soft_cap"),
}
_NOT_LOGITS = ("attn", "attention", "embedding", "gate", "router", "residual", "ssm", "mlp", "key", "query")


def register_architecture(model_type: str, arch: Architecture) -> None:
    """Add or replace the table entry for ``model_type`` (``config.model_type``)."""
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


def _text_config(model: Any) -> Any:
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _post_candidates(model: Any) -> dict[str, list[str]]:
    """Config fields that name logit post-processing, by kind: a soft-cap ("...logit...soft...cap"), a
    multiplier or a divisor of the logits ("logit"/"lm_head" with "mult"/"scal"), never an attention,
    gate or embedding setting."""
    fields: dict[str, Any] = {}
    for cfg in (model.config, _text_config(model)):
        fields.update({k: v for k, v in vars(cfg).items() if not k.startswith("_")})
    out: dict[str, list[str]] = {"softcap": [], "scale": []}
    for name, value in sorted(fields.items()):
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            continue
        low = name.lower()
        if any(w in low for w in _NOT_LOGITS):
            continue
        if "soft" in low and "cap" in low and any(w in low for w in ("logit", "output", "final")):
            out["softcap"].append(name)
        elif any(w in low for w in ("logit", "lm_head", "unembed")) and any(
            w in low for w in ("mult", "scal")
        ):
            out["scale"].append(name)
    return out


def _probe_ids(model: Any) -> torch.Tensor:
    """The self-check's probe: 8 token ids spread over the vocabulary, (1, 8)."""
    vocab = getattr(_text_config(model), "vocab_size", None) or getattr(model.config, "vocab_size", 256)
    return ((torch.arange(1, 9) * 7919) % int(vocab)).unsqueeze(0)


def _follow(model: Any, layers_path: str, unembed: nn.Module) -> tuple[list[str], bool, Any] | None:
    """On a probe input: the modules the last block's output flows through, in order, up to the
    unembedding (each one's input is the previous one's output), whether the unembedding was reached that
    way, and (last block output (T, d), model logits (T, V)) for trying candidates. None when the model
    cannot run here (weights offloaded or on the meta device, a forward that fails)."""
    layers = _get(model, layers_path)
    param = next(model.parameters(), None)
    if param is None or param.device.type == "meta":
        return None
    inside = {id(m) for m in layers.modules()}
    ancestors = {".".join(layers_path.split(".")[:i]) for i in range(len(layers_path.split(".")))}
    names = {id(m): n for n, m in model.named_modules() if id(m) not in inside and n not in ancestors}
    state: dict[str, Any] = {"h": None}
    calls: list[list[Any]] = []  # [name, first input, output] in the order the calls start
    open_calls: dict[int, list[list[Any]]] = {}

    def last(module, args, output):
        state["h"] = block_hidden(output)

    def pre(module, args, kwargs):
        if state["h"] is not None:
            x = args[0] if args else next(iter(kwargs.values()), None)
            rec = [names[id(module)], x, None]
            calls.append(rec)
            open_calls.setdefault(id(module), []).append(rec)

    def post(module, args, output):
        stack = open_calls.get(id(module))
        if stack:
            stack.pop()[2] = output

    handles = [layers[-1].register_forward_hook(last)]
    for mod in model.modules():
        if id(mod) in names:
            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(mod.register_forward_hook(post))
    ids = _probe_ids(model).to(param.device)
    try:
        from logitlens.model.backends.hooks import _forward_kwargs

        with torch.inference_mode():
            logits = model(**_forward_kwargs(model, ids, None)).logits
    except Exception:  # noqa: BLE001 - discovery falls back to names when the probe cannot run
        return None
    finally:
        for handle in handles:
            handle.remove()
    h = state["h"]
    if not isinstance(h, torch.Tensor):
        return None
    model_type = getattr(model.config, "model_type", "?")
    if h.dim() != 3 or h.shape[0] != 1:
        raise LogitLensError(
            f"model_type '{model_type}' is not in the table and its blocks output shape {tuple(h.shape)} for "
            "one sequence: several residual streams, which discovery cannot combine; pass "
            f"arch=logitlens.Architecture(layers='{layers_path}', final_norm=..., streams='hyper'|'altup'|"
            "'block_mix', combine='<path of the model's module that combines them>') (docs/architectures.md)"
        )
    if h.shape[1] != ids.shape[1]:
        raise LogitLensError(
            f"model_type '{model_type}' is not in the table and its blocks see {h.shape[1]} positions for "
            f"{ids.shape[1]} tokens: the model prepends tokens inside its blocks; pass arch=logitlens."
            f"Architecture(layers='{layers_path}', final_norm=..., prefix='<config field of their count>', "
            "pad_left=<True if it reads left padding from the ids>) (docs/architectures.md)"
        )
    chain: list[str] = []
    cur = h
    reached = False
    for name, x, y in calls:
        if any(name.startswith(c + ".") for c in chain) or not isinstance(x, torch.Tensor):
            continue
        if x.shape == cur.shape and torch.equal(x, cur):
            if _get(model, name) is unembed:
                reached = True
                break
            if not isinstance(y, torch.Tensor):
                break
            chain.append(name)
            cur = y
    return chain, reached, (h[0], logits[0])


def discover_architecture(model: Any) -> Architecture:
    """Guess an Architecture for a family missing from the table (the self-check then verifies it).

    Blocks by name; the final norm and any head before the unembedding by following a probe's data from
    the last block to the unembedding; the logit post-processing from config fields named for it, kept
    only where it reproduces the model's logits on the probe.
    """
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
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    unembed = next((name for name, mod in model.named_modules() if mod is out and name), "lm_head")
    followed = _follow(model, layers, out) if isinstance(out, nn.Module) else None
    missing = ""
    if followed is not None and (followed[0] or followed[1]):
        chain, _, probe = followed
        norm, pre = (chain[0], tuple(chain[1:])) if chain else (None, ())
    else:  # no probe here, or no module reads the last block's output: the names
        probe = followed[2] if followed is not None else None
        if followed is not None:
            missing = (
                "what the model does to the last block's output before its final norm (no module reads it "
                "as it stands: a mix of several states, or an operation that is not a module)"
            )
        norm = next(
            (f"{parent}.{n}" for n in _NORM_NAMES if isinstance(_get(model, f"{parent}.{n}"), nn.Module)),
            None,
        )
        pre = tuple(
            f"{parent}.{n}" for n in _PRE_UNEMBED_NAMES if isinstance(_get(model, f"{parent}.{n}"), nn.Module)
        )
    base = Architecture(layers=layers, final_norm=norm, unembed=unembed, pre_unembed=pre, missing=missing)
    if probe is None:
        cfg = _text_config(model)
        post: dict[str, Any] = {
            field: next(
                (a for a in attrs if getattr(cfg, a, getattr(model.config, a, None)) is not None), None
            )
            for field, attrs in _POST_ATTRS.items()
        }
        return base.replace(**post)
    return _best_post(model, base, *probe)


def _best_post(model: Any, base: Architecture, h: torch.Tensor, logits: torch.Tensor) -> Architecture:
    """``base`` with the config-named post-processing that reproduces ``logits`` from ``h`` on the probe
    (none, a soft-cap, a multiplier or divisor, or a soft-cap after one); ``base`` when none does."""
    found = _post_candidates(model)
    out = model.get_output_embeddings()
    if logits.shape[-1] < out.weight.shape[0]:  # the model keeps the first n logits: a "...vocab..." field
        cfg = _text_config(model)
        base = base.replace(
            vocab_limit=next(
                (k for k, v in sorted(vars(cfg).items()) if "vocab" in k and v == logits.shape[-1]), None
            )
        )
    caps: list[str | None] = [None, *found["softcap"]]
    scales: list[dict[str, str]] = [{}]
    for name in found["scale"]:
        scales += [{"logit_scale": name}, {"logit_divisor": name}]
    for cap in caps:
        for scale in scales:
            arch = base.replace(softcap=cap, **scale)
            try:
                check_decoder(Decoder(model, arch), h, logits)
            except LogitLensError:
                continue
            return arch
    return base


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
        mod = _get(self.layers[index], path)
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
