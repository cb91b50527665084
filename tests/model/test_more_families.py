"""Issue 23's families beyond what test_architectures checks for every family (exact rows, self-check):

- a padded batch equals each prompt alone, on every new family (CPM-Ant's left padding included);
- multi-stream families (hyper-connections, AltUp, a final mix of block states): sub-block rows and
  attribution are refused in one line, tuned lenses decode the row the model's own combination defines,
  and the nnsight backend refuses in one line;
- "attn" rows of CTRL, ModernBERT-decoder and CPM-Ant against the model with that block's MLP zeroed;
- discovery: the families it cannot decode exactly are refused in one line naming the missing part and
  the Architecture to pass by hand; the hand-made Architecture of docs/architectures.md works.

Each test names the bug it is there to catch.
"""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
from torch import nn

from logitlens import Architecture, LogitLens, LogitLensError
from logitlens.engine.tuned import TunedLens
from logitlens.model import architectures as arch_module
from tiny_models import MORE, RENAMED, SPECS, STREAMS, build, module_at

PROMPTS = [[9, 120, 64, 3, 77], [5, 17, 200, 33, 90, 4, 250], [7, 8]]
ATOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@cache
def lens_for(name: str) -> LogitLens:
    return LogitLens(build(name), None)


def one_line(info: pytest.ExceptionInfo) -> str:
    msg = str(info.value)
    assert isinstance(info.value, LogitLensError) and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("name", MORE)
def test_padded_batch_equals_each_prompt_alone(name):
    """Catches pads that leak into real positions (CPM-Ant reads pads from the ids, left-padded, and
    ignores the attention mask) and positions that do not line up with the user's tokens."""
    lens = lens_for(name)
    res = lens.run(PROMPTS, top_k=3, targets=[5])
    for i, ids in enumerate(PROMPTS):
        alone = lens.run([ids], top_k=3, targets=[5])
        t = len(ids)
        assert alone.top_ids.shape[2] == t  # one column per user token (no prepended prompt tokens)
        assert torch.equal(res.top_ids[i, :, :t], alone.top_ids[0]), f"{name}: prompt {i}"
        for stat in ("top_probs", "entropy", "kl_to_final", "target_probs"):
            torch.testing.assert_close(res.stats[stat][i, :, :t], alone.stats[stat][0], atol=1e-5, rtol=0)


def test_cpmant_left_padding_matters():
    """Not vacuous: with the right padding the batch uses elsewhere, CPM-Ant masks the wrong positions."""
    lens = LogitLens(build("cpmant"), None, arch=arch_module.ARCHITECTURES["cpmant"].replace(pad_left=False))
    res = lens.run(PROMPTS[:2], top_k=3)
    alone = lens.run([PROMPTS[0]], top_k=3)
    assert (res.top_probs[0, :, :5] - alone.top_probs[0]).abs().max() > 1e-3


# ---- multi-stream families -------------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_multi_stream_refuses_subblock_rows_and_attribution_in_one_line(name):
    lens = lens_for(name)
    mt = SPECS[name].model_type
    with pytest.raises(LogitLensError) as info:
        lens.run([PROMPTS[0]], include_subblocks=True)
    msg = one_line(info)
    assert f"model_type '{mt}' has no 'attn' rows" in msg and "without sub-block rows" in msg
    with pytest.raises(LogitLensError) as info:
        lens.attribute(PROMPTS[0], 5)
    msg = one_line(info)
    assert f"attribution is not defined for model_type '{mt}'" in msg and "not a sum" in msg


@pytest.mark.parametrize("name", STREAMS)
def test_tuned_lens_translates_the_combined_row(name):
    """A tuned lens acts on the row the model's own combination defines (d-vectors), in every row."""
    lens = lens_for(name)
    tuned = TunedLens.for_model(lens)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tuned.weight.copy_(torch.randn(tuned.weight.shape, generator=g) * 0.1)
        tuned.bias.copy_(torch.randn(tuned.bias.shape, generator=g) * 0.5)
    ids = PROMPTS[0]
    rows = lens.capture([ids], [list(range(len(ids)))], lens.rows())[0]  # (R, T, d)
    ours = lens.layer_logits(ids, lens=tuned)  # (R, T, V)
    for j in range(lens.n_layers):
        want = lens.decoder.logits(tuned.translate(j, rows[j]))
        torch.testing.assert_close(ours[j], want, atol=ATOL, rtol=0)
    assert (ours[0] - lens.layer_logits(ids)[0]).abs().max() > 1e-2  # the translators did something
    torch.testing.assert_close(ours[-1], lens.layer_logits(ids)[-1], atol=ATOL, rtol=0)  # output row kept


@pytest.mark.parametrize("name", [*STREAMS, "cpmant"])
def test_nnsight_backend_refuses_in_one_line(name):
    pytest.importorskip(
        "nnsight", reason="needs the remote extra: pip install 'logitlens[remote]' (make test installs it)"
    )
    from logitlens.model.backends.nnsight import nnsight_backend

    with pytest.raises(LogitLensError) as info:
        nnsight_backend(build(name), lens_for(name).decoder)
    assert "use the default hooks backend" in one_line(info)


