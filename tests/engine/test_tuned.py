"""The tuned lens wired in: ``LogitLens(..., tuned_lens=)``, ``load_lens``, the views and the CLI.

Every decoded row is checked against a reference written here, independently of logitlens: the model's own
``hidden_states`` (``output_hidden_states=True``), ``h + h @ W.T + b``, then the model's own final norm
module, output embedding and logit post-processing (HF's last ``hidden_states`` entry is already
normalised: the output row is the model's logits, never translated).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math

import numpy as np
import pytest
import torch

import logitlens
from logitlens import LensResult, LogitLens, LogitLensError, TunedLens
from logitlens.cli import main
from logitlens.engine.lenses import IdentityLens
from logitlens.engine.tuned import load_lens
from tiny_models import build, module_at

PROMPTS = [[5, 17, 99, 3, 42, 7], [11, 200, 31]]  # token ids of the tiny models' 256-token vocabulary
ONE = [PROMPTS[0]]

# Where each family's final norm is, and its logit post-processing, written here (not from the table).
REFERENCE = {
    "llama": ("model.norm", lambda model, x: x),
    "gpt2": ("transformer.ln_f", lambda model, x: x),
    "gpt_neox": ("gpt_neox.final_layer_norm", lambda model, x: x),
    "gemma2": (
        "model.norm",
        lambda model, x: (
            model.config.final_logit_softcapping * torch.tanh(x / model.config.final_logit_softcapping)
        ),
    ),
    "cohere": ("model.norm", lambda model, x: x * model.config.logit_scale),
}
FAMILIES = list(REFERENCE)


def random_translators(n_layers: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_layers, d, d, generator=g) * (0.5 / math.sqrt(d))  # (L, d, d)
    bias = torch.randn(n_layers, d, generator=g) * 0.5  # (L, d)
    return weight, bias


def tuned_for(name: str, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> TunedLens:
    """A TunedLens shaped for build(name), with these translators (default: zero, the identity)."""
    lens = TunedLens.for_model(LogitLens(build(name), None, name=name))
    with torch.no_grad():
        if weight is not None:
            lens.weight.copy_(weight)
        if bias is not None:
            lens.bias.copy_(bias)
    return lens


@torch.no_grad()
def reference_logits(name: str, ids: list[int], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(L + 1, T, V) fp32 logits: row j < L is post(head(norm(h_j + W_j h_j + b_j))), the last the model's."""
    model = build(name)
    norm_path, post = REFERENCE[name]
    norm, head = module_at(model, norm_path), model.get_output_embeddings()
    out = model(torch.tensor([ids]), output_hidden_states=True)
    hs = out.hidden_states  # L + 1 entries, the last already normalised
    n_layers = len(hs) - 1
    assert weight.shape[0] == n_layers
    # the reference itself: the last entry decoded without a second norm is the model's own output
    torch.testing.assert_close(post(model, head(hs[-1])), out.logits, atol=1e-5, rtol=0)
    rows = []
    for j in range(n_layers):
        h = hs[j][0]  # (T, d)
        moved = h + h @ weight[j].T + bias[j]
        rows.append(post(model, head(norm(moved))))
    rows.append(out.logits[0])
    return torch.stack(rows).float()


def assert_same_result(a: LensResult, b: LensResult, atol: float = 0.0) -> None:
    """Every statistic and answer tensor equal (bit for bit with atol=0), NaN where NaN."""
    assert set(a.stats) == set(b.stats)
    pairs = [(name, a.stats[name], b.stats[name]) for name in a.stats]
    pairs += [(n, getattr(a, n), getattr(b, n)) for n in ("answer_logprobs", "answer_probs", "answer_ranks")]
    for name, x, y in pairs:
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.is_floating_point():
            torch.testing.assert_close(x, y, atol=atol, rtol=0, equal_nan=True, msg=name)
        else:
            assert torch.equal(x, y), name


