"""Tiny random causal LMs of every supported family, built offline from in-code configs.

Each model is 3 blocks of width 32 over a 256-token vocabulary, in fp32 and eval mode (default attention),
with weights perturbed so that nothing the lens must reproduce is a no-op: norm weights ~ N(1, std 0.5),
every bias (the lm_head's of GPT-J and Phi included) ~ N(0, std 0.5), matrices ~ N(0, std 1/sqrt(width)),
embeddings untied, and logit post-processing (Gemma 2/3 soft-capping at 5, Cohere's logit_scale 0.25,
Granite's logits_scaling 4) set to values that change the logits.

Every family here runs with an empty block list too (``truncated(name, 0)``), which gives row 0's reference.

``build(name)`` is cached: each model is built once per test session. ``SPECS[name].blocks`` names the
ModuleList of blocks independently of ``logitlens.ARCHITECTURES`` (the tests cut it to build references).

Example:
    >>> model = build("llama")
    >>> model(torch.tensor([[3, 4, 5]])).logits.shape
    torch.Size([1, 3, 256])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

VOCAB = 256  # every tiny model's vocabulary
D = 32  # every tiny model's width
SEED = 0

# Small, valid and untied: shared by the Llama-style configs (hidden 32, 4 heads of 8, 2 KV heads).
_LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=D,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)
_TOKEN_IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)  # inside the tiny vocabulary, for all


@dataclass(frozen=True)
class Spec:
    """How to build one tiny model: its model_type, config kwargs and where its blocks are."""

    model_type: str  # config.model_type (the key of logitlens.ARCHITECTURES)
    blocks: str  # dotted path to the ModuleList of blocks, written here independently of the table
    config: dict = field(default_factory=dict)  # kwargs for the family's config class


def _llama_like(model_type: str, **overrides) -> Spec:
    return Spec(model_type, "model.layers", {**_LLAMA_LIKE, **overrides})


SPECS: dict[str, Spec] = {
    "gpt2": Spec(
        "gpt2",
        "transformer.h",
        dict(vocab_size=VOCAB, n_embd=D, n_layer=3, n_head=4, n_positions=64, tie_word_embeddings=False),
    ),
    "gpt_neox": Spec(
        "gpt_neox",
        "gpt_neox.layers",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
    ),
    "gptj": Spec(  # lm_head has a bias
        "gptj",
        "transformer.h",
        dict(
            vocab_size=VOCAB,
            n_embd=D,
            n_layer=3,
            n_head=4,
            rotary_dim=4,
            n_positions=64,
            tie_word_embeddings=False,
        ),
    ),
    "gpt_neo": Spec(  # one global and one local (window 4) attention layer, then a global one
        "gpt_neo",
        "transformer.h",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            num_layers=3,
            num_heads=4,
            attention_types=[[["global", "local"], 1], [["global"], 1]],
            window_size=4,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
    ),
    "opt": Spec(
        "opt",
        "model.decoder.layers",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=3,
            ffn_dim=64,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=D,
            tie_word_embeddings=False,
        ),
    ),
    # OPT-350m style: embeddings of width 16 projected in and out (project_in / project_out).
    "opt-project": Spec(
        "opt",
        "model.decoder.layers",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=3,
            ffn_dim=64,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=16,
            tie_word_embeddings=False,
        ),
    ),
    # Post-LN OPT: model.decoder.final_layer_norm is None, blocks' outputs go straight to the unembedding.
    "opt-postln": Spec(
        "opt",
        "model.decoder.layers",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=3,
            ffn_dim=64,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=D,
            do_layer_norm_before=False,
            tie_word_embeddings=False,
        ),
    ),
    "llama": _llama_like("llama", attention_bias=True, mlp_bias=True),
    "mistral": _llama_like("mistral", sliding_window=4),
    "mixtral": _llama_like("mixtral", sliding_window=4, num_local_experts=4, num_experts_per_tok=2),
    "qwen2": _llama_like("qwen2"),
    "qwen3": _llama_like("qwen3", head_dim=8),
    "gemma": _llama_like("gemma", head_dim=8),
    "gemma2": _llama_like(
        "gemma2",
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=4,
        final_logit_softcapping=5.0,  # small enough to bite
        attn_logit_softcapping=20.0,
    ),
    "gemma3_text": _llama_like(
        "gemma3_text",
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        final_logit_softcapping=5.0,  # None by default in Gemma 3: set so the lens must apply it
    ),
    "phi": Spec(  # lm_head has a bias; final norm is model.final_layernorm
        "phi",
        "model.layers",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=64,
            qk_layernorm=True,
            tie_word_embeddings=False,
        ),
    ),
    "phi3": _llama_like("phi3", original_max_position_embeddings=64),
    "falcon": Spec(
        "falcon",
        "transformer.h",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=64,
            bias=True,
            tie_word_embeddings=False,
        ),
    ),
    "bloom": Spec(  # alibi; word_embeddings_layernorm before block 0
        "bloom",
        "transformer.h",
        dict(vocab_size=VOCAB, hidden_size=D, n_layer=3, n_head=4, tie_word_embeddings=False),
    ),
    "stablelm": _llama_like("stablelm", use_qkv_bias=True, qk_layernorm=True),
    "olmo": _llama_like("olmo", clip_qkv=2.0),  # parameter-free LayerNorm
    "olmo2": _llama_like("olmo2"),
    "cohere": _llama_like("cohere", logit_scale=0.25, use_qk_norm=True),
    "granite": _llama_like(
        "granite",
        logits_scaling=4.0,
        embedding_multiplier=3.0,
        residual_multiplier=0.5,
        attention_multiplier=0.2,
    ),
    "starcoder2": _llama_like("starcoder2", sliding_window=4, use_bias=True),
    # Families NOT in logitlens.ARCHITECTURES: the lens must discover them (and the self-check verify it).
    "persimmon": Spec(  # final norm is model.final_layernorm
        "persimmon",
        "model.layers",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=64,
            qk_layernorm=True,
            tie_word_embeddings=False,
        ),
    ),
    "xglm": Spec(  # final norm is model.layer_norm; scaled, sinusoidal-position embeddings
        "xglm",
        "model.layers",
        dict(
            vocab_size=VOCAB,
            d_model=D,
            ffn_dim=64,
            num_layers=3,
            attention_heads=4,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
    ),
    "biogpt": Spec(  # blocks under the base_model_prefix (biogpt.layers), unembedding output_projection
        "biogpt",
        "biogpt.layers",
        dict(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
    ),
}

# Families whose final norm, head or logit post-processing goes by another name, and families whose residual
# is several streams (logitlens.model.streams) or whose blocks see prepended tokens (CPM-Ant).
SPECS.update(
    {
        "recurrent_gemma": Spec(  # RG-LRU + local attention; soft-cap from config.logits_soft_cap
            "recurrent_gemma",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                lru_width=D,
                conv1d_width=4,
                attention_window_size=8,
                block_types=["recurrent", "attention", "recurrent"],
                logits_soft_cap=5.0,
                tie_word_embeddings=False,
            ),
        ),
        "falcon_h1": Spec(  # Mamba-2 + attention in each block; logits *= lm_head_multiplier
            "falcon_h1",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                max_position_embeddings=64,
                mamba_n_heads=4,
                mamba_d_head=8,
                mamba_d_ssm=32,
                mamba_n_groups=1,
                mamba_d_state=8,
                mamba_chunk_size=4,
                mamba_expand=1,
                lm_head_multiplier=0.25,
                embedding_multiplier=2.0,
                tie_word_embeddings=False,
            ),
        ),
        "lfm2": _llama_like(  # short convolutions + attention; final norm model.embedding_norm
            "lfm2", layer_types=["conv", "full_attention", "conv"], block_auto_adjust_ff_dim=False
        ),
        "lfm2_moe": _llama_like(
            "lfm2_moe",
            moe_intermediate_size=16,
            num_dense_layers=1,
            num_experts=4,
            num_experts_per_tok=2,
            layer_types=["conv", "full_attention", "conv"],
        ),
        "lfm3": _llama_like(
            "lfm3", head_dim=8, sliding_window=4, layer_types=["conv", "sliding_attention", "full_attention"]
        ),
        "ctrl": Spec(  # final norm transformer.layernorm
            "ctrl",
            "transformer.h",
            dict(
                vocab_size=VOCAB,
                n_embd=D,
                n_layer=3,
                n_head=4,
                dff=64,
                n_positions=64,
                tie_word_embeddings=False,
            ),
        ),
        "xlstm": Spec(  # final norm backbone.out_norm; soft-cap from config.output_logit_soft_cap
            "xlstm",
            "backbone.blocks",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                embedding_dim=D,
                num_hidden_layers=3,
                num_blocks=3,
                num_heads=2,
                chunk_size=4,
                output_logit_soft_cap=5.0,
                use_cache=False,
                tie_word_embeddings=False,
            ),
        ),
        "inkling_text": Spec(  # hidden / logits_mup_width_multiplier before the head; logits cut to 252
            "inkling_text",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                unpadded_vocab_size=252,
                hidden_size=D,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                swa_num_attention_heads=4,
                swa_num_key_value_heads=2,
                swa_head_dim=8,
                sliding_window_size=4,
                layer_types=["hybrid_sliding", "hybrid", "hybrid_sliding"],
                mlp_layer_types=["dense", "sparse", "sparse"],
                moe_intermediate_size=16,
                n_routed_experts=4,
                num_experts_per_tok=2,
                n_shared_experts=1,
                logits_mup_width_multiplier=4.0,
                max_position_embeddings=64,
                tie_word_embeddings=False,
            ),
        ),
        "modernbert-decoder": Spec(  # dense + activation + LayerNorm head (lm_head), unembedding "decoder"
            "modernbert-decoder",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=64,
                sliding_window=4,
                layer_types=["full_attention", "sliding_attention", "full_attention"],
                decoder_bias=True,
                classifier_bias=True,
                cls_token_id=1,
                sep_token_id=2,
                tie_word_embeddings=False,
            ),
        ),
        "deepseek_v4": Spec(  # 3 hyper-connection streams, collapsed by model.hc_head
            "deepseek_v4",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                moe_intermediate_size=16,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=1,
                head_dim=16,
                qk_rope_head_dim=8,
                num_experts_per_tok=2,
                n_routed_experts=4,
                n_shared_experts=1,
                max_position_embeddings=64,
                layer_types=[
                    "heavily_compressed_attention",
                    "compressed_sparse_attention",
                    "heavily_compressed_attention",
                ],
                mlp_layer_types=["hash_moe", "moe", "moe"],
                hc_mult=3,
                hc_sinkhorn_iters=4,
                sliding_window=4,
                index_n_heads=2,
                index_head_dim=8,
                num_nextn_predict_layers=0,
                tie_word_embeddings=False,
            ),
        ),
        "hy_v4": Spec(  # 3 hyper-connection streams, collapsed by model.hc_head
            "hy_v4",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                intermediate_size=64,
                moe_intermediate_size=16,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=4,
                head_dim=8,
                max_position_embeddings=64,
                n_routed_experts=4,
                n_shared_experts=1,
                num_experts_per_tok=2,
                qk_nope_head_dim=8,
                qk_rope_head_dim=8,
                v_head_dim=8,
                qk_head_dim=16,
                mlp_layer_types=["dense", "sparse", "sparse"],
                layer_types=["indexed_attention"] * 3,
                indexer_types=["full", "shared", "full"],
                index_head_dim=8,
                index_n_heads=2,
                hc_mult=3,
                tie_word_embeddings=False,
            ),
        ),
        "qwen4_exp_text": Spec(  # 3 streams flattened (B, T, 3 * d), mixed by model.hyper_connection_mixer
            "qwen4_exp_text",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                max_position_embeddings=64,
                linear_conv_kernel_dim=4,
                linear_key_head_dim=8,
                linear_value_head_dim=8,
                linear_num_key_heads=2,
                linear_num_value_heads=4,
                moe_intermediate_size=16,
                shared_expert_intermediate_size=16,
                num_experts_per_tok=2,
                num_experts=4,
                layer_types=["linear_attention", "indexed_attention", "linear_attention"],
                hc_count=3,
                hc_lowrank=8,
                indexer_n_heads=2,
                indexer_kv_heads=1,
                indexer_head_dim=8,
                indexer_budget=4,
                indexer_compress_ratio=2,
                tie_word_embeddings=False,
            ),
        ),
        "gemma3n_text": _llama_like(  # AltUp: 3 stacked predictions (3, B, T, d), read out after the blocks
            "gemma3n_text",
            head_dim=8,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            final_logit_softcapping=5.0,
            vocab_size_per_layer_input=VOCAB,
            hidden_size_per_layer_input=8,
            altup_num_inputs=3,
            num_kv_shared_layers=0,
            activation_sparsity_pattern=[0.0, 0.0, 0.0],
            laurel_rank=4,
        ),
        "inkling2_text": Spec(  # block attention residuals: the final input mixes the block states
            "inkling2_text",
            "model.layers",
            dict(
                vocab_size=VOCAB,
                unpadded_vocab_size=VOCAB,
                hidden_size=D,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                swa_num_attention_heads=4,
                swa_num_key_value_heads=2,
                swa_head_dim=8,
                sliding_window_size=4,
                log_scaling_n_floor=4,
                layer_types=["hybrid_sliding", "hybrid", "hybrid_sliding"],
                moe_intermediate_size=16,
                n_routed_experts=4,
                num_experts_per_tok=2,
                n_layers_per_attn_res_block=2,  # boundaries at layers 0 and 2
                final_logit_softcapping=5.0,
                max_position_embeddings=64,
                tie_word_embeddings=False,
            ),
        ),
        "cpmant": Spec(  # 4 prompt tokens prepended inside the model; pads read from the ids (id 0, left)
            "cpmant",
            "cpmant.encoder.layers",
            dict(
                vocab_size=VOCAB,
                hidden_size=D,
                num_attention_heads=4,
                dim_head=8,
                dim_ff=64,
                num_hidden_layers=3,
                position_bias_num_buckets=32,
                position_bias_max_distance=64,
                prompt_types=3,
                prompt_length=4,
                segment_types=4,
                tie_word_embeddings=False,
            ),
        ),
    }
)

# The families the issue asks for (one model each), plus the OPT variants.
FAMILIES = [
    "gpt2",
    "gpt_neox",
    "gptj",
    "gpt_neo",
    "opt",
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi",
    "phi3",
    "falcon",
    "bloom",
    "stablelm",
    "olmo",
    "olmo2",
    "cohere",
    "granite",
    "starcoder2",
]
VARIANTS = ["opt-project", "opt-postln"]
UNLISTED = ["persimmon", "xglm", "biogpt"]  # model_types missing from the table: found by discovery
ALL = FAMILIES + VARIANTS + UNLISTED
# Issue 23: renamed final norms and post-processing (single stream), then several streams or a prefix.
RENAMED = [
    "recurrent_gemma",
    "falcon_h1",
    "lfm2",
    "lfm2_moe",
    "lfm3",
    "ctrl",
    "xlstm",
    "inkling_text",
    "modernbert-decoder",
]
STREAMS = ["deepseek_v4", "hy_v4", "qwen4_exp_text", "gemma3n_text", "inkling2_text"]  # multi-stream
MORE = RENAMED + STREAMS + ["cpmant"]


def perturb(model: nn.Module) -> nn.Module:
    """Make every norm, bias and matrix matter (in place, seeded by the caller).

    Norm weights ~ N(1, 0.5), biases (and hyper-connection gate offsets and scales) ~ N(0, 0.5), matrices ~ N(0, 1/sqrt(last dim)) (std); the unembedding
    is doubled so logits span a few units and soft-capping at 5 changes them.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(
                ("bias", "hc_base", "hc_scale", "_hc.base", "_hc.scale")
            ):  # hyper-connection gates too
                p.normal_(0.0, 0.5)
            elif p.dim() >= 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
        for mod in model.modules():
            w = getattr(mod, "weight", None)
            if "Norm" in type(mod).__name__ and isinstance(w, torch.Tensor) and w.dim() == 1:
                w.normal_(1.0, 0.5)
        model.get_output_embeddings().weight.mul_(2.0)
    return model


@cache
def build(name: str) -> nn.Module:
    """The tiny fp32 eval-mode model ``name`` (a key of SPECS), built once."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    spec = SPECS[name]
    config = CONFIG_MAPPING[spec.model_type](**{**_TOKEN_IDS, **spec.config})
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return perturb(model).eval()


def module_at(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path (plain getattr: independent of logitlens' own resolver)."""
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def truncated(name: str, n_blocks: int) -> nn.Module:
    """A deep copy of ``build(name)`` that keeps only its first ``n_blocks`` blocks (0 allowed)."""
    import copy

    spec = SPECS[name]
    model = copy.deepcopy(build(name))
    parent_path, attr = spec.blocks.rsplit(".", 1)
    parent = module_at(model, parent_path)
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:n_blocks]))
    return model.eval()
