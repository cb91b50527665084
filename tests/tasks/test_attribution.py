"""Direct logit attribution: the lines sum to the model's own logit difference for every family, single
components match contributions computed by hand, baselines, positions, the views and the command."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from logitlens import LogitLens, LogitLensError
from logitlens.cli import main
from logitlens.tasks.attribution import attribution_summary
from tiny_models import ALL, build, module_at

IDS = [5, 17, 33, 80, 9, 101, 44]  # one prompt of the tiny models (vocabulary 256)
TARGET, OTHER = 12, 200  # token ids explained / used as a second-token baseline

# How each tiny model's blocks are split, written here from the models' code (not from the table):
PARALLEL = {"gpt_neox", "gptj", "phi", "falcon", "cohere"}  # attention and MLP read the same input
WHOLE_BLOCKS = {"opt", "opt-project", "opt-postln", "persimmon", "xglm", "biogpt"}  # no point named between
# The final norm of the families with parallel blocks (path, and a Cohere-style logit scale):
PARALLEL_NORMS = {
    "gpt_neox": "gpt_neox.final_layer_norm",
    "gptj": "transformer.ln_f",
    "phi": "model.final_layernorm",
    "falcon": "transformer.ln_f",
    "cohere": "model.norm",
}


def model_logits(model, ids=IDS) -> torch.Tensor:
    """(T, V) the model's own logits in fp32, before any final soft-capping (switched off in the config)."""
    cfg = model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    try:
        if cap is not None:
            cfg.final_logit_softcapping = None
        with torch.no_grad():
            out = model(torch.tensor([ids])).logits[0].float()
    finally:
        if cap is not None:
            cfg.final_logit_softcapping = cap
    if cap is not None:  # the switch took effect: the capped logits differ
        with torch.no_grad():
            capped = model(torch.tensor([ids])).logits[0].float()
        assert (capped - out).abs().max() > 1e-2
    return out


def hooked(module, run) -> torch.Tensor:
    """The (first) output of ``module`` during ``run()``, copied (some blocks add into it in place)."""
    got = {}

    def hook(mod, args, output):
        got["x"] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return got["x"][0].float()  # (T, d)


def final_residual(model, norm_path: str) -> torch.Tensor:
    """(T, d) the input of the final norm (the last block's residual output)."""
    got = {}
    handle = module_at(model, norm_path).register_forward_pre_hook(lambda m, a: got.update(x=a[0].detach()))
    try:
        with torch.no_grad():
            model(torch.tensor([IDS]))
    finally:
        handle.remove()
    return got["x"][0].float()


def rms_frozen(norm, x_c, x_f, eps, offset=0.0) -> torch.Tensor:
    """g * x_c / rms(x_f): RMSNorm frozen at the final residual's statistic."""
    g = offset + norm.weight.detach().float()
    return g * x_c / torch.sqrt(x_f.pow(2).mean() + eps)


def layer_frozen(norm, x_c, x_f, eps) -> torch.Tensor:
    """g * (x_c - mean x_c) / sqrt(var(x_f) + eps): LayerNorm frozen at the final residual's statistics."""
    g = norm.weight.detach().float()
    var = (x_f - x_f.mean()).pow(2).mean()
    return g * (x_c - x_c.mean()) / torch.sqrt(var + eps)


def direction(model, target=TARGET, baseline=None) -> torch.Tensor:
    W = model.get_output_embeddings().weight.detach().float()
    return W[target] - (W.mean(0) if baseline is None else W[baseline])


# ---- the identity: lines sum to the model's own logit difference -------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_lines_sum_to_the_models_logit_difference(name, lenses):
    model = build(name)
    df = lenses(name).attribute(IDS, TARGET)
    logits = model_logits(model)[-1]  # (V,) before any soft-cap
    want = float(logits[TARGET] - logits.mean())
    assert df["contribution"].sum() == pytest.approx(want, abs=1e-4)
    assert df.attrs["logit_diff"] == pytest.approx(want, abs=1e-4)
    assert df["cumulative"].iloc[-1] == pytest.approx(want, abs=1e-4)
    n = 3  # every tiny model has 3 blocks
    if name in WHOLE_BLOCKS:
        blocks = [str(i) for i in range(n)]
    else:
        blocks = [f"{i}.{part}" for i in range(n) for part in ("attn", "mlp")]
    names = df["component"].tolist()
    assert names[: 1 + len(blocks)] == ["embed", *blocks]
    assert names[1 + len(blocks) :] in ([], ["bias"])
    assert df.attrs["plan"] == (
        "parallel" if name in PARALLEL else "block" if name in WHOLE_BLOCKS else "split"
    )


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2", "cohere", "granite", "opt-project"])
def test_second_token_baseline_and_other_positions(name, lenses):
    model = build(name)
    lens = lenses(name)
    logits = model_logits(model)
    for position in (-1, 2, -5):
        df = lens.attribute(IDS, TARGET, position=position, baseline=OTHER)
        row = logits[position]
        assert df["contribution"].sum() == pytest.approx(float(row[TARGET] - row[OTHER]), abs=1e-4)
        assert df.attrs["position"] == position % len(IDS)
        assert df.attrs["baseline_id"] == OTHER