def package_hash(weight: torch.Tensor) -> str:
    """The tuned-lens package's unembedding fingerprint, as its utils.tensor_hash writes it."""
    return hashlib.sha256(str.encode(np.array_str(weight.detach().float().numpy(), precision=1))).hexdigest()


# ---- (a) the identity is the logit lens ----------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_identity_translators_reproduce_the_logit_lens(name):
    model = build(name)
    plain = LogitLens(model, None, name=name)
    tuned = LogitLens(model, None, name=name, tuned_lens=tuned_for(name))
    assert isinstance(tuned.lens, TunedLens) and plain.lens.name == "logit"
    kwargs = dict(top_k=5, targets=[7, 42, (3, 99)], answers=[[8, 9], None])
    a, b = plain.run(PROMPTS, **kwargs), tuned.run(PROMPTS, **kwargs)
    assert a.meta["lens"] == "logit" and b.meta["lens"] == "tuned"
    assert_same_result(a, b)
    assert torch.equal(plain.layer_logits(ONE), tuned.layer_logits(ONE))


# ---- (b) random translators against the independent reference -------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_random_translators_match_the_reference(name):
    model = build(name)
    n_layers, d = len(module_at(model, _blocks(name))), model.get_output_embeddings().weight.shape[1]
    weight, bias = random_translators(n_layers, d, seed=1)
    lens = LogitLens(model, None, name=name, tuned_lens=tuned_for(name, weight, bias))
    ref = reference_logits(name, PROMPTS[0], weight, bias)  # (R, T, V)
    torch.testing.assert_close(lens.layer_logits(ONE), ref, atol=1e-4, rtol=1e-4)

    res = lens.run(ONE, top_k=3, targets=[42])
    logp = ref.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)  # (R, T)
    kl = (logp[-1].exp() * (logp[-1] - logp)).sum(-1)
    torch.testing.assert_close(res.entropy[0], entropy, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res.kl_to_final[0], kl, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res.target_probs[0, :, :, 0], logp[..., 42].exp(), atol=1e-5, rtol=1e-4)
    assert torch.equal(res.top_ids[0, :, :, 0], ref.argmax(-1))
    # the translators are not a no-op: every translated row moves away from the plain logit lens
    plain = LogitLens(model, None, name=name).layer_logits(ONE)
    assert all((ref[j] - plain[j]).abs().max() > 1e-2 for j in range(n_layers))
    torch.testing.assert_close(ref[-1], plain[-1], atol=1e-5, rtol=0)  # the output row untouched


def _blocks(name: str) -> str:
    from tiny_models import SPECS

    return SPECS[name].blocks


def test_every_entry_point_decodes_through_the_tuned_lens(tmp_path):
    model = build("llama")
    weight, bias = random_translators(3, 32, seed=2)
    lens = LogitLens(model, None, name="llama", tuned_lens=tuned_for("llama", weight, bias))
    res = lens.run(PROMPTS, top_k=4)
    parts = list(lens.iter_run(PROMPTS, top_k=4, batch_size=1))  # one prompt per batch
    assert [p.meta["lens"] for p in parts] == ["tuned", "tuned"]
    joined = LensResult.concat(parts)
    assert_same_result(joined.select([joined.prompt_index.index(i) for i in range(2)]), res, atol=1e-5)
    path = tmp_path / "s.parquet"
    lens.stream(PROMPTS, path, top_k=4, progress=False)
    streamed = LensResult.load(path)
    assert streamed.meta["lens"] == "tuned"
    order = [streamed.prompt_index.index(i) for i in range(2)]
    assert torch.equal(streamed.top_ids[order[0], :, :6], res.top_ids[0])
    plain = LogitLens(model, None, name="llama").run(PROMPTS, top_k=4)
    assert not torch.equal(plain.top_ids, res.top_ids)  # the tuned lens changed something


