"""Direct logit attribution: how much each component of the residual stream adds to one token's logit.

The residual stream at the last block's output is a sum of what every component wrote into it:

    x_final = x_embed + sum_i (x_attn_i + x_mlp_i)

The model decodes it as ``logits = post(W_U proj(norm(x_final)) + b_U)``. The norm is not linear, so the
attribution uses the standard linearisation: the final norm **frozen at the output row's statistics**.
With ``s = 1 / rms(x_final)`` (RMSNorm) or ``s = 1 / sqrt(var(x_final) + eps)`` (LayerNorm, which also
centres each component: subtracting a vector's mean over d is linear), ``g`` the norm's weight (``1 + w``
for Gemma-style norms) and ``u = W_U[t] - baseline`` (``baseline`` the mean of W_U's rows, or W_U[b] for a
second token b):

    contribution(c) = post_scale * u . proj(g * centre(x_c) * s)
    bias            = post_scale * (u . proj(b_norm) + b_U[t] - baseline_bias)

These lines sum exactly to the output row's logit difference ``logit[t] - mean(logits)`` (or
``logit[t] - logit[b]``), because ``x_final`` is their sum and everything after the frozen norm is affine.
``post_scale`` is Cohere's ``logit_scale`` or 1 / Granite's ``logits_scaling``: contributions are in the
logits the model returns. Soft-capping (Gemma 2/3) is not linear: contributions sum to the logit
difference **before** the cap; ``df.attrs["logit_diff_capped"]`` holds the capped one.

Components, in model order (``component`` column):

- ``"embed"``: the residual stream entering block 0 (embeddings with any scaling or position embeddings);
- sequential blocks with a point between attention and MLP (``Architecture.mid``): ``"i.attn"`` =
  residual after attention - residual entering block i, ``"i.mlp"`` = block output - residual after
  attention. These are differences of the residual stream itself, so they are what the block *adds*,
  whatever it does on the way (Gemma 2/3 and OLMo 2 post-norms, Granite's residual multiplier, BLOOM's
  in-module residual additions): exact for every such family in the table;
- parallel blocks (GPT-J, GPT-NeoX, Phi, Falcon, Cohere ...: attention and MLP read the same input):
  ``"i.attn"`` = the attention module's output (these blocks add it unchanged) and ``"i.mlp"`` = block
  output - block input - attention output (the MLP's output, plus anything else the block adds);
- sequential blocks whose Architecture names no such point (OPT, families found by discovery): one line
  per block, ``"i"`` = block output - block input; give ``Architecture(mid=...)`` to split them;
- ``"bias"`` (last, only for models with a final-norm bias, a projection bias or an unembedding bias): the
  biases that act after the norm.

Example:
    >>> df = lens.attribute("The Eiffel Tower is in the city of", " Paris")
    >>> df.nlargest(3, "contribution")[["component", "contribution"]]
    >>> print(attribution_summary(df))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from logitlens.core.kernels import block_hidden
from logitlens.core.rows import default_rows
from logitlens.core.tokens import TokenNamer, visible
from logitlens.errors import LogitLensError
from logitlens.model.backends.hooks import capture_rows

if TYPE_CHECKING:
    import pandas as pd

    from logitlens.engine.lens import LogitLens
    from logitlens.model.decoder import Decoder, FinalNorm

__all__ = ["KINDS", "attribute", "attribution_summary", "component_plan"]

KINDS = ("embed", "attn", "mlp", "block", "bias")  # the ``kind`` column: what a component is
SUMMARY_N = 3  # the summary names this many components that pushed the target up, and down


def component_plan(decoder: Decoder) -> str:
    """How blocks split into components: "split" (attention, then MLP, from the residual stream after
    attention), "parallel" (the attention module's output, then the rest of the block) or "block" (one
    line per block)."""
    if decoder.parallel:
        mods = [decoder.block_module(i, decoder.arch.attn) for i in range(decoder.n_layers)]
        return "parallel" if all(m is not None for m in mods) else "block"
    mods = [decoder.block_module(i, decoder.arch.mid) for i in range(decoder.n_layers)]
    return "split" if all(m is not None for m in mods) else "block"


def attribute(
    lens: LogitLens, prompt, target: str | int, *, position: int = -1, baseline: str | int = "mean"
) -> pd.DataFrame:
    """Direct logit attribution of ``target`` at one position of one prompt (see the module docstring).

    prompt: a text or a list of token ids (one prompt); target: a token string that is ONE token (mind the
    leading space: " Paris") or a token id; position: the index of the position whose next-token logits are
    explained (negative counts from the end); baseline: "mean" (the mean logit over the vocabulary) or a
    second token (string or id): the contributions then explain ``logit[target] - logit[baseline]``.

    Returns a DataFrame with one line per component in model order: ``component`` ("embed", "0.attn",
    "0.mlp", ..., "bias"), ``label``, ``layer`` (-1 for the embeddings, none for the biases), ``kind``
    (embed / attn / mlp / block / bias), ``depth`` (0 embeddings .. 1 last block), ``contribution`` (logits)
    and ``cumulative`` (the running sum: its last value is the logit difference). ``df.attrs`` holds the
    target, baseline, position, token, the output row's logit difference (``logit_diff``, computed through
    the model's own modules; ``sum_error`` = sum of the lines - it), the linearisation in words and the
    summary (``attribution_summary``). The model's own final norm and unembedding are used; a tuned lens
    plays no part.
    """
    decoder = lens.decoder
    norm = _check_can_attribute(lens)
    ids = _prompt_ids(lens, prompt)
    pos = _position(position, len(ids))
    namer = lens.namer
    t_id, t_name = _token(lens, namer, target, "target")
    b_id, b_name = (None, "mean") if _is_mean(baseline) else _token(lens, namer, baseline, "baseline")
    if b_id == t_id:
        raise LogitLensError(
            f"the baseline is the target itself ({t_name!r}): the difference is 0; give another token or "
            "'mean'"
        )
    plan = component_plan(decoder)
    h, attn = _capture(lens, ids, pos, plan)  # (R, d) model dtype, (L, d) fp32 or None
    comps = _components(h, attn, plan, decoder.n_layers)  # [(name, layer, kind, (d,) fp32)]
    x_final = h[-1].float()

    with torch.inference_mode():
        values, has_bias, s = _contributions(decoder, norm, comps, x_final, t_id, b_id)
    if has_bias:
        comps.append(("bias", None, "bias", None))
    ref = _output_row(decoder, h[-1], t_id, b_id, _post_scale(decoder))
    df = _lines(comps, values, decoder.n_layers)
    tokens = namer.many(ids)
    total = float(df["cumulative"].iloc[-1]) if len(df) else 0.0
    df.attrs = {
        "model": lens.name,
        "model_type": decoder.model_type,
        "n_layers": decoder.n_layers,
        "target": t_name,
        "target_id": t_id,
        "baseline": b_name,
        "baseline_id": b_id,
        "position": pos,
        "n_tokens": len(ids),
        "token": tokens[pos],
        "next_token": tokens[pos + 1] if pos + 1 < len(ids) else None,
        "prompt": prompt if isinstance(prompt, str) else None,
        "plan": plan,
        "norm": norm.kind,
        "norm_scale": s,
        **ref,
        "sum": total,
        "sum_error": total - ref["logit_diff"],
        "units": _units(decoder),
        "linearisation": _linearisation(norm.kind, norm.offset, b_id is None, decoder),
    }
    df.attrs["summary"] = attribution_summary(df)
    return df


def _check_can_attribute(lens: LogitLens):
    """The final norm's description, or one line saying why this model cannot be attributed here."""
    decoder = lens.decoder
    if not lens.backend.runs_here or decoder.offloaded:
        raise LogitLensError(
            "attribution reads the unembedding's weights: load the model with its weights on this machine "
            "(not offloaded, not a remote-only nnsight model)"
        )
    decoder.refuse_streams("attribution")  # several residual streams: the output is not a sum of writes
    norm = decoder.final_norm
    if norm is None:
        raise LogitLensError(
            f"cannot attribute for model_type '{decoder.model_type}': its final norm matches no RMSNorm or "
            "LayerNorm description; give Architecture(norm='rms'|'layer', norm_offset=...)"
        )
    return norm


