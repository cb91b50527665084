"""The engine's invariants on a tiny random Llama: exactness, per-row norms, padding, positions, targets,
chunking, statistics against an independent computation, and every bad-input message."""

from __future__ import annotations

import math

import pytest
import torch

import logitlens
from logitlens import LensResult, LogitLens, LogitLensError

PROMPTS = ["The Eiffel Tower is in the city of", "Hello", "one two three four five six"]


def model_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()  # (T, V)


def test_last_row_equals_model_logits(lens, tiny_model, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    raw = lens.layer_logits(ids)  # (R, T, V)
    assert raw.shape == (lens.n_layers + 1, len(ids), len(tokenizer))
    assert (raw[-1] - model_logits(tiny_model, ids)).abs().max() <= 1e-4


def test_hf_last_hidden_state_is_already_normalised(lens, tiny_model, tokenizer):
    """HF's last hidden_states entry is post-norm: decoding it again through the norm would be wrong."""
    ids = tokenizer(PROMPTS[0])["input_ids"]
    with torch.no_grad():
        out = tiny_model(torch.tensor([ids]), output_hidden_states=True)
    twice = lens.decoder.logits(out.hidden_states[-1][0])
    assert (twice - out.logits[0]).abs().max() > 1e-2  # normalising twice is visibly wrong
    assert (lens.layer_logits(ids)[-1] - out.logits[0]).abs().max() <= 1e-4


def _rms_reference(model, h: torch.Tensor) -> torch.Tensor:
    """Independent decode: hand-written RMSNorm with THIS vector's statistics, then the unembedding."""
    norm = model.model.norm
    var = h.pow(2).mean(-1, keepdim=True)
    normed = h * torch.rsqrt(var + norm.variance_epsilon) * norm.weight
    return normed @ model.lm_head.weight.T


def test_every_row_uses_its_own_norm_statistics(lens, tiny_model, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    with torch.no_grad():
        hs = tiny_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    raw = lens.layer_logits(ids)
    for r in range(lens.n_layers):  # hs[r] is the input of block r == row r
        ref = _rms_reference(tiny_model, hs[r][0])
        assert (raw[r] - ref).abs().max() <= 1e-4, f"row {r}"
        other = hs[(r + 1) % lens.n_layers][0]  # another row's statistics, as a cached scale would use
        other_scale = torch.rsqrt(other.pow(2).mean(-1, keepdim=True) + 1e-6)
        cached = (hs[r][0] * other_scale * tiny_model.model.norm.weight) @ tiny_model.lm_head.weight.T
        assert (raw[r] - cached).abs().max() > 1e-3  # a cached final-layer scale would be caught


def test_statistics_match_an_independent_computation(lens, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    target = tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    res = lens.run([ids], top_k=4, targets=[target])
    logp = torch.log_softmax(lens.layer_logits(ids).double(), -1)  # (R, T, V)
    p = logp.exp()
    top = p.topk(4, -1)
    assert torch.equal(res.top_ids[0], top.indices)
    assert torch.allclose(res.top_probs[0].double(), top.values, atol=1e-5)
    entropy = -(p * logp).sum(-1)
    assert torch.allclose(res.entropy[0].double(), entropy, atol=1e-4)
    kl = (p[-1] * (logp[-1] - logp)).sum(-1)
    assert torch.allclose(res.kl_to_final[0].double(), kl, atol=1e-4)
    assert torch.all(res.kl_to_final[0, -1] == 0)
    nxt = torch.tensor(ids[1:])
    ce = -logp[:, :-1].gather(-1, nxt.view(1, -1, 1).expand(logp.shape[0], -1, 1)).squeeze(-1)
    assert torch.allclose(res.cross_entropy[0, :, :-1].double(), ce, atol=1e-4)
    assert torch.isnan(res.cross_entropy[0, :, -1]).all()
    assert torch.equal(res.agrees_with_final[0], top.indices[..., 0] == top.indices[-1:, :, 0])
    assert torch.allclose(res.target_probs[0, ..., 0].double(), p[..., target], atol=1e-6)
    rank = (logp > logp[..., target : target + 1]).sum(-1) + 1
    assert torch.equal(res.target_ranks[0, ..., 0], rank)


def test_result_shapes_and_names(lens):
    res = lens.run(PROMPTS, top_k=3, targets=[" Paris", " Rome"])
    n, rows, pos = 3, lens.n_layers + 1, max(len(t) for t in res.input_ids)
    assert res.top_ids.shape == res.top_probs.shape == (n, rows, pos, 3)
    assert res.entropy.shape == res.kl_to_final.shape == res.cross_entropy.shape == (n, rows, pos)
    assert res.target_probs.shape == res.target_ranks.shape == (n, rows, pos, 2)
    assert res.row_names == ["embed", "0", "1", "2"]
    assert res.tokens[1] == ["Hello"]
    for dtype_field in ("top_probs", "entropy", "kl_to_final", "target_probs"):
        assert getattr(res, dtype_field).dtype == torch.float32
    # cells past a short prompt's end are padding: NaN / -1
    assert torch.isnan(res.entropy[1, :, 1:]).all() and (res.top_ids[1, :, 1:] == -1).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_alone(lens, tokenizer, side):
    tokenizer.padding_side = side
    try:
        enc = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    batched = lens.run(enc["input_ids"], attention_mask=enc["attention_mask"], targets=[" Paris"])
    for i, prompt in enumerate(PROMPTS):
        alone = lens.run(prompt, targets=[" Paris"])
        t = len(alone.input_ids[0])
        assert batched.input_ids[i] == alone.input_ids[0]
        assert torch.equal(batched.top_ids[i, :, :t], alone.top_ids[0])
        for f in ("top_probs", "entropy", "kl_to_final", "target_probs"):
            a, b = getattr(batched, f)[i, :, :t], getattr(alone, f)[0]
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4, equal_nan=True), f


def test_string_batch_and_small_batch_size_agree(lens):
    a = lens.run(PROMPTS, batch_size=1)
    b = lens.run(PROMPTS, batch_size=8)
    assert torch.equal(a.top_ids, b.top_ids)
    assert torch.allclose(a.entropy, b.entropy, atol=1e-5, equal_nan=True)


def test_chunking_does_not_change_results(tiny_model, tokenizer):
    small = LogitLens(tiny_model, tokenizer, budget_bytes=1)  # one position per chunk
    big = LogitLens(tiny_model, tokenizer)
    a, b = small.run(PROMPTS, targets=[" Paris"]), big.run(PROMPTS, targets=[" Paris"])
    assert torch.equal(a.top_ids, b.top_ids)
    assert torch.allclose(a.kl_to_final, b.kl_to_final, atol=1e-5, equal_nan=True)


def test_positions_select_and_cost_less(lens, monkeypatch):
    full = lens.run(PROMPTS, top_k=3)
    decoded = []
    real = lens.decoder.logits
    monkeypatch.setattr(
        lens.decoder, "logits", lambda h, out=None: decoded.append(h.shape[0]) or real(h, out=out)
    )
    last = lens.run(PROMPTS, top_k=3, positions=[-1])
    assert sum(decoded) == len(PROMPTS) * (lens.n_layers + 1)  # one vector per row per prompt
    assert last.top_ids.shape[2] == 1
    for i, ids in enumerate(full.input_ids):
        assert last.positions[i, 0] == len(ids) - 1
        assert torch.equal(last.top_ids[i, :, 0], full.top_ids[i, :, len(ids) - 1])
    both = lens.run(PROMPTS[0], positions=[0, -1])
    assert both.positions[0].tolist() == [0, len(both.input_ids[0]) - 1]


def test_targets_first_token_warning_ids_and_sets(lens, tokenizer):
    multi = " Eiffel Tower"
    assert len(tokenizer(multi, add_special_tokens=False)["input_ids"]) > 1
    with pytest.warns(UserWarning, match="tracking the first"):
        res = lens.run(PROMPTS[0], targets=[multi])
    first = tokenizer(multi, add_special_tokens=False)["input_ids"][0]
    by_id = lens.run(PROMPTS[0], targets=[first])
    assert torch.equal(res.target_probs, by_id.target_probs)
    paris = tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    rome = tokenizer(" Rome", add_special_tokens=False)["input_ids"][0]
    res = lens.run(PROMPTS[0], targets=[paris, rome, (paris, rome)])
    assert torch.allclose(res.target_probs[..., 2], res.target_probs[..., 0] + res.target_probs[..., 1])
    assert torch.equal(
        res.target_ranks[..., 2], torch.minimum(res.target_ranks[..., 0], res.target_ranks[..., 1])
    )
    top1 = int(res.top_ids[0, -1, -1, 0])
    res = lens.run(PROMPTS[0], targets=[top1])
    assert res.target_ranks[0, -1, -1, 0] == 1
    assert res.target_names == [res.token(top1)]


def test_bf16_model_statistics_stay_fp32(tiny_model, tokenizer):
    import copy

    half = LogitLens(copy.deepcopy(tiny_model).to(torch.bfloat16), tokenizer)
    res = half.run(PROMPTS[0], targets=[" Paris"])
    for f in ("top_probs", "entropy", "kl_to_final", "cross_entropy", "target_probs"):
        assert getattr(res, f).dtype == torch.float32
    assert res.meta["dtype"] == "bfloat16"
    full = LogitLens(tiny_model, tokenizer).run(PROMPTS[0], targets=[" Paris"])
    assert torch.allclose(res.entropy, full.entropy, atol=0.1)


def test_truncate_keeps_the_last_tokens(lens):
    ids = list(range(1, 71))  # the tiny model's context is 64
    with pytest.warns(UserWarning, match="kept the last 64 of 70"):
        res = lens.run([ids], truncate=True, positions=[-1])
    assert res.input_ids[0] == ids[-64:]


def test_summary_first_row_and_dataframe(lens):
    res = lens.run(PROMPTS[:2], top_k=2, targets=[" Paris"])
    s = res.summary()
    assert list(s["prompt"]) == PROMPTS[:2]
    assert set(s.columns) >= {"final_top1", "first_stable_row", "kl_falls", "logprob_rises", "p( Paris)"}
    agree = res.agrees_with_final[0, :, len(res.input_ids[0]) - 1].tolist()
    stable = [r.layer for r in res.rows].index(s["first_stable_layer"][0])
    assert s["first_stable_row"][0] == res.rows[stable].label
    assert all(agree[stable:]) and (stable == 0 or not agree[stable - 1])
    df = res.to_dataframe()
    assert len(df) == (len(res.input_ids[0]) + len(res.input_ids[1])) * res.n_rows
    row = df[(df.prompt_index == 0) & (df.row == 1) & (df.position == 2)].iloc[0]
    assert row.top1 == res.token(res.top_ids[0, 1, 2, 0])
    assert math.isclose(row.entropy, float(res.entropy[0, 1, 2]), rel_tol=1e-6)
    assert len(res.first_row()) == 2


def test_save_load_roundtrip(lens, tmp_path):
    res = lens.run(PROMPTS, top_k=3, targets=[" Paris", (" Rome", " Paris")], positions=[0, -1])
    path = res.save(tmp_path / "r.json")
    back = LensResult.load(path)
    for f in (
        "top_ids",
        "top_probs",
        "entropy",
        "kl_to_final",
        "cross_entropy",
        "agrees_with_final",
        "target_probs",
        "target_ranks",
        "positions",
    ):
        assert torch.equal(torch.nan_to_num(getattr(res, f)), torch.nan_to_num(getattr(back, f))), f
    assert back.row_names == res.row_names and back.tokens == res.tokens and back.vocab == res.vocab
    assert back.target_names == res.target_names and back.meta == res.meta
    assert res.meta["model"] == "tiny-llama"


def test_load_rejects_other_versions_and_files(lens, tmp_path):
    data = lens.run("Hello").to_dict()
    data["meta"]["version"] = 99
    with pytest.raises(LogitLensError, match="version 99 is not supported"):
        LensResult.from_dict(data)
    with pytest.raises(LogitLensError, match="not a logitlens result"):
        LensResult.from_dict({"meta": {}})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LogitLensError, match="cannot read result file"):
        LensResult.load(tmp_path / "bad.json")


def test_select_prompts(lens):
    res = lens.run(PROMPTS)
    sub = res.select([2, 0])
    assert sub.n_prompts == 2 and sub.prompts == [PROMPTS[2], PROMPTS[0]]
    assert torch.equal(sub.top_ids[1], res.top_ids[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda L: L.run(""), "prompt 1 is empty"),
        (lambda L: L.run(["ok", ""]), "prompt 2 is empty"),
        (lambda L: L.run([[]]), "prompt 1 is empty: it has no tokens"),
        (lambda L: L.run([list(range(70))]), "has 70 tokens but the model's context is 64"),
        (lambda L: L.run("Hello", top_k=0), "top_k must be an integer from 1"),
        (lambda L: L.run("Hello", top_k=10**6), "top_k must be an integer from 1"),
        (lambda L: L.run([[1, 10**6]]), "token id 1000000 outside the vocabulary"),
        (lambda L: L.run("Hello", targets=[""]), "a target is empty"),
        (lambda L: L.run("Hello", targets=[10**6]), "target token id 1000000 is outside"),
        (lambda L: L.run("Hello", targets=[()]), "a target set is empty"),
        (lambda L: L.run("Hello", targets=[1.5]), "a target must be a string or a token id"),
        (lambda L: L.run("Hello", positions=[5]), "position 5 is out of range for prompt 1"),
        (lambda L: L.run("Hello", positions=[]), "positions is empty"),
        (lambda L: L.run(42), "prompts must be a string"),
        (lambda L: L.run([3.5]), "prompt 1 is a float"),
        (
            lambda L: L.run(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[1, 0, 1]])),
            "the attention mask has holes",
        ),
        (
            lambda L: L.run(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[1, 1]])),
            "attention_mask has shape",
        ),
        (lambda L: L.layer_logits(["a", "b"]), "layer_logits takes one prompt"),
        (lambda L: L.run("Hello", batch_size=-1), "batch_size must be a positive integer, got -1"),
        (lambda L: L.run("Hello", batch_size=0), "batch_size must be a positive integer, got 0"),
        (lambda L: L.run("Hello", lens="tuned"), "lens must be a logitlens.Lens, got str"),
        (lambda L: L.run("Hello").summary(position=10), "position 10 is out of range for prompt 1"),
        (lambda L: L.run("Hello", targets=[1]).first_row(target=3), "target 3 is out of range"),
        (lambda L: L.run("Hello").first_row(), "this result has no targets"),
        (lambda L: L.run("Hello").select([5]), "prompt index out of range"),
        (lambda L: LogitLens(L.model, None, batch_size=0), "batch_size must be a positive integer, got 0"),
        (lambda L: LogitLens(L.model, None, budget_bytes=-5), "budget_bytes must be a positive integer"),
    ],
)
def test_bad_inputs_have_clear_messages(lens, call, message):
    with pytest.raises(LogitLensError, match=message):
        call(lens)