# ---- (c) saved and read back, in both layouts -----------------------------------------------------------
@pytest.mark.parametrize("fmt", ["logitlens", "tuned-lens"])
def test_round_trip_gives_identical_outputs(tmp_path, fmt):
    model = build("gpt2")
    weight, bias = random_translators(3, 32, seed=3)
    original = tuned_for("gpt2", weight, bias)
    original.save(tmp_path / "lens", format=fmt)
    files = sorted(p.name for p in (tmp_path / "lens").iterdir())
    assert files == (
        ["config.json", "translators.safetensors"] if fmt == "logitlens" else ["config.json", "params.pt"]
    )
    loaded = TunedLens.load(tmp_path / "lens")
    assert torch.equal(loaded.weight, original.weight) and torch.equal(loaded.bias, original.bias)
    assert (
        loaded.meta["unembed_hash"]
        == original.meta["unembed_hash"]
        == package_hash(model.get_output_embeddings().weight)
    )
    a = LogitLens(model, None, tuned_lens=original).run(PROMPTS, targets=[9], answers=[[1, 2], [3]])
    b = LogitLens(model, None, tuned_lens=tmp_path / "lens").run(PROMPTS, targets=[9], answers=[[1, 2], [3]])
    c = LogitLens(model, None, tuned_lens=str(tmp_path / "lens")).run(
        PROMPTS, targets=[9], answers=[[1, 2], [3]]
    )
    assert_same_result(a, b)
    assert_same_result(a, c)
    assert isinstance(load_lens(tmp_path / "lens"), TunedLens)  # load_lens reads a tuned lens folder too
    assert torch.equal(load_lens(tmp_path / "lens").weight, original.weight)


def test_package_layout_as_written_is_what_the_package_reads(tmp_path):
    weight, bias = random_translators(3, 32, seed=4)
    tuned_for("llama", weight, bias).save(tmp_path, format="tuned-lens")
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config) == {
        "base_model_name_or_path",
        "d_model",
        "num_hidden_layers",
        "bias",
        "base_model_revision",
        "unembed_hash",
        "lens_type",
    }
    assert (config["d_model"], config["num_hidden_layers"], config["lens_type"]) == (
        32,
        3,
        "linear_tuned_lens",
    )
    state = torch.load(tmp_path / "params.pt", weights_only=True)
    assert sorted(state) == sorted(f"{i}.{p}" for i in range(3) for p in ("weight", "bias"))
    for i in range(3):
        assert torch.equal(state[f"{i}.weight"], weight[i]) and torch.equal(state[f"{i}.bias"], bias[i])


