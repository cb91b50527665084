"""Architecture coverage: every family in the table decodes every row exactly as the model itself would.

For each tiny random model (tests/tiny_models.py: perturbed norms and biases, untied unembedding,
post-processing that bites) the lens must
  (a) reproduce the model's own logits on its last row, and the run() statistics of that row;
  (b) reproduce, on EVERY row i, the logits of the same model cut to its first i blocks (an independent
      reference: the model's own forward, with zero blocks for row 0), and the run() statistics of a
      middle row computed directly from those reference logits;
  (c) pass the load-time self-check, and fail it with a LogitLensError that names the model_type and
      the fix when the table entry is wrong; families missing from the table are discovered;
  (d) never normalise twice: Hugging Face's last hidden_states entry is already normalised.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch

import logitlens
from logitlens import ARCHITECTURES, LogitLens, LogitLensError
from logitlens.model import architectures as arch_module
from tiny_models import ALL, FAMILIES, MORE, RENAMED, SPECS, UNLISTED, VARIANTS, build, module_at, truncated

# Token ids of different lengths (padding), SHORTEST FIRST: the lens batches longest first, so a result
# that is not put back in input order fails every family's test.
PROMPTS = [[9, 120, 64, 3, 77], [5, 17, 200, 33, 90, 4, 250]]
TOP_K = 5
ATOL = 1e-4
ZOO = ALL + MORE  # every tiny model, issue 23's families included


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread, and do not spin on cores other workers share."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_type(name: str) -> str:
    return SPECS[name].model_type


@cache
def lens_for(name: str) -> LogitLens:
    return LogitLens(build(name), tokenizer=None)


@cache
def model_logits(name: str, p: int) -> torch.Tensor:
    """(T, V) the full model's logits for PROMPTS[p]."""
    with torch.inference_mode():
        return build(name)(torch.tensor([PROMPTS[p]])).logits[0].float()


@cache
def reference_rows(name: str, p: int) -> torch.Tensor:
    """(R, T, V): row i = logits of the model cut to its first i blocks, run normally on PROMPTS[p]."""
    n_blocks = len(module_at(build(name), SPECS[name].blocks))
    ids = torch.tensor([PROMPTS[p]])
    rows = []
    for i in range(n_blocks + 1):
        with torch.inference_mode():
            rows.append(truncated(name, i)(ids).logits[0].float())
    return torch.stack(rows)


@cache
def run_result(name: str) -> logitlens.LensResult:
    return lens_for(name).run(PROMPTS, top_k=TOP_K)


# ---- (a) the last row is the model's output ---------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_last_row_equals_model_logits(name):
    lens = lens_for(name)
    for p, ids in enumerate(PROMPTS):
        rows = lens.layer_logits(ids)  # (R, T, V)
        assert rows.shape == (lens.n_layers + 1, len(ids), lens.decoder.vocab_size)
        assert (rows[-1] - model_logits(name, p)).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", ZOO)
def test_run_last_row_matches_softmax_of_model_logits(name):
    res = run_result(name)
    for p, ids in enumerate(PROMPTS):
        t = len(ids)
        probs = torch.softmax(model_logits(name, p), dim=-1)  # (T, V)
        ref_probs, ref_ids = probs.topk(TOP_K, dim=-1)
        assert torch.equal(res.top_ids[p, -1, :t, 0], ref_ids[:, 0])
        torch.testing.assert_close(res.top_probs[p, -1, :t], ref_probs, atol=1e-5, rtol=0)
        assert torch.all(res.kl_to_final[p, -1, :t] == 0)


# ---- (b) every row is the model cut after that many blocks ------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_every_row_equals_truncated_model(name):
    lens = lens_for(name)
    for p, ids in enumerate(PROMPTS):
        ours = lens.layer_logits(ids)  # (R, T, V)
        ref = reference_rows(name, p)
        assert ours.shape == ref.shape
        for i in range(ref.shape[0]):
            diff = (ours[i] - ref[i]).abs().max().item()
            assert diff <= ATOL, f"{name}: row {i} ({lens.row_names[i]}) differs by {diff:.3g}"
        # Not vacuous: the blocks change the prediction, so a wrong row would be caught.
        assert (ref[0] - ref[-1]).abs().max().item() > 0.1