def _lines(comps, values, n: int) -> pd.DataFrame:
    """One line per component, in model order, with its running sum."""
    import pandas as pd

    lines = []
    total = 0.0
    for (name, layer, kind, _), value in zip(comps, values, strict=True):
        total += value
        lines.append(
            {
                "component": name,
                "label": _label(name, layer, kind),
                "layer": layer,
                "kind": kind,
                "depth": _depth(layer, kind, n),
                "contribution": value,
                "cumulative": total,
            }
        )
    df = pd.DataFrame(lines)
    df["layer"] = df["layer"].astype("Int64")
    return df


def attribution_summary(df: pd.DataFrame, n: int = SUMMARY_N) -> str:
    """One paragraph: the logit difference and the ``n`` components that pushed the target up most and
    down most (largest positive and most negative contributions)."""
    a = df.attrs
    base = "the mean logit" if a.get("baseline_id") is None else f"{visible(str(a.get('baseline')))}"
    head = (
        f"{visible(str(a.get('target')))} vs {base} after {visible(str(a.get('token')))} (position "
        f"{a.get('position')}): logit difference {a.get('logit_diff', float('nan')):+.3f} = the sum of "
        f"{len(df)} components"
    )
    if a.get("softcap") is not None:
        head += f" (before soft-capping; {a.get('logit_diff_capped', float('nan')):+.3f} after)"
    ordered = df.sort_values("contribution", ascending=False)
    up = ordered[ordered["contribution"] > 0].head(n)
    down = ordered[ordered["contribution"] < 0].iloc[::-1].head(n)

    def names(part) -> str:
        return ", ".join(f"{r.component} ({r.contribution:+.2f})" for r in part.itertuples()) or "none"

    return f"{head}. Up most: {names(up)}. Down most: {names(down)}."