@pytest.mark.parametrize("name", ["deepseek_v4", "hy_v4", "gemma3n_text"])
def test_the_row_is_not_an_average_of_streams(name):
    """Not vacuous: the plain mean of the streams decodes to something else than the model's combination."""
    lens = lens_for(name)
    block = lens.decoder.layers[0]
    seen = {}
    handle = block.register_forward_hook(
        lambda m, a, out: seen.__setitem__("h", out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.inference_mode():
            build(name)(torch.tensor([PROMPTS[0]]))
    finally:
        handle.remove()
    h = seen["h"]
    mean = h.mean(2 if name != "gemma3n_text" else 0)  # (1, T, d)
    ours = lens.layer_logits(PROMPTS[0])[1]
    assert (lens.decoder.logits(mean[0]) - ours).abs().max() > 1e-2


# ---- "attn" rows of the new sequential families ------------------------------------------------------


class _Zero(nn.Module):
    def forward(self, x, *args, **kwargs):
        return torch.zeros_like(x)


# family -> (block attribute to replace, replacement): the block then outputs its residual after attention
ZEROED = {"ctrl": ("ffn", _Zero), "modernbert-decoder": ("mlp", _Zero), "cpmant": ("ffn", nn.Identity)}


@pytest.mark.parametrize("name", list(ZEROED))
def test_attn_rows_equal_the_model_with_that_mlp_removed(name):
    """Catches a wrong ``mid`` entry: row "i.attn" is the model cut after block i with block i's MLP
    (and its residual branch) removed, run by the model itself."""
    lens = lens_for(name)
    ids = PROMPTS[1]
    ours = lens.layer_logits(ids, include_subblocks=True)
    names = [r.name for r in lens.rows(include_subblocks=True)]
    attr, make = ZEROED[name]
    parent_path, blocks_attr = SPECS[name].blocks.rsplit(".", 1)
    for i in range(lens.n_layers):
        model = copy.deepcopy(build(name))
        parent = module_at(model, parent_path)
        blocks = list(getattr(parent, blocks_attr))[: i + 1]
        setattr(blocks[i], attr, make())
        setattr(parent, blocks_attr, nn.ModuleList(blocks))
        with torch.inference_mode():
            ref = model(torch.tensor([ids])).logits[0].float()
        diff = (ours[names.index(f"{i}.attn")] - ref).abs().max().item()
        assert diff <= ATOL, f"{name}: row {i}.attn differs by {diff:.3g}"


# ---- discovery ---------------------------------------------------------------------------------------


DISCOVERY_REFUSALS = {
    "deepseek_v4": "several residual streams",
    "hy_v4": "several residual streams",
    "gemma3n_text": "several residual streams",
    "inkling2_text": "could not find what the model does to the last block's output before its final norm",
    "cpmant": "prepends tokens inside its blocks",
}


@pytest.mark.parametrize("name", list(DISCOVERY_REFUSALS))
def test_discovery_refuses_what_it_cannot_decode_in_one_line(name, monkeypatch):
    mt = SPECS[name].model_type
    monkeypatch.delitem(arch_module.ARCHITECTURES, mt)
    with pytest.raises(LogitLensError) as info:
        LogitLens(build(name))
    msg = one_line(info)
    assert f"model_type '{mt}'" in msg and DISCOVERY_REFUSALS[name] in msg
    assert "arch=logitlens.Architecture(" in msg and "docs/architectures.md" in msg


def test_discovery_names_a_multiplier_the_config_does_not(monkeypatch):
    """A logit multiplier the config no longer states (it says 1.0, the model keeps 0.25): the refusal
    says the logits are ours times 0.25 and how to pass the Architecture by hand."""
    model = copy.deepcopy(build("falcon_h1"))
    model.config.lm_head_multiplier = 1.0  # the model copied 0.25 at init
    monkeypatch.delitem(arch_module.ARCHITECTURES, "falcon_h1")
    with pytest.raises(LogitLensError) as info:
        LogitLens(model)
    msg = one_line(info)
    assert "ours times 0.25" in msg and "a logit multiplier the config does not name" in msg
    assert "discovery found blocks 'model.layers'" in msg and "final norm 'model.final_layernorm'" in msg


@pytest.mark.parametrize("name", RENAMED)
def test_discovery_finds_renamed_norms_heads_and_post_processing(name, monkeypatch):
    """The patterns of issue 23's table, found without the table: the norm by following the data, the
    head before the unembedding, the multiplier / divisor / soft-cap / vocabulary cut by config name."""
    monkeypatch.delitem(arch_module.ARCHITECTURES, SPECS[name].model_type)
    found = LogitLens(build(name)).arch
    table = lens_for(name).arch
    for field in ("layers", "final_norm", "logit_scale", "logit_divisor", "softcap", "vocab_limit"):
        assert getattr(found, field) == getattr(table, field), (name, field)
    assert found.pre_unembed == table.pre_unembed and found.unembed == table.unembed.split("|")[0]


def test_hand_made_architecture_from_the_docs():
    """The example in docs/architectures.md: CTRL given by hand, exact."""
    arch = Architecture(layers="transformer.h", final_norm="transformer.layernorm", unembed="lm_head")
    lens = LogitLens(build("ctrl"), None, arch=arch)
    assert lens.arch_source == "given" and lens.self_check_diff <= ATOL
    torch.testing.assert_close(lens.layer_logits(PROMPTS[0]), lens_for("ctrl").layer_logits(PROMPTS[0]))
