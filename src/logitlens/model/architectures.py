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

from torch import nn

from logitlens.errors import LogitLensError

__all__ = ["ARCHITECTURES", "MISSING", "Architecture", "module_at", "register_architecture"]


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


MISSING = object()


def module_at(root: nn.Module, path: str):
    """Resolve a dotted path, or the first of "a.b|c.d" that exists; MISSING when none does."""
    for alternative in path.split("|"):
        obj: Any = root
        for part in alternative.split("."):
            if obj is None:
                break
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part, MISSING)
            if obj is MISSING:
                break
        if obj is not MISSING:
            return obj
    return MISSING