def _post_scale(decoder: Decoder) -> float:
    """What the model multiplies its logits by (Cohere's logit_scale, 1 / Granite's logits_scaling)."""
    scale = decoder.scale if decoder.scale is not None else 1.0
    return scale / (decoder.divisor if decoder.divisor is not None else 1.0)


def _contributions(
    decoder: Decoder, norm: FinalNorm, comps: list, x_final: torch.Tensor, t_id: int, b_id: int | None
) -> tuple[list[float], bool, float]:
    """Each component's contribution in logits (and the biases' last, when the model has any) through the
    final norm frozen at ``x_final``'s statistics; also whether a bias line exists and the frozen scale."""
    dev = decoder.device
    V = torch.stack([c[3] for c in comps]).to(dev)  # (C, d) fp32
    s = norm.scale(x_final.to(dev).unsqueeze(0))  # (1, 1) the output row's frozen statistic
    normed = norm.apply(V, scale=s, bias=False)  # (C, d): centre(x_c) * s * g
    projections = _projections(decoder)
    b_norm = norm.bias.float().to(dev) if norm.bias is not None else None
    Y, y_bias = normed, b_norm
    if projections:  # affine: P(sum_c v_c + b) = sum_c (P(v_c) - P(0)) + P(b)
        zero = torch.zeros_like(normed[:1])
        Y = _project(normed, projections) - _project(zero, projections)  # (C, d_out)
        y_bias = _project(zero if b_norm is None else b_norm.unsqueeze(0), projections)[0]
    W, b_U = decoder.weight, decoder.bias  # (V, d_out), (V,) or None
    w_base = W.mean(0, dtype=torch.float32) if b_id is None else W[b_id].float()
    u = W[t_id].float() - w_base  # (d_out,) the direction of the logit difference
    bias_u = 0.0
    if b_U is not None:
        bias_u = float(b_U[t_id].float() - (b_U.float().mean() if b_id is None else b_U[b_id].float()))
    post = _post_scale(decoder)
    values = ((Y.float() @ u) * post).tolist()  # (C,)
    has_bias = y_bias is not None or b_U is not None
    if has_bias:
        values.append(((float(y_bias.float() @ u) if y_bias is not None else 0.0) + bias_u) * post)
    return values, has_bias, float(s)


# ---- inputs ---------------------------------------------------------------------------------------------
def _prompt_ids(lens: LogitLens, prompt) -> list[int]:
    if isinstance(prompt, torch.Tensor) and prompt.dim() == 2 and prompt.shape[0] != 1:
        raise LogitLensError(f"attribute takes one prompt, got {prompt.shape[0]}")
    ids, _ = lens.encode(prompt)
    if len(ids) != 1:
        raise LogitLensError(f"attribute takes one prompt, got {len(ids)}; call it once per prompt")
    seq = ids[0]
    vocab = lens.decoder.vocab_size
    if not seq:
        raise LogitLensError("the prompt is empty: it has no tokens")
    bad = [t for t in seq if not 0 <= t < vocab]
    if bad:
        raise LogitLensError(f"the prompt has token id {bad[0]} outside the vocabulary (0..{vocab - 1})")
    ctx = lens.context_length
    if ctx is not None and len(seq) > ctx:
        raise LogitLensError(f"the prompt has {len(seq)} tokens but the model's context is {ctx}; shorten it")
    return seq