@pytest.mark.parametrize("name", ["llama", "gpt2", "phi"])
def test_baselines_are_linear_per_component(name, lenses):
    """(t vs mean) - (t vs u) = (u vs mean), line by line: the baseline only changes the direction."""
    lens = lenses(name)
    t_mean = lens.attribute(IDS, TARGET)["contribution"]
    t_u = lens.attribute(IDS, TARGET, baseline=OTHER)["contribution"]
    u_mean = lens.attribute(IDS, OTHER)["contribution"]
    assert torch.allclose(torch.tensor((t_mean - t_u).to_numpy()), torch.tensor(u_mean.to_numpy()), atol=1e-5)
    assert (t_u - t_mean).abs().max() > 1e-3  # and the baselines do differ


def test_soft_capped_difference_is_reported_too(lenses):
    df = lenses("gemma2").attribute(IDS, TARGET)
    with torch.no_grad():
        capped = build("gemma2")(torch.tensor([IDS])).logits[0, -1].float()
    assert df.attrs["softcap"] == 5.0
    assert df.attrs["logit_diff_capped"] == pytest.approx(float(capped[TARGET] - capped.mean()), abs=1e-4)
    assert abs(df.attrs["logit_diff_capped"] - df.attrs["logit_diff"]) > 1e-2
    assert "before soft-capping" in df.attrs["summary"] and "before soft-capping" in df.attrs["linearisation"]


# ---- single components by hand -------------------------------------------------------------------------------
def test_rmsnorm_component_by_hand(lenses):
    """llama: block 1's MLP output (added to the residual as it is) through RMSNorm frozen at x_final."""
    model = build("llama")
    x_c = hooked(model.model.layers[1].mlp, lambda: model(torch.tensor([IDS])))[-1]
    x_f = final_residual(model, "model.norm")[-1]
    want = direction(model) @ rms_frozen(model.model.norm, x_c, x_f, model.config.rms_norm_eps)
    df = lenses("llama").attribute(IDS, TARGET).set_index("component")
    assert df.loc["1.mlp", "contribution"] == pytest.approx(float(want), abs=1e-5)
    assert "bias" not in df.index  # no final-norm or unembedding bias in Llama


def test_gemma_post_norm_component_by_hand(lenses):
    """gemma2: block 1's attention writes post_attention_layernorm(attention) into the residual; the final
    RMSNorm weighs by (1 + w)."""
    model = build("gemma2")
    layer = model.model.layers[1]
    x_c = hooked(layer.post_attention_layernorm, lambda: model(torch.tensor([IDS])))[-1]
    x_f = final_residual(model, "model.norm")[-1]
    frozen = rms_frozen(model.model.norm, x_c, x_f, model.config.rms_norm_eps, offset=1.0)
    want = direction(model, baseline=OTHER) @ frozen
    df = lenses("gemma2").attribute(IDS, TARGET, baseline=OTHER).set_index("component")
    assert df.loc["1.attn", "contribution"] == pytest.approx(float(want), abs=1e-5)


def test_layernorm_component_and_bias_by_hand(lenses):
    """gpt2: block 1's attention output (c_proj, bias included) and ln_f's bias, through LayerNorm."""
    model = build("gpt2")
    ln = model.transformer.ln_f
    x_c = hooked(model.transformer.h[1].attn, lambda: model(torch.tensor([IDS])))[-1]
    x_f = final_residual(model, "transformer.ln_f")[-1]
    u = direction(model, baseline=OTHER)
    df = lenses("gpt2").attribute(IDS, TARGET, baseline=OTHER).set_index("component")
    want = u @ layer_frozen(ln, x_c, x_f, model.config.layer_norm_epsilon)
    assert df.loc["1.attn", "contribution"] == pytest.approx(float(want), abs=1e-5)
    assert df.loc["bias", "contribution"] == pytest.approx(float(u @ ln.bias.detach().float()), abs=1e-5)
    assert df.loc["bias", "kind"] == "bias" and df.loc["embed", "layer"] == -1