def test_text_needs_a_tokenizer(tiny_model):
    bare = LogitLens(tiny_model, None)
    with pytest.raises(LogitLensError, match="text prompts need a tokenizer"):
        bare.run("Hello")
    with pytest.raises(LogitLensError, match="string targets need a tokenizer"):
        bare.run([[1, 2]], targets=["x"])
    res = bare.run([[1, 2, 3]])
    assert res.tokens == [["#1", "#2", "#3"]]


def test_not_a_model():
    with pytest.raises(LogitLensError, match="wraps a Hugging Face causal LM"):
        LogitLens(torch.nn.Linear(2, 2))


def test_from_pretrained_local_folder_no_remote_code(tiny_model_dir, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    lens = LogitLens.from_pretrained(str(tiny_model_dir))
    assert seen["trust_remote_code"] is False
    assert lens.self_check_diff is not None and lens.self_check_diff <= 1e-4
    assert lens.run("Hello").n_rows == 4


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(
        LogitLensError, match="model 'no/such-model-here' is not a local folder and not in the"
    ):
        LogitLens.from_pretrained("no/such-model-here")
    with pytest.raises(LogitLensError, match=r"folder '.*' is not a model: it has no config.json"):
        LogitLens.from_pretrained(str(tmp_path))
    with pytest.raises(LogitLensError, match="unknown dtype 'float8'; choose one of"):
        LogitLens.from_pretrained(str(tmp_path), dtype="float8")


def test_public_surface():
    assert set(logitlens.__all__) >= {"LogitLens", "LensResult", "LogitLensError", "Architecture"}