def _position(position: int, n_tokens: int) -> int:
    if isinstance(position, bool) or not isinstance(position, int):
        raise LogitLensError(f"position must be an integer such as -1, got {position!r}")
    if not -n_tokens <= position < n_tokens:
        raise LogitLensError(
            f"position {position} is out of range for a prompt of {n_tokens} tokens: give 0..{n_tokens - 1} "
            f"or -{n_tokens}..-1 (from the end)"
        )
    return position % n_tokens


def _is_mean(baseline) -> bool:
    return isinstance(baseline, str) and baseline == "mean"


def _token(lens: LogitLens, namer: TokenNamer, token, what: str) -> tuple[int, str]:
    """A target or baseline token: a string that is exactly one token, or an id -> (id, readable name)."""
    vocab = lens.decoder.vocab_size
    if isinstance(token, bool) or not isinstance(token, str | int):
        raise LogitLensError(f"the {what} must be a token string or a token id, got {type(token).__name__}")
    if isinstance(token, int):
        if not 0 <= token < vocab:
            raise LogitLensError(f"the {what} token id {token} is outside the vocabulary (0..{vocab - 1})")
        return token, namer(token)
    hint = " or 'mean'" if what == "baseline" else ""
    if token == "":
        raise LogitLensError(
            f"the {what} is empty: give one token such as ' Paris' (mind the leading space), a token id{hint}"
        )
    if lens.tokenizer is None:
        raise LogitLensError(f"a string {what} needs a tokenizer: give a token id instead")
    ids = list(lens.tokenizer(token, add_special_tokens=False)["input_ids"])
    if not ids:
        raise LogitLensError(f"the {what} {token!r} tokenises to nothing: give another string or a token id")
    if len(ids) > 1:
        pieces = namer.many(ids)
        raise LogitLensError(
            f"the {what} {token!r} is {len(ids)} tokens {pieces}, not one token of the vocabulary: "
            f"attribution explains one token's logit; give one token (e.g. its first, "
            f"{lens.tokenizer.decode(ids[:1])!r}) or a token id{hint}"
        )
    return ids[0], token