@pytest.mark.parametrize("name", sorted(PARALLEL))
def test_parallel_blocks_split_into_attention_and_the_rest(name, lenses):
    """Parallel blocks: "i.attn" is the attention module's output, "i.mlp" the rest of the block, which for
    these families is exactly the MLP module's output (checked by hand through the frozen LayerNorm)."""
    model = build(name)
    lens = lenses(name)
    blocks = lens.decoder.layers
    norm = module_at(model, PARALLEL_NORMS[name])
    eps = next(float(getattr(norm, a)) for a in ("eps", "variance_epsilon") if hasattr(norm, a))
    scale = float(getattr(model.config, "logit_scale", None) or 1.0)
    x_f = final_residual(model, PARALLEL_NORMS[name])[-1]
    df = lens.attribute(IDS, TARGET).set_index("component")
    u = direction(model)
    for i in (0, 2):
        mlp = hooked(blocks[i].mlp, lambda: model(torch.tensor([IDS])))[-1]
        want = scale * (u @ layer_frozen(norm, mlp, x_f, eps))
        assert df.loc[f"{i}.mlp", "contribution"] == pytest.approx(float(want), abs=1e-4)
        attn_module = next(m for a in ("attn", "attention", "self_attention", "self_attn") if (m := getattr(blocks[i], a, None)) is not None)  # fmt: skip
        attn = hooked(attn_module, lambda: model(torch.tensor([IDS])))[-1]
        want = scale * (u @ layer_frozen(norm, attn, x_f, eps))
        assert df.loc[f"{i}.attn", "contribution"] == pytest.approx(float(want), abs=1e-4)
    assert df.attrs["plan"] == "parallel"


def test_half_precision_model_is_attributed_in_fp32(lenses):
    model = copy.deepcopy(build("llama")).to(torch.bfloat16)
    df = LogitLens(model, None).attribute(IDS, TARGET)
    ref = lenses("llama").attribute(IDS, TARGET)
    assert df["contribution"].dtype.name == "float64"
    assert abs(df["contribution"].sum() - df.attrs["logit_diff"]) < 0.05 * (1 + abs(df.attrs["logit_diff"]))
    assert df["contribution"].sum() == pytest.approx(ref["contribution"].sum(), abs=0.25)


# ---- the frame, its summary ------------------------------------------------------------------------------------
def test_frame_columns_and_attrs(lens):
    df = lens.attribute("The Eiffel Tower is in the city of", " Paris", baseline=" Rome")
    assert list(df.columns) == ["component", "label", "layer", "kind", "depth", "contribution", "cumulative"]
    assert df["kind"].tolist() == ["embed"] + ["attn", "mlp"] * 3
    assert df["label"].iloc[1] == "block 0 attention" and df["depth"].iloc[-1] == 1.0
    a = df.attrs
    assert (a["target"], a["baseline"], a["position"], a["token"]) == (" Paris", " Rome", 7, "␣of")
    assert a["target_id"] == lens.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    assert abs(a["sum_error"]) < 1e-4 and "frozen at the output row's statistics" in a["linearisation"]
    assert a["summary"] == attribution_summary(df)


def test_summary_names_the_largest_lines_each_way():
    import pandas as pd

    df = pd.DataFrame({"component": list("abcdef"), "contribution": [1.0, -2.0, 3.0, -0.5, 0.2, -0.1]})
    df.attrs = {"target": " Paris", "baseline": "mean", "baseline_id": None, "token": " of", "position": 3,
                "logit_diff": 1.6}  # fmt: skip
    text = attribution_summary(df)
    assert "Up most: c (+3.00), a (+1.00), e (+0.20)." in text
    assert "Down most: b (-2.00), d (-0.50), f (-0.10)." in text
    assert "logit difference +1.600" in text and "the mean logit" in text
    assert "Up most: c (+3.00)." in attribution_summary(df, n=1)


# ---- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": ""}, "the target is empty"),
        ({"target": " Eiffel Tower"}, "the target ' Eiffel Tower' is 2 tokens"),
        ({"target": 400}, "the target token id 400 is outside the vocabulary (0..399)"),
        ({"target": 1.5}, "the target must be a token string or a token id"),
        ({"baseline": " London"}, "the baseline ' London' is 7 tokens"),
        ({"baseline": ""}, "the baseline is empty"),
        ({"baseline": " Paris"}, "the baseline is the target itself"),
        ({"position": 8}, "position 8 is out of range for a prompt of 8 tokens: give 0..7 or -8..-1"),
        ({"position": -9}, "position -9 is out of range"),
        ({"position": True}, "position must be an integer"),
        ({"prompt": ["one", "two"]}, "attribute takes one prompt, got 2"),
    ],
)
def test_bad_input_is_one_line(lens, kwargs, message):
    args = {"prompt": "The Eiffel Tower is in the city of", "target": " Paris"} | kwargs
    with pytest.raises(LogitLensError) as err:
        lens.attribute(args.pop("prompt"), args.pop("target"), **args)
    assert message in str(err.value) and "\n" not in str(err.value)


