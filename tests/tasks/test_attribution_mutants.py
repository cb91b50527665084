"""Tests written from the mutation run of ``tasks/attribution.py`` (scripts/mutate.py attribution): every
bad input's exact message, every ``df.attrs`` entry against the model's own logits, the depth and label
columns, the words (units, linearisation, summary), and the models that take the rarer paths: a projection
with a bias after a bias-free final norm, an unembedding bias with Granite's logit divisor, a bf16
unembedding with a large common row offset (its mean taken in fp32), CPM-Ant's left padding and prefix,
parallel blocks whose attention module is missing or never runs, a projection that is not linear and a
final norm that matches no description."""

from __future__ import annotations

import copy
import dataclasses
import types

import pandas as pd
import pytest
import torch
from torch import nn

from logitlens import LogitLens, LogitLensError
from logitlens.tasks.attribution import attribution_summary
from markers import needs_cuda
from tiny_models import build, truncated

IDS = [5, 17, 33, 80, 9, 101, 44]  # one prompt of the tiny models (vocabulary 256)
TARGET, OTHER = 12, 200
PROMPT = "The Eiffel Tower is in the city of"


def error(call, *args, **kwargs) -> str:
    """The one-line message ``call`` raises."""
    with pytest.raises(LogitLensError) as err:
        call(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text
    return text


def logits_at(model, position: int, ids=IDS) -> torch.Tensor:
    """(V,) the model's own logits at ``position`` in float64 (after any soft-cap the model applies)."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, position].double()


# ---- bad input: the exact messages ----------------------------------------------------------------------------
def test_prompt_messages(lenses):
    lens = lenses("llama")
    two = torch.tensor([[5, 6, 7], [7, 8, 9]])  # (2, 3): the count is the rows
    assert error(lens.attribute, two, TARGET) == "attribute takes one prompt, got 2"
    assert error(lens.attribute, [[5, 6], [7, 8]], TARGET) == (
        "attribute takes one prompt, got 2; call it once per prompt"
    )
    assert error(lens.attribute, [[]], TARGET) == "the prompt is empty: it has no tokens"
    assert error(lens.attribute, [5, 256], TARGET) == (
        "the prompt has token id 256 outside the vocabulary (0..255)"
    )
    assert (
        error(lens.attribute, [-1, 5], TARGET) == "the prompt has token id -1 outside the vocabulary (0..255)"
    )
    assert error(lens.attribute, [5] * 65, TARGET) == (
        "the prompt has 65 tokens but the model's context is 64; shorten it"
    )
    # the edges are accepted: ids 0 and 255, a prompt of exactly the context length, a (1, T) tensor
    assert lens.attribute([0, 255], TARGET).attrs["n_tokens"] == 2
    assert lens.attribute([5] * 64, TARGET).attrs["n_tokens"] == 64
    for prompt in (torch.tensor([IDS]), torch.tensor(IDS)):  # (1, T) and (T,): one prompt each
        df = lens.attribute(prompt, TARGET)
        assert df.attrs["n_tokens"] == len(IDS) and df.attrs["prompt"] is None


def test_position_messages_and_edges(lenses):
    lens = lenses("llama")
    for bad in ("1", 1.0, None, False):
        assert error(lens.attribute, IDS, TARGET, position=bad) == (
            f"position must be an integer such as -1, got {bad!r}"
        )
    n = len(IDS)
    for bad in (n, -n - 1):
        assert error(lens.attribute, IDS, TARGET, position=bad) == (
            f"position {bad} is out of range for a prompt of {n} tokens: give 0..{n - 1} or -{n}..-1 (from the end)"
        )
    assert lens.attribute(IDS, TARGET, position=-n).attrs["position"] == 0
    assert lens.attribute(IDS, TARGET, position=n - 1).attrs["position"] == n - 1
    assert lens.attribute(IDS, TARGET, position=0).attrs["position"] == 0


def test_token_id_messages_and_edges(lenses):
    lens = lenses("llama")
    for what in ("target", "baseline"):
        for bad, kind in ((True, "bool"), (1.5, "float"), (None, "NoneType"), ([3], "list")):
            args = (bad, "mean") if what == "target" else (TARGET, bad)
            assert error(lens.attribute, IDS, args[0], baseline=args[1]) == (
                f"the {what} must be a token string or a token id, got {kind}"
            )
        for bad in (-1, 256):
            args = (bad, "mean") if what == "target" else (TARGET, bad)
            assert error(lens.attribute, IDS, args[0], baseline=args[1]) == (
                f"the {what} token id {bad} is outside the vocabulary (0..255)"
            )
    for edge in (0, 255):
        df = lens.attribute(IDS, edge, baseline=255 - edge)
        assert (df.attrs["target_id"], df.attrs["baseline_id"]) == (edge, 255 - edge)
    assert error(lens.attribute, IDS, TARGET, baseline=TARGET) == (
        f"the baseline is the target itself ({lens.namer(TARGET)!r}): the difference is 0; give another token "
        "or 'mean'"
    )
    assert (
        error(lens.attribute, IDS, " Paris") == "a string target needs a tokenizer: give a token id instead"
    )
    assert error(lens.attribute, IDS, TARGET, baseline=" Rome") == (
        "a string baseline needs a tokenizer: give a token id instead"
    )


def test_token_string_messages(lens, tokenizer):
    """Empty strings (the baseline's advice also names 'mean'), several tokens (their pieces, the first one
    decoded) and, with a tokenizer that returns nothing, a string that tokenises to nothing."""
    assert error(lens.attribute, PROMPT, "") == (
        "the target is empty: give one token such as ' Paris' (mind the leading space), a token id"
    )
    assert error(lens.attribute, PROMPT, " Paris", baseline="") == (
        "the baseline is empty: give one token such as ' Paris' (mind the leading space), a token id or 'mean'"
    )
    assert error(lens.attribute, PROMPT, " Eiffel Tower") == (
        "the target ' Eiffel Tower' is 2 tokens ['␣Eiffel', '␣Tower'], not one token of the vocabulary: "
        "attribution explains one token's logit; give one token (e.g. its first, ' Eiffel') or a token id"
    )
    assert error(lens.attribute, PROMPT, " Paris", baseline=" Eiffel Tower") == (
        "the baseline ' Eiffel Tower' is 2 tokens ['␣Eiffel', '␣Tower'], not one token of the vocabulary: "
        "attribution explains one token's logit; give one token (e.g. its first, ' Eiffel') or a token id or "
        "'mean'"
    )
    paris = tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    df = lens.attribute(PROMPT, paris, baseline=" Rome")  # an id target, a string baseline
    assert df.attrs["target"] == lens.namer(paris) and df.attrs["baseline"] == " Rome"
    assert error(lens.attribute, PROMPT, paris, baseline=" Paris").startswith(
        "the baseline is the target itself"
    )

    def nothing(text, add_special_tokens=True):
        return {"input_ids": []}

    ids = tokenizer(PROMPT)["input_ids"]
    stub = copy.copy(lens)
    stub.tokenizer = nothing
    assert error(stub.attribute, ids, " Paris") == (
        "the target ' Paris' tokenises to nothing: give another string or a token id"
    )
    assert error(stub.attribute, ids, 3, baseline=" Rome") == (
        "the baseline ' Rome' tokenises to nothing: give another string or a token id"
    )


def test_token_strings_are_tokenised_without_special_tokens(tiny_model, tokenizer):
    """A tokenizer that prepends a BOS token to every text: the target and the baseline are still the one
    token their string is (special tokens left out), not BOS plus it."""
    from tokenizers import processors

    bos = copy.deepcopy(tokenizer)
    eos_id = bos.convert_tokens_to_ids("<|endoftext|>")
    bos._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", eos_id)]
    )
    paris, rome = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Paris", " Rome"))
    assert bos(" Paris")["input_ids"] == [eos_id, paris]  # the tokenizer does add it by default
    df = LogitLens(tiny_model, bos, name="bos").attribute([5, 17, 33], " Paris", baseline=" Rome")
    assert (df.attrs["target_id"], df.attrs["baseline_id"]) == (paris, rome)


def test_the_functions_default_baseline_is_the_mean(lenses):
    """``attribute`` called directly (not through LogitLens.attribute) explains the target against the mean."""
    from logitlens.tasks.attribution import attribute

    df = attribute(lenses("llama"), IDS, TARGET)
    assert (df.attrs["baseline"], df.attrs["baseline_id"]) == ("mean", None)
    row = logits_at(build("llama"), -1)
    assert df.attrs["logit_diff"] == pytest.approx(float(row[TARGET] - row.mean()), abs=1e-5)


def test_models_that_cannot_be_attributed(lenses, monkeypatch):
    """Weights not here (a remote-only backend, or an offloaded unembedding), several residual streams, a
    final norm that no description reproduces, a module before the unembedding that is not linear."""
    lens = lenses("llama")
    here = (
        "attribution reads the unembedding's weights: load the model with its weights on this machine (not "
        "offloaded, not a remote-only nnsight model)"
    )
    remote = copy.copy(lens)
    remote.backend = types.SimpleNamespace(runs_here=False)
    assert error(remote.attribute, IDS, TARGET) == here
    monkeypatch.setattr(type(lens.decoder), "offloaded", property(lambda self: True))
    assert error(lens.attribute, IDS, TARGET) == here
    monkeypatch.undo()
    assert error(lenses("deepseek_v4").attribute, IDS, TARGET).startswith(
        "attribution is not defined for model_type 'deepseek_v4'"
    )

    class OddNorm(nn.Module):  # tanh(x) * w: neither an RMSNorm nor a LayerNorm
        def __init__(self, weight):
            super().__init__()
            self.weight = nn.Parameter(weight.detach().clone())

        def forward(self, x):
            return torch.tanh(x) * self.weight

    odd = copy.deepcopy(build("llama"))
    odd.model.norm = OddNorm(odd.model.norm.weight)
    assert error(LogitLens(odd, None).attribute, IDS, TARGET) == (
        "cannot attribute for model_type 'llama': its final norm matches no RMSNorm or LayerNorm description; "
        "give Architecture(norm='rms'|'layer', norm_offset=...)"
    )

    class Wrapped(nn.Module):  # a linear map to the model, but not an nn.Linear
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    wrapped = copy.deepcopy(build("opt-project"))
    wrapped.model.decoder.project_out = Wrapped(wrapped.model.decoder.project_out)
    assert error(LogitLens(wrapped, None).attribute, IDS, TARGET) == (
        "cannot attribute for model_type 'opt': the module before the unembedding is a Wrapped, not a linear map"
    )


# ---- parallel blocks whose attention module is missing or does not run ---------------------------------------
def test_parallel_blocks_without_their_attention_module_are_whole_blocks(lenses):
    """GPT-J with Architecture(attn=...) naming no module: one "block" line per block, which still sum to the
    logit difference."""
    arch = dataclasses.replace(lenses("gptj").arch, attn="nope")
    df = LogitLens(build("gptj"), None, arch=arch).attribute(IDS, TARGET)
    assert df.attrs["plan"] == "block"
    assert df["component"].tolist() == ["embed", "0", "1", "2", "bias"]
    assert df["kind"].tolist() == ["embed", "block", "block", "block", "bias"]
    assert df["label"].tolist() == [
        "embeddings",
        "block 0",
        "block 1",
        "block 2",
        "biases after the final norm",
    ]
    assert df["depth"].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0], abs=1e-12)
    row = logits_at(build("gptj"), -1)
    assert df["contribution"].sum() == pytest.approx(float(row[TARGET] - row.mean()), abs=1e-4)


def test_an_attention_module_that_never_runs(lenses):
    model = copy.deepcopy(build("gptj"))
    for block in model.transformer.h:
        block.unused = nn.Identity()  # found in every block, called by none
    arch = dataclasses.replace(lenses("gptj").arch, attn="unused")
    assert error(LogitLens(model, None, arch=arch).attribute, IDS, TARGET) == (
        "model_type 'gptj': an attention module ('unused') did not run; fix Architecture(attn=...)"
    )


# ---- models on the rarer paths: the lines sum to the model's own logit difference ----------------------------
def _with_bias(linear: nn.Linear, seed: int) -> nn.Linear:
    new = nn.Linear(linear.in_features, linear.out_features, bias=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
        new.bias.copy_(torch.randn(linear.out_features, generator=g) * 0.5)
    return new


@pytest.fixture(scope="module")
def projected():
    """OPT with project_out (a Linear WITH a bias here) after a final LayerNorm WITHOUT a bias: the biases
    line is the projection's bias alone, and every other line needs P(v) - P(0)."""
    model = copy.deepcopy(build("opt-project"))
    dec = model.model.decoder
    dec.project_out = _with_bias(dec.project_out, 1)
    old = dec.final_layer_norm
    norm = nn.LayerNorm(old.normalized_shape, eps=old.eps, bias=False)
    with torch.no_grad():
        norm.weight.copy_(old.weight)
    dec.final_layer_norm = norm
    return model.eval()


def test_projection_bias_after_a_norm_without_bias(projected):
    lens = LogitLens(projected, None, name="opt-biased-projection")
    dec = projected.model.decoder
    row = logits_at(projected, -1)
    for baseline in ("mean", OTHER):
        df = lens.attribute(IDS, TARGET, baseline=baseline)
        want = float(row[TARGET] - (row.mean() if baseline == "mean" else row[OTHER]))
        assert df["contribution"].sum() == pytest.approx(want, abs=1e-4)
        assert df.attrs["logit_diff"] == pytest.approx(want, abs=1e-4)
        W = projected.lm_head.weight.detach().double()
        u = W[TARGET] - (W.mean(0) if baseline == "mean" else W[OTHER])
        bias = df.set_index("component").loc["bias", "contribution"]
        assert bias == pytest.approx(float(u @ dec.project_out.bias.detach().double()), abs=1e-5)
        assert df["component"].tolist()[-1] == "bias" and df.attrs["norm"] == "layer"


@pytest.fixture(scope="module")
def granite_bias():
    """Granite (logits divided by logits_scaling 4) with an unembedding bias and no final-norm bias."""
    model = copy.deepcopy(build("granite"))
    model.lm_head = _with_bias(model.lm_head, 2)
    return model.eval()


def test_unembedding_bias_with_a_logit_divisor(granite_bias):
    lens = LogitLens(granite_bias, None)
    b = granite_bias.lm_head.bias.detach().double()
    row = logits_at(granite_bias, 2)
    for baseline in ("mean", OTHER):
        df = lens.attribute(IDS, TARGET, baseline=baseline, position=2)
        base = row.mean() if baseline == "mean" else row[OTHER]
        assert df["contribution"].sum() == pytest.approx(float(row[TARGET] - base), abs=1e-4)
        bias_u = b[TARGET] - (b.mean() if baseline == "mean" else b[OTHER])
        line = df.set_index("component").loc["bias"]
        assert line["contribution"] == pytest.approx(float(bias_u) / 4.0, abs=1e-6)
        assert pd.isna(line["layer"]) and line["depth"] == 1.0
        assert df.attrs["target_logit"] == pytest.approx(float(row[TARGET]), abs=1e-4)
        assert df.attrs["baseline_logit"] == pytest.approx(float(base), abs=1e-4)
    assert df.attrs["units"] == "logits, divided by logits_scaling 4"


def test_bf16_unembedding_mean_is_taken_in_fp32(lenses):
    """Every unembedding row shifted by +4 (no logit difference changes: the mean shifts too) in bf16: the
    mean row must be averaged in fp32, not rounded to bf16 (a step of 1/64 near 4). Checked against float64
    from the model's own bf16 residual rows."""
    model = copy.deepcopy(build("llama"))
    with torch.no_grad():
        model.lm_head.weight.add_(4.0)
    model = model.to(torch.bfloat16).eval()
    rows = {}
    hooks = [
        model.model.layers[0].register_forward_pre_hook(lambda m, a: rows.update(x0=a[0][0, -1].double())),
        model.model.norm.register_forward_pre_hook(lambda m, a: rows.update(xf=a[0][0, -1].double())),
    ]
    try:
        with torch.no_grad():
            model(torch.tensor([IDS]))
    finally:
        for h in hooks:
            h.remove()
    norm = model.model.norm
    g = norm.weight.detach().double()
    s = 1 / torch.sqrt(rows["xf"].pow(2).mean() + norm.variance_epsilon)
    W = model.lm_head.weight.detach().double()
    u = W[TARGET] - W.mean(0)
    df = LogitLens(model, None).attribute(IDS, TARGET).set_index("component")
    assert df.loc["embed", "contribution"] == pytest.approx(float(u @ (g * rows["x0"] * s)), abs=2e-4)
    assert df["contribution"].sum() == pytest.approx(float(u @ (g * rows["xf"] * s)), abs=2e-4)
    assert df.attrs["norm_scale"] == pytest.approx(float(s), rel=1e-5)


def test_left_padded_family_with_a_prefix(lenses):
    """CPM-Ant reads its padding from the ids and prepends prompt tokens inside its blocks: the mask given
    to the model's run decides where the kept position lands."""
    model = build("cpmant")
    df = lenses("cpmant").attribute(IDS, TARGET, position=3, baseline=OTHER)
    row = logits_at(model, 3)
    assert df["contribution"].sum() == pytest.approx(float(row[TARGET] - row[OTHER]), abs=1e-4)
    assert df.attrs["logit_diff"] == pytest.approx(float(row[TARGET] - row[OTHER]), abs=1e-4)


# ---- the frame and its attrs -----------------------------------------------------------------------------------
def test_every_attr_of_a_split_model(lens, tokenizer):
    df = lens.attribute(PROMPT, " Paris", baseline=" Rome", position=2)
    ids = tokenizer(PROMPT)["input_ids"]
    paris, rome = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Paris", " Rome"))
    row = logits_at(lens.model, 2, ids)
    a = df.attrs
    assert (a["model"], a["model_type"], a["n_layers"]) == ("tiny-llama", "llama", 3)
    assert (a["target"], a["target_id"], a["baseline"], a["baseline_id"]) == (" Paris", paris, " Rome", rome)
    assert (a["position"], a["n_tokens"], a["token"], a["next_token"]) == (2, len(ids), "␣Tower", "␣is")
    assert (a["prompt"], a["plan"], a["norm"], a["softcap"]) == (PROMPT, "split", "rms", None)
    assert a["logit_diff"] == pytest.approx(float(row[paris] - row[rome]), abs=1e-5)
    assert a["target_logit"] == pytest.approx(float(row[paris]), abs=1e-5)
    assert a["baseline_logit"] == pytest.approx(float(row[rome]), abs=1e-5)
    probs = torch.softmax(row, -1)
    assert a["target_prob"] == pytest.approx(float(probs[paris]), rel=1e-4)
    assert a["target_rank"] == int((row > row[paris]).sum()) + 1 and a["top1_id"] == int(row.argmax())
    assert a["sum"] == df["cumulative"].iloc[-1] == pytest.approx(df["contribution"].sum(), abs=1e-12)
    assert a["sum_error"] == a["sum"] - a["logit_diff"]
    assert "logit_diff_capped" not in a and a["units"] == "logits"
    assert a["linearisation"] == (
        "final RMSNorm frozen at the output row's statistics: contribution(c) = (W_U[t] - W_U[baseline]) . "
        "(g * x_c) / rms(x_final); the lines sum to the output row's logit difference"
    )
    assert a["summary"] == attribution_summary(df)
    assert df["layer"].dtype.name == "Int64" and df["layer"].tolist() == [-1, 0, 0, 1, 1, 2, 2]
    assert df["depth"].tolist() == pytest.approx([0, 0.5 / 3, 1 / 3, 1.5 / 3, 2 / 3, 2.5 / 3, 1.0], abs=1e-12)
    assert df["label"].tolist() == [
        "embeddings",
        *(f"block {i} {part}" for i in range(3) for part in ("attention", "MLP")),
    ]
    last = lens.attribute(PROMPT, " Paris")
    assert last.attrs["next_token"] is None and last.attrs["token"] == "␣of" and last.attrs["position"] == 7
    assert last.attrs["baseline"] == "mean" and last.attrs["baseline_id"] is None
    before_last = lens.attribute(PROMPT, " Paris", position=-2).attrs
    assert (before_last["position"], before_last["token"], before_last["next_token"]) == (6, "␣city", "␣of")


def test_norm_scale_is_the_output_rows_statistic(lenses):
    """1 / rms(x_final) for RMSNorm (llama), 1 / sqrt(var + eps) for LayerNorm (gpt2), 1 with no norm."""
    for name, path, centred in (("llama", "model.norm", False), ("gpt2", "transformer.ln_f", True)):
        model = build(name)
        norm = model.get_submodule(path)
        got: dict[str, torch.Tensor] = {}
        hook = norm.register_forward_pre_hook(lambda m, a, got=got: got.update(x=a[0][0, -1].double()))
        try:
            with torch.no_grad():
                model(torch.tensor([IDS]))
        finally:
            hook.remove()
        x = got["x"] - got["x"].mean() if centred else got["x"]
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        want = float(1 / torch.sqrt(x.pow(2).mean() + eps))
        assert lenses(name).attribute(IDS, TARGET).attrs["norm_scale"] == pytest.approx(want, rel=1e-5)
    df = lenses("opt-postln").attribute(IDS, TARGET)
    assert df.attrs["norm"] == "identity" and df.attrs["norm_scale"] == 1.0


def test_soft_capped_model_with_a_second_token(lenses):
    """gemma2: logit_diff before the cap, logit_diff_capped after it, both against the baseline token; the
    probability and rank are the capped logits'."""
    model = build("gemma2")
    df = lenses("gemma2").attribute(IDS, TARGET, baseline=OTHER, position=4)
    capped = logits_at(model, 4)  # the model caps its logits
    assert df.attrs["logit_diff_capped"] == pytest.approx(float(capped[TARGET] - capped[OTHER]), abs=1e-5)
    raw = torch.atanh(capped / 5.0) * 5.0
    assert df.attrs["logit_diff"] == pytest.approx(float(raw[TARGET] - raw[OTHER]), abs=1e-3)
    assert df.attrs["target_logit"] == pytest.approx(float(raw[TARGET]), abs=1e-3)
    assert df.attrs["target_prob"] == pytest.approx(float(torch.softmax(capped, -1)[TARGET]), rel=1e-4)
    assert df.attrs["units"] == "logits, before soft-capping at 5"
    assert df.attrs["linearisation"] == (
        "final RMSNorm frozen at the output row's statistics: contribution(c) = (W_U[t] - W_U[baseline]) . "
        "((1 + w) * x_c) / rms(x_final); the lines sum to the output row's logit difference before "
        "soft-capping"
    )
    assert df.attrs["summary"].startswith(
        f"{df.attrs['target']} vs {df.attrs['baseline']} after {df.attrs['token']} (position 4): logit "
        f"difference {df.attrs['logit_diff']:+.3f} = the sum of 7 components (before soft-capping; "
        f"{df.attrs['logit_diff_capped']:+.3f} after). Up most: "
    )


@pytest.mark.parametrize(
    "name, units, how",
    [
        (
            "gpt2",
            "logits",
            "final LayerNorm frozen at the output row's statistics: contribution(c) = (W_U[t] - mean_v W_U[v]) "
            ". (g * (x_c - mean(x_c))) / sqrt(var(x_final) + eps); the lines sum to the output row's logit "
            "difference",
        ),
        (
            "cohere",
            "logits, with the logit scale x0.25 applied",
            "final LayerNorm frozen at the output row's statistics: contribution(c) = (W_U[t] - mean_v W_U[v]) "
            ". (g * (x_c - mean(x_c))) / sqrt(var(x_final) + eps), times the model's logit scaling; the lines "
            "sum to the output row's logit difference",
        ),
        (
            "granite",
            "logits, divided by logits_scaling 4",
            "final RMSNorm frozen at the output row's statistics: contribution(c) = (W_U[t] - mean_v W_U[v]) . "
            "(g * x_c) / rms(x_final), times the model's logit scaling; the lines sum to the output row's logit "
            "difference",
        ),
        (
            "opt-postln",
            "logits",
            "final no final norm frozen at the output row's statistics: contribution(c) = (W_U[t] - mean_v "
            "W_U[v]) . x_c; the lines sum to the output row's logit difference",
        ),
    ],
)
def test_units_and_linearisation_words(lenses, name, units, how):
    df = lenses(name).attribute(IDS, TARGET)
    assert df.attrs["units"] == units
    assert df.attrs["linearisation"] == how


def test_depth_of_a_one_block_model():
    """Depth is the position in the model: the embeddings 0, block 0's attention half-way, its MLP 1."""
    model = truncated("llama", 1)
    df = LogitLens(model, None).attribute(IDS, TARGET)
    assert df["component"].tolist() == ["embed", "0.attn", "0.mlp"]
    assert df["depth"].tolist() == [0.0, 0.5, 1.0]
    row = logits_at(model, -1)
    assert df["contribution"].sum() == pytest.approx(float(row[TARGET] - row.mean()), abs=1e-4)


# ---- the summary ---------------------------------------------------------------------------------------------
def _frame(values, **attrs) -> pd.DataFrame:
    df = pd.DataFrame({"component": [f"c{i}" for i in range(len(values))], "contribution": values})
    df.attrs = {"target": " Paris", "baseline": "mean", "baseline_id": None, "token": " of", "position": 3,
                "logit_diff": 1.25} | attrs  # fmt: skip
    return df


def test_summary_words():
    text = attribution_summary(_frame([0.5, -0.25, 1.0]))
    assert text == (
        "␣Paris vs the mean logit after ␣of (position 3): logit difference +1.250 = the sum of 3 components. "
        "Up most: c2 (+1.00), c0 (+0.50). Down most: c1 (-0.25)."
    )
    text = attribution_summary(_frame([0.5, 0.0], baseline=" Rome", baseline_id=7))
    assert text == (
        "␣Paris vs ␣Rome after ␣of (position 3): logit difference +1.250 = the sum of 2 components. "
        "Up most: c0 (+0.50). Down most: none."
    )
    text = attribution_summary(
        _frame([-0.5, -2.0, -1.0], softcap=5.0, logit_diff_capped=-0.75, logit_diff=-3.5)
    )
    assert text == (
        "␣Paris vs the mean logit after ␣of (position 3): logit difference -3.500 = the sum of 3 components "
        "(before soft-capping; -0.750 after). Up most: none. Down most: c1 (-2.00), c2 (-1.00), c0 (-0.50)."
    )
    no_capped = attribution_summary(_frame([1.0], softcap=5.0))  # a soft-cap without the capped difference
    assert "logit difference +1.250 = the sum of 1 components (before soft-capping; +nan after)." in no_capped
    assert attribution_summary(_frame([-0.5, -2.0, -1.0]), n=2).endswith("Down most: c1 (-2.00), c2 (-1.00).")
    four = attribution_summary(_frame([4.0, 3.0, 2.0, 1.0]))  # the default names 3 each way
    assert four.endswith("Up most: c0 (+4.00), c1 (+3.00), c2 (+2.00). Down most: none.")
    bare = pd.DataFrame({"component": ["a"], "contribution": [1.0]})
    assert attribution_summary(bare) == (
        "None vs the mean logit after None (position None): logit difference +nan = the sum of 1 components. "
        "Up most: a (+1.00). Down most: none."
    )


# ---- on a GPU --------------------------------------------------------------------------------------------------
@needs_cuda("compares attribution of a model on a GPU with the same model on the CPU")
@pytest.mark.parametrize("name", ["llama", "gptj", "opt-project", "gpt2"])
def test_on_a_gpu_the_lines_equal_the_cpu_ones(lenses, name):
    """Every tensor attribution builds (token ids, residual rows, attention outputs, the projection, the
    norm's bias) must be on the model's device: the lines and the output row's numbers equal the CPU ones."""
    cpu = lenses(name).attribute(IDS, TARGET, baseline=OTHER, position=3)
    model = copy.deepcopy(build(name)).cuda()
    gpu = LogitLens(model, None, name=name).attribute(IDS, TARGET, baseline=OTHER, position=3)
    assert gpu["component"].tolist() == cpu["component"].tolist()
    assert gpu["contribution"].tolist() == pytest.approx(cpu["contribution"].tolist(), abs=1e-4)
    for key in ("logit_diff", "target_logit", "baseline_logit", "norm_scale"):
        assert gpu.attrs[key] == pytest.approx(cpu.attrs[key], rel=1e-4, abs=1e-4), key
    assert abs(gpu.attrs["sum_error"]) < 1e-4