# ---- (d) a folder written by hand in the tuned-lens package's layout ------------------------------------
@pytest.mark.parametrize("prefix", ["", "layer_translators."])
def test_hand_made_package_folder_loads_without_conversion(tmp_path, prefix):
    model = build("gemma2")
    weight, bias = random_translators(3, 32, seed=5)
    torch.save(
        {
            f"{prefix}{i}.{p}": (weight if p == "weight" else bias)[i].clone()
            for i in range(3)
            for p in ("weight", "bias")
        },
        tmp_path / "params.pt",
    )
    config = {
        "base_model_name_or_path": "tiny/gemma2",
        "d_model": 32,
        "num_hidden_layers": 3,
        "bias": True,
        "base_model_revision": None,
        "unembed_hash": package_hash(model.get_output_embeddings().weight),
        "lens_type": "linear_tuned_lens",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    lens = LogitLens(model, None, name="gemma2", tuned_lens=tmp_path)
    assert lens.lens.meta["base_model_name_or_path"] == "tiny/gemma2"
    ref = reference_logits("gemma2", PROMPTS[0], weight, bias)
    torch.testing.assert_close(lens.layer_logits(ONE), ref, atol=1e-4, rtol=1e-4)
    assert lens.run(ONE).meta["lens"] == "tuned"


def test_package_folder_without_biases(tmp_path):
    model = build("llama")
    weight, _ = random_translators(3, 32, seed=6)
    torch.save({f"{i}.weight": weight[i].clone() for i in range(3)}, tmp_path / "params.pt")
    config = {"base_model_name_or_path": "x", "d_model": 32, "num_hidden_layers": 3, "bias": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    lens = LogitLens(model, None, tuned_lens=tmp_path)  # no hash in the config: nothing to compare
    ref = reference_logits("llama", PROMPTS[0], weight, torch.zeros(3, 32))
    torch.testing.assert_close(lens.layer_logits(ONE), ref, atol=1e-4, rtol=1e-4)


# ---- (e) a lens made for another model ------------------------------------------------------------------
def _llama(**overrides):
    from conftest import make_llama

    base = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
    return make_llama(256, **{**base, **overrides})


def test_lens_for_another_model_is_refused():
    lens = tuned_for("llama")  # 3 blocks, d_model 32, build("llama")'s unembedding
    with pytest.raises(LogitLensError, match=r"with d_model = 32, but .* has d_model = 64") as e1:
        LogitLens(_llama(hidden_size=64), None, tuned_lens=lens)
    with pytest.raises(LogitLensError, match=r"with blocks = 3, but .* has blocks = 2") as e2:
        LogitLens(_llama(num_hidden_layers=2), None, tuned_lens=lens)
    other = copy.deepcopy(build("llama"))
    with torch.no_grad():
        other.get_output_embeddings().weight.add_(1.0)  # same shapes, another unembedding
    with pytest.raises(LogitLensError, match="hash mismatch") as e3:
        LogitLens(other, None, tuned_lens=lens)
    for e in (e1, e2, e3):
        assert "\n" not in str(e.value) and "trained for llama" in str(e.value)
    assert "check_hash=False" in str(e3.value)
    accepted = LogitLens(other, None, tuned_lens=lens, check_hash=False)
    assert accepted.run(ONE).meta["lens"] == "tuned"
    with pytest.raises(LogitLensError, match="d_model"):  # the shapes are checked with check_hash=False too
        LogitLens(_llama(hidden_size=64), None, tuned_lens=lens, check_hash=False)


def test_hash_skipped_for_weights_not_here():
    lens = tuned_for("llama")
    lens.meta["unembed_hash"] = "0" * 64  # would be refused if compared
    meta_model = copy.deepcopy(build("llama")).to("meta")  # as nnsight builds a model for remote runs
    assert LogitLens(meta_model, None, check=False, tuned_lens=lens).lens is lens
    assert LogitLens(build("llama"), None, tuned_lens=lens, check_hash=False).lens is lens
    with pytest.raises(LogitLensError, match="hash mismatch"):
        LogitLens(build("llama"), None, tuned_lens=lens)


def test_bad_arguments_are_one_line():
    lens = tuned_for("llama")
    with pytest.raises(LogitLensError, match="either tuned_lens= or lens=, not both"):
        LogitLens(build("llama"), None, tuned_lens=lens, lens=IdentityLens())
    with pytest.raises(LogitLensError, match="either tuned_lens= or lens=, not both"):
        LogitLens.from_pretrained("/no/such/model", tuned_lens=lens, lens=IdentityLens())
    with pytest.raises(LogitLensError, match="tuned_lens must be a folder"):
        LogitLens(build("llama"), None, tuned_lens=3)


def test_from_pretrained_reads_the_folder_before_the_model(tmp_path, monkeypatch):
    import transformers

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the tuned lens folder was read")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    with pytest.raises(LogitLensError, match="does not exist"):
        LogitLens.from_pretrained("default", tuned_lens=tmp_path / "missing")


def test_from_pretrained_with_a_tuned_lens(tiny_model_dir, lens):
    weight, bias = random_translators(3, 64, seed=7)
    tuned = TunedLens.for_model(lens)
    with torch.no_grad():
        tuned.weight.copy_(weight)
        tuned.bias.copy_(bias)
    expected = LogitLens(lens.model, lens.tokenizer, tuned_lens=tuned).run("Hello world", top_k=3)
    loaded = LogitLens.from_pretrained(str(tiny_model_dir), tuned_lens=tuned)
    assert_same_result(loaded.run("Hello world", top_k=3), expected)


# ---- sub-block rows: refused before any model work -------------------------------------------------------
def test_subblock_rows_are_refused_before_the_forward():
    model = build("llama")
    lens = LogitLens(model, None, tuned_lens=tuned_for("llama"))
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(LogitLensError, match="no translator for the sub-block row '0.attn'") as e:
            lens.run(ONE, include_subblocks=True)
        assert "\n" not in str(e.value)
        with pytest.raises(LogitLensError, match="sub-block row"):
            lens.layer_logits(ONE, include_subblocks=True)
        assert calls == []
        lens.run(ONE, include_subblocks=True, lens=IdentityLens())  # the logit lens still has them
        assert calls == [1]
    finally:
        handle.remove()


# ---- (f) pickled objects are never unpickled -----------------------------------------------------------
RAN: list[str] = []


def _payload_ran(what: str) -> str:
    RAN.append(what)
    return what


class _Payload:
    def __reduce__(self):
        return (_payload_ran, ("unpickled",))


def test_pickled_object_in_params_is_refused(tmp_path):
    torch.save({"0.weight": _Payload(), "0.bias": torch.zeros(32)}, tmp_path / "params.pt")
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 32, "num_hidden_layers": 1}))
    for read in (TunedLens.load, load_lens):
        with pytest.raises(LogitLensError) as e:
            read(tmp_path)
        message = str(e.value)
        assert "\n" not in message and "\x1b" not in message
        assert "holds a pickled object" in message and "_payload_ran" in message and "weights_only" in message
    assert RAN == []