# ---- views ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eiffel(lens):
    return lens.attribute("The Eiffel Tower is in the city of", " Paris")


def test_view_model_colours_and_order(eiffel):
    from logitlens.views.attribution import NEGATIVE, POSITIVE, attribution_model

    m = attribution_model(eiffel)
    assert m.names == eiffel["component"].tolist()
    assert all(c == (POSITIVE if v >= 0 else NEGATIVE) for c, v in zip(m.colours, m.values, strict=True))
    biggest = max(range(len(m.values)), key=lambda i: m.values[i])
    assert m.marked[biggest] and sum(m.marked) <= 6
    assert "␣Paris" in m.title and m.lines[-2].startswith("up most:")


def test_plotly_figure_bars_in_model_order(eiffel):
    from logitlens.views.attribution import figure

    fig = figure(eiffel)
    bars, total = fig.data
    assert list(bars.y) == eiffel["component"].tolist() and bars.orientation == "h"
    assert list(bars.x) == pytest.approx(eiffel["contribution"].tolist())
    assert list(total.x) == pytest.approx(eiffel["cumulative"].tolist())
    assert fig.layout.yaxis.autorange == "reversed"


def test_png_and_html_files(eiffel, tmp_path):
    from logitlens.views.attribution import write_attribution_html, write_attribution_png

    png = write_attribution_png(eiffel, tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LogitLensError, match="must end in .png, .svg or .pdf"):
        write_attribution_png(eiffel, tmp_path / "a.gif")
    page = write_attribution_html(eiffel, tmp_path / "a.html").read_text(encoding="utf-8")
    assert "https://" not in page and "0.attn" in page and "frozen at the output row" in page


def test_terminal_table(eiffel):
    from rich.console import Console

    from logitlens.views.attribution import print_attribution

    console = Console(record=True, width=80)
    print_attribution(eiffel, console)
    text = console.export_text()
    assert all(name in text for name in eiffel["component"])
    assert "█" in text and "up most:" in text and max(len(line) for line in text.splitlines()) <= 80
    rows = [line for line in text.splitlines() if line.startswith("│")]  # one per component
    zero = {[i for i, ch in enumerate(line) if ch == "│"][3] for line in rows}  # the bars' zero line
    assert len(rows) == len(eiffel) and len(zero) == 1  # in one column: bars keep their spaces


# ---- the command ------------------------------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_command_prints_and_writes_every_file(capsys, tiny_model_dir, tmp_path):
    files = {k: tmp_path / f"a.{k}" for k in ("png", "html", "csv", "json")}
    argv = ["attribute", "The Eiffel Tower is in the city of", "--model", str(tiny_model_dir)]
    argv += ["--target", " Paris", "--baseline", " Rome", "--position", "-1"]
    for k, path in files.items():
        argv += [f"--{k}", str(path)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "0.attn" in out and "2.mlp" in out and "up most" in out
    doc = json.loads(files["json"].read_text(encoding="utf-8"))
    assert doc["format"] == "logitlens.attribution" and doc["meta"]["baseline"] == " Rome"
    total = sum(c["contribution"] for c in doc["components"])
    assert total == pytest.approx(doc["meta"]["logit_diff"], abs=1e-4)
    import pandas as pd

    csv = pd.read_csv(files["csv"])
    assert csv["component"].tolist()[:3] == ["embed", "0.attn", "0.mlp"]
    for path in files.values():
        assert f"wrote {path}" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target", ""], "--target is empty"),
        (["--target", " Eiffel Tower"], "is 2 tokens"),
        (["--target", " Paris", "--baseline", " London"], "the baseline ' London' is 7 tokens"),
        (["--target", " Paris", "--baseline", ""], "--baseline is empty"),
        (["--target", " Paris", "--position", "12"], "position 12 is out of range for a prompt of 8 tokens"),
        (["--target", " Paris", "--position", "last"], "invalid int value"),
        (["--target", " Paris", "--png", "a.gif"], "--png a.gif: the file name must end in .png, .svg, .pdf"),
        ([], "the following arguments are required: --target"),
    ],
)
def test_command_bad_input(capsys, tiny_model_dir, extra, message):
    code, out, err = run_cli(
        capsys, "attribute", "The Eiffel Tower is in the city of", "--model", str(tiny_model_dir), *extra
    )
    assert code == 2
    assert err.startswith("logitlens: error:") and err.count("\n") == 1 and message in err, err


def test_command_without_prompt(capsys):
    code, _, err = run_cli(capsys, "attribute", "--target", " Paris")
    assert code == 2 and "no prompt given" in err and err.count("\n") == 1
