"""Discovery for families not in the table: the blocks by name; the final norm and any head before the
unembedding by following a probe input's data from the last block's output to the unembedding; the logit
post-processing from config fields named for it, kept only if it reproduces the model's logits.
``architecture_for`` gives the table entry or a discovered one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from logitlens.core.kernels import block_hidden
from logitlens.errors import LogitLensError
from logitlens.model.architectures import ARCHITECTURES, Architecture, module_at
from logitlens.model.decoder import Decoder, check_decoder

__all__ = ["architecture_for", "discover_architecture"]


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
    layers = module_at(model, layers_path)
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
        from logitlens.model.backends.hooks import forward_kwargs

        with torch.inference_mode():
            logits = model(**forward_kwargs(model, ids, None)).logits
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
            if module_at(model, name) is unembed:
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
    layers = next((p for p in candidates if isinstance(module_at(model, p), nn.ModuleList)), None)
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
            (
                f"{parent}.{n}"
                for n in _NORM_NAMES
                if isinstance(module_at(model, f"{parent}.{n}"), nn.Module)
            ),
            None,
        )
        pre = tuple(
            f"{parent}.{n}"
            for n in _PRE_UNEMBED_NAMES
            if isinstance(module_at(model, f"{parent}.{n}"), nn.Module)
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