def test_non_tensor_entries_are_refused(tmp_path):
    torch.save({"0.weight": [1.0, 2.0]}, tmp_path / "params.pt")  # a list: weights_only lets it through
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 2, "num_hidden_layers": 1}))
    with pytest.raises(LogitLensError, match=r"entry '0.weight' is a list, not a tensor"):
        TunedLens.load(tmp_path)


# ---- the views name the lens ---------------------------------------------------------------------------
def test_views_name_the_tuned_lens():
    from logitlens.views.model import heatmap_model
    from logitlens.views.plotly import heatmap
    from logitlens.views.png import subtitle
    from logitlens.views.report import report_html
    from logitlens.views.terminal import grid_table

    model = build("llama")
    tuned = LogitLens(model, None, name="llama", tuned_lens=tuned_for("llama")).run(ONE)
    plain = LogitLens(model, None, name="llama").run(ONE)
    assert heatmap_model(tuned).lens_label == "tuned lens" and heatmap_model(plain).lens_label == ""
    assert "tuned lens" in str(grid_table(tuned).title) and "lens" not in str(grid_table(plain).title)
    assert "tuned lens" in heatmap(tuned).layout.title.text
    assert "tuned lens" not in heatmap(plain).layout.title.text
    assert "tuned lens" in subtitle(heatmap_model(tuned, hover=False))
    assert "tuned lens" in report_html(tuned) and "tuned lens" not in report_html(plain)


def test_python_compare_names_the_lenses():
    model = build("llama")
    plain = LogitLens(model, None, name="llama").run(ONE)
    tuned = LogitLens(model, None, name="llama", tuned_lens=tuned_for("llama")).run(ONE)
    text = logitlens.compare([plain, tuned], 0).to_json()
    assert "llama (logit)" in text and "llama (tuned)" in text
    assert "(logit)" not in logitlens.compare([plain, plain], 0).to_json()  # one lens: names as they were


def test_exported():
    assert "TunedLens" in logitlens.__all__ and logitlens.TunedLens is TunedLens