@pytest.mark.parametrize("name", ZOO)
def test_run_statistics_of_a_middle_row(name):
    res = run_result(name)
    r = (lens_for(name).n_layers + 1) // 2  # a middle row (neither the embedding nor the output)
    for p, ids in enumerate(PROMPTS):
        t = len(ids)
        ref = reference_rows(name, p)
        logp = torch.log_softmax(ref[r].double(), dim=-1)  # (T, V)
        logp_final = torch.log_softmax(ref[-1].double(), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        kl = (logp_final.exp() * (logp_final - logp)).sum(-1)  # KL(final || row)
        top_logp, top_ids = logp.topk(TOP_K, dim=-1)
        ce = -logp[torch.arange(t - 1), torch.tensor(ids[1:])]
        torch.testing.assert_close(res.entropy[p, r, :t].double(), entropy, atol=1e-4, rtol=0)
        torch.testing.assert_close(res.kl_to_final[p, r, :t].double(), kl, atol=1e-4, rtol=0)
        assert torch.equal(res.top_ids[p, r, :t], top_ids)
        torch.testing.assert_close(res.top_probs[p, r, :t].double(), top_logp.exp(), atol=1e-5, rtol=0)
        torch.testing.assert_close(res.cross_entropy[p, r, : t - 1].double(), ce, atol=1e-4, rtol=0)
        assert torch.isnan(res.cross_entropy[p, r, t - 1])


@pytest.mark.parametrize("name", ZOO)
def test_decoding_chunk_by_chunk_into_one_buffer_changes_nothing(name):
    """A budget of one position per chunk: every chunk after the first decodes into the first's buffer
    (``out=``: mm / addmm instead of F.linear), and the statistics stay those of one product."""
    lens = lens_for(name)
    cols = [list(range(len(PROMPTS[0])))]
    h = lens.capture([PROMPTS[0]], cols, lens.rows())[0, 1]  # (T, d) block 0's row, as the lens reads it
    buf = torch.full((h.shape[0], lens.decoder.vocab_size), float("nan"))
    assert torch.equal(lens.decoder.logits(h, out=buf), lens.decoder.logits(h))
    small = LogitLens(build(name), tokenizer=None, budget_bytes=1).run(PROMPTS, top_k=TOP_K)
    res = run_result(name)
    assert torch.equal(small.top_ids, res.top_ids)
    for field in ("top_probs", "entropy", "kl_to_final", "cross_entropy"):
        torch.testing.assert_close(
            getattr(small, field), getattr(res, field), atol=1e-5, rtol=0, equal_nan=True
        )


# ---- (c) the self-check -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES + VARIANTS + MORE)
def test_self_check_passes_from_the_table(name):
    lens = lens_for(name)
    assert lens.arch_source == "table"
    assert lens.arch == ARCHITECTURES[model_type(name)]
    assert lens.self_check_diff is not None and lens.self_check_diff <= ATOL
    assert lens.decoder.layers is module_at(build(name), SPECS[name].blocks)


@pytest.mark.parametrize("name", FAMILIES + VARIANTS)
def test_unembedding_is_untied_and_biases_are_live(name):
    """The fixtures exercise what they claim: a distinct unembedding, a nonzero lm_head bias."""
    model = build(name)
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    assert out.weight.data_ptr() != inp.weight.data_ptr()
    assert lens_for(name).decoder.weight is out.weight
    if model_type(name) in ("gptj", "phi"):
        assert lens_for(name).decoder.bias is not None
        assert lens_for(name).decoder.bias.abs().max().item() > 0.1


def _wrong(name: str, **changes) -> tuple[str, logitlens.Architecture]:
    return name, ARCHITECTURES[model_type(name)].replace(**changes)


WRONG_ENTRIES = {
    "gemma2-no-softcap": _wrong("gemma2", softcap=None),
    "gemma3_text-no-softcap": _wrong("gemma3_text", softcap=None),
    "cohere-no-logit_scale": _wrong("cohere", logit_scale=None),
    "granite-no-logits_scaling": _wrong("granite", logit_divisor=None),
    "llama-wrong-norm": _wrong("llama", final_norm="model.layers.0.input_layernorm"),
    "llama-no-norm": _wrong("llama", final_norm=None),
    "gpt2-missing-norm": _wrong("gpt2", final_norm="transformer.ln_final"),
    "phi-norm-of-llama": _wrong("phi", final_norm="model.norm"),
    "opt-project-no-projection": _wrong("opt-project", pre_unembed=()),
    "gpt_neox-old-unembed": _wrong("gpt_neox", unembed="embed_out"),
    "falcon-missing-blocks": _wrong("falcon", layers="transformer.layers"),
}


@pytest.mark.parametrize("case", list(WRONG_ENTRIES))
def test_self_check_rejects_a_wrong_entry_given_as_arch(case):
    name, wrong = WRONG_ENTRIES[case]
    with pytest.raises(LogitLensError) as info:
        LogitLens(build(name), arch=wrong)
    msg = str(info.value)
    assert f"model_type '{model_type(name)}'" in msg
    assert "register_architecture" in msg and "arch=" in msg


@pytest.mark.parametrize("case", ["gemma2-no-softcap", "cohere-no-logit_scale", "llama-wrong-norm"])
def test_self_check_rejects_a_wrong_table_entry(case, monkeypatch):
    name, wrong = WRONG_ENTRIES[case]
    monkeypatch.setitem(arch_module.ARCHITECTURES, model_type(name), wrong)
    with pytest.raises(LogitLensError, match=r"self-check failed for model_type .*register_architecture"):
        LogitLens(build(name))
    # The check can be turned off, and then the wrong entry is used as given.
    assert LogitLens(build(name), check=False).arch == wrong


def test_register_architecture_fixes_a_wrong_entry(monkeypatch):
    name, wrong = WRONG_ENTRIES["gemma2-no-softcap"]
    monkeypatch.setitem(arch_module.ARCHITECTURES, "gemma2", wrong)
    logitlens.register_architecture("gemma2", wrong.replace(softcap="final_logit_softcapping"))
    assert LogitLens(build(name)).self_check_diff <= ATOL


@pytest.mark.parametrize("name", FAMILIES + VARIANTS + RENAMED + ["qwen4_exp_text"])
def test_discovery_when_the_entry_is_missing(name, monkeypatch):
    monkeypatch.delitem(arch_module.ARCHITECTURES, model_type(name))
    lens = LogitLens(build(name))
    assert lens.arch_source == "discovered"
    assert lens.self_check_diff <= ATOL
    for p, ids in enumerate(PROMPTS[:1]):
        torch.testing.assert_close(lens.layer_logits(ids), reference_rows(name, p), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", UNLISTED)
def test_families_missing_from_the_table_are_discovered(name):
    assert model_type(name) not in ARCHITECTURES
    lens = lens_for(name)
    assert lens.arch_source == "discovered"
    assert lens.self_check_diff <= ATOL
    assert repr(lens).endswith("arch=discovered)")


# ---- (d) never normalise twice ----------------------------------------------------------------------


def test_hf_last_hidden_state_is_already_normalised():
    model = build("llama")
    lens = lens_for("llama")
    ids = PROMPTS[0]
    raw: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        raw["h"] = output[0] if isinstance(output, tuple) else output

    handle = model.model.layers[-1].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            out = model(torch.tensor([ids]), output_hidden_states=True)
    finally:
        handle.remove()
    hs = out.hidden_states  # embeddings, block 0 .. block L-2 outputs, then NORM(block L-1 output)
    assert len(hs) == lens.n_layers + 1
    with torch.inference_mode():
        torch.testing.assert_close(hs[-1], model.model.norm(raw["h"]), atol=1e-6, rtol=0)
    assert (hs[-1] - raw["h"]).abs().max().item() > 0.1  # so it is not the raw residual stream

    rows = lens.layer_logits(ids)  # (R, T, V)
    assert (rows[-1] - out.logits[0]).abs().max().item() <= ATOL
    # Rows 0..L-1 are Hugging Face's raw entries decoded once through norm + unembedding ...
    for i in range(lens.n_layers):
        torch.testing.assert_close(rows[i], lens.decoder.logits(hs[i][0]), atol=ATOL, rtol=0)
    # ... but decoding the last entry again would normalise twice: visibly wrong, which the lens avoids.
    twice = lens.decoder.logits(hs[-1][0])
    assert (twice - out.logits[0]).abs().max().item() > 1e-2


def test_all_requested_families_are_covered():
    """Every family the issue lists is built (none skipped) and is in the table."""
    assert len(FAMILIES) == 23
    missing = [f for f in FAMILIES if f not in ARCHITECTURES]
    assert not missing, missing
    built = {model_type(n): type(build(n)).__name__ for n in FAMILIES}
    assert set(built) == set(FAMILIES)
    assert build("opt-project").model.decoder.project_out is not None
    assert build("opt-postln").model.decoder.final_layer_norm is None