# ---- capture ----------------------------------------------------------------------------------------------
def _capture(
    lens: LogitLens, ids: list[int], pos: int, plan: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass: the residual rows at ``pos`` ((R, d): "embed", ["i.attn",] "i" ...) and, for
    parallel blocks, each attention module's output at ``pos`` ((L, d) fp32)."""
    decoder = lens.decoder
    model = lens.model
    dev = lens.input_device
    rows = default_rows(decoder.n_layers, include_subblocks=plan == "split")
    input_ids = torch.tensor([ids], dtype=torch.long, device=dev)
    mask = torch.ones_like(input_ids)
    gather = torch.tensor([[pos]], dtype=torch.long, device=dev)
    attn: list[torch.Tensor | None] = [None] * decoder.n_layers
    handles = []

    def keep(index: int):
        def hook(module, args, output):
            attn[index] = block_hidden(output)[0, pos].detach().float().to(decoder.device)

        return hook

    try:
        if plan == "parallel":
            for i in range(decoder.n_layers):
                mod = decoder.block_module(i, decoder.arch.attn)
                assert mod is not None  # component_plan checked it
                handles.append(mod.register_forward_hook(keep(i)))
        captured = capture_rows(model, decoder, rows, input_ids, mask, gather, out_device=decoder.device)
    finally:
        for handle in handles:
            handle.remove()
    if plan == "parallel":
        if any(a is None for a in attn):
            raise LogitLensError(
                f"model_type '{decoder.model_type}': an attention module ('{decoder.arch.attn}') did not run; "
                "fix Architecture(attn=...)"
            )
        return captured[0, :, 0], torch.stack(attn)  # type: ignore[arg-type]
    return captured[0, :, 0], None


def _components(
    h: torch.Tensor, attn: torch.Tensor | None, plan: str, n: int
) -> list[tuple[str, Any, str, Any]]:
    """(name, layer, kind, (d,) fp32 vector) per component, in model order; they sum to h[-1]."""
    h = h.float()  # (R, d)
    out: list[tuple[str, Any, str, Any]] = [("embed", -1, "embed", h[0])]
    for i in range(n):
        if plan == "split":
            pre, mid, post = h[2 * i], h[2 * i + 1], h[2 * i + 2]
            out.append((f"{i}.attn", i, "attn", mid - pre))
            out.append((f"{i}.mlp", i, "mlp", post - mid))
        elif plan == "parallel":
            assert attn is not None
            pre, post = h[i], h[i + 1]
            a = attn[i].to(h.device)
            out.append((f"{i}.attn", i, "attn", a))
            out.append((f"{i}.mlp", i, "mlp", post - pre - a))
        else:
            out.append((str(i), i, "block", h[i + 1] - h[i]))
    return out


def _projections(decoder: Decoder) -> list[nn.Linear]:
    """The modules between the final norm and the unembedding (OPT-350m's project_out): affine only."""
    mods = [m for m in decoder.pre if m is not decoder.norm_module]
    for m in mods:
        if not isinstance(m, nn.Linear):
            raise LogitLensError(
                f"cannot attribute for model_type '{decoder.model_type}': the module before the unembedding "
                f"is a {type(m).__name__}, not a linear map"
            )
    return mods


def _project(x: torch.Tensor, projections: list[nn.Linear]) -> torch.Tensor:
    with torch.inference_mode():
        for m in projections:
            bias = None if m.bias is None else m.bias.float().to(x.device)
            x = F.linear(x, m.weight.float().to(x.device), bias)
    return x


def _output_row(decoder: Decoder, h_last: torch.Tensor, t_id: int, b_id: int | None, post: float) -> dict:
    """The output row's numbers through the model's own modules: logit difference before the cap (and
    after), the target's logit, probability and rank, the top-1 token."""
    with torch.inference_mode():
        x = h_last.to(decoder.device).unsqueeze(0).unsqueeze(0)  # (1, 1, d)
        for mod in decoder.pre:
            x = mod(x)
        z = F.linear(x[0, 0], decoder.weight, decoder.bias).float() * post  # (V,) before the cap
        base = z.mean() if b_id is None else z[b_id]
        out: dict[str, Any] = {
            "logit_diff": float(z[t_id] - base),
            "target_logit": float(z[t_id]),
            "baseline_logit": float(base),
            "softcap": decoder.softcap,
        }
        if decoder.softcap is not None:
            z = torch.tanh(z / decoder.softcap) * decoder.softcap
            base = z.mean() if b_id is None else z[b_id]
            out["logit_diff_capped"] = float(z[t_id] - base)
        logp = torch.log_softmax(z, -1)
        out["target_prob"] = float(logp[t_id].exp())
        out["target_rank"] = int((logp > logp[t_id]).sum()) + 1
        out["top1_id"] = int(logp.argmax())
    return out


# ---- words --------------------------------------------------------------------------------------------
def _label(name: str, layer: int | None, kind: str) -> str:
    return {
        "embed": "embeddings",
        "attn": f"block {layer} attention",
        "mlp": f"block {layer} MLP",
        "block": f"block {layer}",
        "bias": "biases after the final norm",
    }[kind]


def _depth(layer: int | None, kind: str, n: int) -> float:
    if kind == "embed":
        return 0.0
    if kind == "bias" or layer is None:
        return 1.0
    return (layer + (0.5 if kind == "attn" else 1.0)) / max(1, n)


def _units(decoder: Decoder) -> str:
    bits = ["logits"]
    if decoder.scale is not None:
        bits.append(f"with the logit scale x{decoder.scale:g} applied")
    if decoder.divisor is not None:
        bits.append(f"divided by logits_scaling {decoder.divisor:g}")
    if decoder.softcap is not None:
        bits.append(f"before soft-capping at {decoder.softcap:g}")
    return ", ".join(bits)


def _linearisation(kind: str, offset: float, mean: bool, decoder: Decoder) -> str:
    base = "mean_v W_U[v]" if mean else "W_U[baseline]"
    g = "(1 + w)" if offset else "g"
    if kind == "rms":
        how = f"(W_U[t] - {base}) . ({g} * x_c) / rms(x_final)"
        norm = "RMSNorm"
    elif kind == "layer":
        how = f"(W_U[t] - {base}) . ({g} * (x_c - mean(x_c))) / sqrt(var(x_final) + eps)"
        norm = "LayerNorm"
    else:
        how = f"(W_U[t] - {base}) . x_c"
        norm = "no final norm"
    text = f"final {norm} frozen at the output row's statistics: contribution(c) = {how}"
    if decoder.scale is not None or decoder.divisor is not None:
        text += ", times the model's logit scaling"
    return (
        text
        + "; the lines sum to the output row's logit difference"
        + (" before soft-capping" if decoder.softcap is not None else "")
    )