# ---- (g) the command line --------------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def cli_lenses(lens, tmp_path_factory):
    """Tuned lens folders for the tiny CLI model (3 blocks, d_model 64) and for models it is not."""
    root = tmp_path_factory.mktemp("lenses")
    good = TunedLens.for_model(lens)
    weight, bias = random_translators(3, 64, seed=8)
    with torch.no_grad():
        good.weight.copy_(weight)
        good.bias.copy_(bias)
    good.save(root / "good")
    good.save(root / "good-package", format="tuned-lens")
    meta = {"base_model_name_or_path": "other-model"}
    TunedLens(2, 64, **meta, unembed_hash=good.meta["unembed_hash"]).save(root / "layers")
    TunedLens(3, 32, **meta).save(root / "width")
    from conftest import make_llama

    other = make_llama(lens.decoder.vocab_size, seed=1)  # the same shapes, another unembedding
    TunedLens(3, 64, **meta, unembed_hash=package_hash(other.get_output_embeddings().weight)).save(
        root / "hash"
    )
    (root / "empty").mkdir()
    (root / "config-only").mkdir()
    (root / "config-only" / "config.json").write_text(json.dumps({"d_model": 64, "num_hidden_layers": 3}))
    (root / "pickled").mkdir()
    (root / "pickled" / "config.json").write_text(json.dumps({"d_model": 64, "num_hidden_layers": 3}))
    torch.save({"0.weight": _Payload()}, root / "pickled" / "params.pt")
    (root / "short").mkdir()
    (root / "short" / "config.json").write_text(json.dumps({"d_model": 64, "num_hidden_layers": 3}))
    torch.save({f"{i}.weight": torch.zeros(64, 64) for i in range(2)}, root / "short" / "params.pt")
    return root, good


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "has no config.json"),
        ("config-only", "has config.json but neither translators.safetensors nor params.pt"),
        ("layers", "with blocks = 2, but"),
        ("width", "with d_model = 32, but"),
        ("hash", "hash mismatch"),
        ("pickled", "holds a pickled object"),
        ("short", "lacks 1 of the 3 translators"),
    ],
)
def test_run_refuses_a_bad_tuned_lens(capsys, tiny_model_dir, cli_lenses, folder, message):
    root, _ = cli_lenses
    code, out, err = run_cli(capsys, "run", "Hi", "--model", tiny_model_dir, "--tuned-lens", root / folder)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logitlens: error: "), err
    assert message in lines[0]
    assert RAN == []


@pytest.mark.parametrize("folder", ["missing", "empty", "config-only", "pickled", "short"])
def test_bad_folder_fails_before_the_model_loads(capsys, tiny_model_dir, cli_lenses, monkeypatch, folder):
    import transformers

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the tuned lens folder was read")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    root, _ = cli_lenses
    code, _, err = run_cli(capsys, "run", "Hi", "--model", tiny_model_dir, "--tuned-lens", root / folder)
    assert code == 2 and "AssertionError" not in err
    code, _, err = run_cli(
        capsys, "compare", "Hi", "--model", tiny_model_dir, "--model", tiny_model_dir,
        "--tuned-lens", "-", "--tuned-lens", root / folder,
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_no_lens_check_accepts_another_unembedding(capsys, tiny_model_dir, cli_lenses, tmp_path):
    root, _ = cli_lenses
    path = tmp_path / "r.json"
    argv = ["run", "Hi", "--model", tiny_model_dir, "--tuned-lens", root / "hash", "--json", path]
    code, out, err = run_cli(capsys, *argv, "--no-lens-check")
    assert code == 0, err
    assert LensResult.load(path).meta["lens"] == "tuned"
    code, _, err = run_cli(capsys, *argv[:-2], "--no-lens-check", "--tuned-lens", root / "width")
    assert code == 2 and "d_model = 32" in err  # shapes are checked whatever the flag


@pytest.mark.parametrize("folder", ["good", "good-package"])
def test_run_with_a_tuned_lens(capsys, tiny_model_dir, cli_lenses, tmp_path, lens, folder):
    root, good = cli_lenses
    paths = {s: tmp_path / f"r.{s}" for s in ("json", "html", "png")}
    code, out, err = run_cli(
        capsys, "run", "Hello world", "--model", tiny_model_dir, "--tuned-lens", root / folder,
        "--json", paths["json"], "--html", paths["html"], "--png", paths["png"], "--top-k", "3",
    )  # fmt: skip
    assert code == 0, err
    assert "top-1 token per row x position (prompt 1) · tuned lens" in " ".join(out.split())  # (wrapped)
    saved = LensResult.load(paths["json"])
    assert saved.meta["lens"] == "tuned"
    expected = LogitLens(lens.model, lens.tokenizer, tuned_lens=good).run("Hello world", top_k=3)
    assert torch.equal(saved.top_ids, expected.top_ids)
    torch.testing.assert_close(saved.entropy, expected.entropy)
    plain = lens.run("Hello world", top_k=3)
    assert not torch.equal(saved.top_ids, plain.top_ids)
    assert "tuned lens" in paths["html"].read_text() and paths["png"].stat().st_size > 0


def test_compare_logit_and_tuned(capsys, tiny_model_dir, cli_lenses, tmp_path, monkeypatch):
    import logitlens.views.png as png_view
    from logitlens.engine.lens import LogitLens as Lens

    root, _ = cli_lenses
    loads, titles = [], []
    real_load, real_png = Lens.from_pretrained.__func__, png_view.write_compare_png

    def counted(cls, *args, **kwargs):
        loads.append(args[0])
        return real_load(cls, *args, **kwargs)

    def png(results, names, path, *a, **k):
        titles.extend(names)
        return real_png(results, names, path, *a, **k)

    monkeypatch.setattr(Lens, "from_pretrained", classmethod(counted))
    monkeypatch.setattr(png_view, "write_compare_png", png)
    out_json, html = tmp_path / "c.json", tmp_path / "c.html"
    code, out, err = run_cli(
        capsys, "compare", "Hello world", "--model", tiny_model_dir, "--model", tiny_model_dir,
        "--tuned-lens", "-", "--tuned-lens", root / "good", "--json", out_json, "--html", html,
        "--png", tmp_path / "c.png",
    )  # fmt: skip
    assert code == 0, err
    assert len(loads) == 1  # the same model twice: loaded once
    name = str(tiny_model_dir)
    assert f"{name} (logit)" in out and f"{name} (tuned)" in out
    assert titles == [f"{name} (logit)", f"{name} (tuned)"]
    files = {p.name.rsplit("_", 1)[-1]: LensResult.load(p) for p in tmp_path.glob("c-*.json")}
    assert set(files) == {"logit.json", "tuned.json"}
    assert files["logit.json"].meta["lens"] == "logit" and files["tuned.json"].meta["lens"] == "tuned"
    assert not torch.equal(files["logit.json"].top_ids, files["tuned.json"].top_ids)
    text = html.read_text()
    assert f"{name} (logit)" in text and f"{name} (tuned)" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tuned-lens", "GOOD"], "got 1 --tuned-lens for 2 --model: give one per --model"),
        (["--tuned-lens", "-", "--tuned-lens", "-", "--tuned-lens", "GOOD"], "got 3 --tuned-lens for 2"),
        (["--tuned-lens", "-", "--tuned-lens", "HASH"], "hash mismatch"),
    ],
)
def test_compare_bad_tuned_lens_arguments(capsys, tiny_model_dir, cli_lenses, extra, message):
    root, _ = cli_lenses
    extra = [str(root / x.lower()) if x.isupper() else x for x in extra]
    code, _, err = run_cli(
        capsys, "compare", "Hi", "--model", tiny_model_dir, "--model", tiny_model_dir, *extra
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_remote_with_a_tuned_lens_is_refused(capsys, tiny_model_dir, cli_lenses):
    root, _ = cli_lenses
    code, _, err = run_cli(
        capsys, "run", "Hi", "--model", tiny_model_dir, "--tuned-lens", root / "good", "--remote", "local"
    )
    assert code == 2 and "leave out --remote" in err and len(err.strip().splitlines()) == 1
