"""The foundation's contracts: registered statistics, iter_run and padding, lenses, rows, the final norm's
description, "attn" rows against an independent reference for every sequential family, and models spread
over devices (accelerate offloading to CPU and disk).

Each test names the bug it is there to catch.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_result_io import assert_same_result

from logitlens import LensResult, LogitLens, LogitLensError
from logitlens.core.rows import SITES, Row, default_rows, parse_row_name
from logitlens.core.stats import Statistic, get_statistic, register_statistic, unregister_statistic
from logitlens.engine.lenses import LENSES, FunctionLens, IdentityLens, Lens
from logitlens.engine.reduce import reduce_logits
from logitlens.engine.tuned import load_lens
from logitlens.model.decoder import Decoder
from logitlens.model.discovery import architecture_for
from tiny_models import ALL, SPECS, D, build, module_at

PROMPTS = ["The Eiffel Tower is in the city of", "Hello", "one two three four five six"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread, and do not spin on cores other workers share."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert isinstance(exc.value, LogitLensError) and "\n" not in msg, msg
    return msg


# ---- a registered statistic reaches every layer -----------------------------------------------------


def _target_logprob(ctx):
    """log of each target's summed probability: (m, R, T)."""
    return torch.stack(
        [ctx.logp.index_select(-1, t.to(ctx.logp.device)).logsumexp(-1) for t in ctx.targets], -1
    )


@pytest.fixture
def extra_stats():
    stats = [
        Statistic("max_logprob", torch.float32, math.nan, label="max log p", kind="nats",
                  meaning="log-probability of the top-1 token", compute=lambda ctx: ctx.logp.amax(-1)),
        Statistic("target_logprob", torch.float32, math.nan, label="log p({target})", kind="nats",
                  per_target=True, meaning="log-probability of each target", compute=_target_logprob),
    ]  # fmt: skip
    try:
        yield [register_statistic(s) for s in stats]
    finally:
        for s in stats:
            unregister_statistic(s.name)


def test_a_registered_statistic_reaches_every_layer(lens, extra_stats, tmp_path):
    """Catches a statistic that the reduction, the functional path, save/load or the export drops."""
    targets = [" Paris", (" Rome", " Paris")]
    res = lens.run(PROMPTS[:2], top_k=3, targets=targets)
    assert get_statistic("max_logprob") is extra_stats[0]
    assert res.max_logprob.dtype == torch.float32 and res.max_logprob.shape == res.entropy.shape
    assert res.target_logprob.shape == res.target_probs.shape
    target_ids = [torch.tensor(t) for t in res.target_ids]
    for i, ids in enumerate(res.input_ids):
        t = len(ids)
        logp = torch.log_softmax(lens.layer_logits(ids).double(), -1)  # (R, T, V) independent
        torch.testing.assert_close(res.max_logprob[i, :, :t].double(), logp.amax(-1), atol=1e-5, rtol=0)
        want = torch.stack([logp[..., tid].logsumexp(-1) for tid in target_ids], -1)
        torch.testing.assert_close(res.target_logprob[i, :, :t].double(), want, atol=1e-5, rtol=0)
        assert res.max_logprob[i, :, t:].isnan().all()  # padding cells hold the fill value
    # the functional path
    logits = torch.randn(3, 4, 300, generator=torch.Generator().manual_seed(0)) * 3
    out = reduce_logits(logits, 2, torch.tensor([1, 2, -1]), [torch.tensor([5]), torch.tensor([6, 7])])
    torch.testing.assert_close(out["max_logprob"], torch.log_softmax(logits, -1).amax(-1), atol=1e-5, rtol=0)
    assert out["target_logprob"].shape == (3, 4, 2)
    # save / load
    for suffix in (".json", ".parquet"):
        back = LensResult.load(res.save(tmp_path / f"r{suffix}"))
        assert "max_logprob" in back.stats and "target_logprob" in back.stats
        assert_same_result(res, back)
    # the long table
    table, df = res.to_arrow(), res.to_dataframe()
    cols = ["max_logprob", *(extra_stats[1].column_for(n) for n in res.target_names)]
    assert set(cols) <= set(table.column_names) and set(cols) <= set(df.columns)
    n_rows = res.n_rows
    for k in range(0, len(df), 7):
        i, r, j = df.prompt_index.iat[k], df.row.iat[k], df.column.iat[k]
        assert df.max_logprob.iat[k] == res.max_logprob[i, r, j].item()
        assert df[cols[2]].iat[k] == res.target_logprob[i, r, j, 1].item()
        assert table.column("max_logprob")[k].as_py() == df.max_logprob.iat[k]
    assert len(df) == sum(len(s) for s in res.input_ids) * n_rows
    # a file holding a statistic that is not registered says so in one line
    unregister_statistic("max_logprob")
    with pytest.raises(LogitLensError) as info:
        LensResult.load(tmp_path / "r.json")
    assert "register_statistic" in one_line(info)


def test_register_statistic_rejects_bad_entries():
    with pytest.raises(LogitLensError, match="built-in statistic"):
        register_statistic(Statistic("entropy", torch.float32, math.nan, compute=lambda c: c.logp))
    with pytest.raises(LogitLensError, match="needs compute="):
        register_statistic(Statistic("nothing", torch.float32, math.nan))
    with pytest.raises(LogitLensError, match="cannot be removed"):
        unregister_statistic("entropy")


# ---- iter_run and the padding-batch invariant -------------------------------------------------------


def test_iter_run_yields_one_result_per_batch_and_run_is_their_concat(lens):
    """Catches a batch whose prompt_index does not say which inputs it holds, and a run that does not put
    the batches back in input order."""
    # lengths 1, 2, 3, 7, 12: shortest first, so that each batch (longest first) reverses the input order
    prompts = ["Hello", [5, 6], "one two three", "one two three four five six", [7] * 12]
    ids, texts = lens.encode(prompts)
    kwargs = dict(top_k=3, targets=[" Paris"], batch_size=2)
    parts = list(lens.iter_run(prompts, **kwargs))
    assert [p.n_prompts for p in parts] == [2, 2, 1]
    assert sorted(i for p in parts for i in p.prompt_index) == list(range(len(prompts)))
    whole = lens.run(prompts, **kwargs)
    assert whole.prompt_index == list(range(len(prompts)))
    for part in parts:
        assert part.input_ids == [ids[i] for i in part.prompt_index]
        assert part.prompts == [texts[i] for i in part.prompt_index]
        for k, i in enumerate(part.prompt_index):
            w = part.n_positions
            for name, value in part.stats.items():
                torch.testing.assert_close(
                    value[k], whole.stats[name][i, :, :w], rtol=0, atol=0, equal_nan=True
                )
    joined = LensResult.concat(parts)
    order = sorted(range(joined.n_prompts), key=joined.prompt_index.__getitem__)
    assert_same_result(joined.select(order), whole)


BATCH_PROMPTS = [[9, 120, 64], [5, 17, 200, 33, 90, 4, 250, 11, 12], [3, 4, 5, 6, 7, 8], [100, 101]]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "bloom", "olmo2"])
def test_padded_batch_equals_each_prompt_alone(family):
    """Catches padding that leaks into real positions, or cells scattered to the wrong prompt or column
    (sliding windows, soft-capping, ALiBi and post-norms included)."""
    lens = LogitLens(build(family), None)
    kwargs = dict(top_k=3, targets=[5, (6, 7)], include_subblocks=True)
    res = lens.run(BATCH_PROMPTS, batch_size=2, **kwargs)
    for i, ids in enumerate(BATCH_PROMPTS):
        alone = lens.run([ids], **kwargs)
        t = len(ids)
        assert torch.equal(res.top_ids[i, :, :t], alone.top_ids[0]), f"{family}: prompt {i}"
        assert (res.top_ids[i, :, t:] == -1).all()
        for name in ("top_probs", "final_probs", "target_probs"):
            torch.testing.assert_close(res.stats[name][i, :, :t], alone.stats[name][0], atol=1e-5, rtol=0)
        for name in ("entropy", "kl_to_final", "cross_entropy"):
            torch.testing.assert_close(
                res.stats[name][i, :, :t], alone.stats[name][0], atol=1e-4, rtol=1e-5, equal_nan=True
            )


# ---- lenses -----------------------------------------------------------------------------------------


def test_meta_lens_names_the_lens(lens, tiny_model, tokenizer):
    assert lens.run("Hello").meta["lens"] == "logit"
    fn = FunctionLens(lambda r, h: h * 2, name="doubled")
    assert lens.run("Hello", lens=fn).meta["lens"] == "doubled"
    assert lens.run("Hello", transform=lambda r, h: h).meta["lens"] == "custom"
    assert LogitLens(tiny_model, tokenizer, lens=fn).run("Hello").meta["lens"] == "doubled"
    assert lens.run("Hello", lens=IdentityLens()).meta["lens"] == "logit"


def test_a_transform_never_touches_the_output_row(lens, tiny_model, tokenizer):
    """Catches a lens applied to the model's output row, and KL measured against a transformed output."""
    ids = tokenizer(PROMPTS[0])["input_ids"]
    scale = torch.linspace(0.2, 2.0, tiny_model.config.hidden_size)  # per-dimension: survives RMSNorm

    def fn(index, h):
        return h * scale.to(h)

    with torch.inference_mode():
        out = tiny_model(torch.tensor([ids]), output_hidden_states=True)
    own = out.logits[0].float()  # (T, V)
    for kwargs in (dict(transform=fn), dict(lens=FunctionLens(fn, name="scaled"))):
        raw = lens.layer_logits(ids, **kwargs)  # (R, T, V)
        assert (raw[-1] - own).abs().max() <= 1e-4  # the output row is the model's own
        for r in range(lens.n_layers):  # the other rows are transformed: hidden_states[r] is row r's input
            torch.testing.assert_close(
                raw[r], lens.decoder.logits(out.hidden_states[r][0] * scale), atol=1e-4, rtol=0
            )
        res = lens.run([ids], top_k=3, **kwargs)
        logp = torch.log_softmax(raw.double(), -1)
        p_own = torch.softmax(own.double(), -1)
        kl = (p_own * (p_own.log() - logp)).sum(-1)  # KL(model's output || transformed row)
        torch.testing.assert_close(res.kl_to_final[0].double(), kl, atol=1e-4, rtol=1e-5)
        assert (res.kl_to_final[0, -1] == 0).all() and res.agrees_with_final[0, -1].all()
        assert torch.equal(res.top_ids[0, -1, :, 0], own.argmax(-1))
    plain = lens.layer_logits(ids)
    assert (plain[1] - raw[1]).abs().max() > 1e-2  # not vacuous: the transform changes the other rows


def test_a_lens_subclass_saves_and_loads(lens, tmp_path):
    """Catches a lens whose kind, name or tensors do not survive save / load_lens."""

    class ShiftLens(Lens):
        kind = "test-shift"

        def __init__(self, shift: torch.Tensor, name: str = "shift"):
            self.shift = shift
            self.name = name

        def transform(self, row, index, h):
            return h + self.shift[index].to(h)

        def config(self):
            return {"rows": int(self.shift.shape[0])}

        def state_dict(self):
            return {"shift": self.shift}

        @classmethod
        def from_state(cls, config, state):
            assert state["shift"].shape[0] == config["rows"]
            return cls(state["shift"])

    try:
        assert LENSES["test-shift"] is ShiftLens
        shift = torch.randn(
            lens.n_layers + 1, lens.model.config.hidden_size, generator=torch.Generator().manual_seed(0)
        )
        original = ShiftLens(shift, name="my-shift")
        path = original.save(tmp_path / "lens")
        assert json.loads((path / "lens.json").read_text())["kind"] == "test-shift"
        loaded = load_lens(path)
        assert type(loaded) is ShiftLens and loaded.name == "my-shift"
        assert torch.equal(loaded.shift, shift)
        a, b = lens.run(PROMPTS, lens=original), lens.run(PROMPTS, lens=loaded)
        assert a.meta["lens"] == "my-shift"
        assert_same_result(a, b)
        assert not torch.equal(a.top_probs, lens.run(PROMPTS).top_probs)  # the shift is applied
    finally:
        LENSES.pop("test-shift", None)


def test_bad_lens_inputs_give_one_line_errors(lens, tiny_model, tmp_path):
    with pytest.raises(LogitLensError) as info:
        LogitLens(tiny_model, lens=object())
    assert "lens must be a logitlens.Lens" in one_line(info)
    with pytest.raises(LogitLensError) as info:
        lens.run("Hello", lens="logit")
    assert "lens must be a logitlens.Lens" in one_line(info)
    with pytest.raises(LogitLensError) as info:
        lens.run("Hello", lens=IdentityLens(), transform=lambda r, h: h)
    assert "not both" in one_line(info)
    with pytest.raises(LogitLensError) as info:
        FunctionLens(3)
    assert "callable" in one_line(info)
    with pytest.raises(LogitLensError) as info:
        FunctionLens(lambda r, h: h).save(tmp_path / "fn")
    assert "no saved form" in one_line(info)
    (tmp_path / "unknown").mkdir()
    (tmp_path / "unknown" / "lens.json").write_text(json.dumps({"kind": "nope", "name": "x"}))
    with pytest.raises(LogitLensError) as info:
        load_lens(tmp_path / "unknown")
    assert "unknown lens kind 'nope'" in one_line(info) and "identity" in str(info.value)
    with pytest.raises(LogitLensError) as info:
        load_lens(tmp_path / "missing")
    assert "cannot read a lens from" in one_line(info)
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "lens.json").write_text("{not json")
    with pytest.raises(LogitLensError) as info:
        load_lens(tmp_path / "garbled")
    assert "cannot read a lens from" in one_line(info)
    assert isinstance(load_lens(IdentityLens().save(tmp_path / "id")), IdentityLens)


# ---- rows -------------------------------------------------------------------------------------------


def test_default_rows_names_and_depths():
    rows = default_rows(3)
    assert [r.name for r in rows] == ["embed", "0", "1", "2"]
    assert [r.depth(3) for r in rows] == [0.0, 1 / 3, 2 / 3, 1.0]
    sub = default_rows(3, include_subblocks=True)
    assert [r.name for r in sub] == ["embed", "0.attn", "0", "1.attn", "1", "2.attn", "2"]
    assert [r.depth(3) for r in sub] == [0.0, 0.5 / 3, 1 / 3, 1.5 / 3, 2 / 3, 2.5 / 3, 1.0]
    assert [(r.layer, r.site) for r in sub[:3]] == [(-1, "embed"), (0, "attn"), (0, "resid")]
    for r in sub:
        assert parse_row_name(r.name) == r
        assert r.to_dict() == {"layer": r.layer, "site": r.site, "name": r.name}


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="unknown row site 'mlp'") as info:
        Row(2, "mlp")
    assert all(site in str(info.value) for site in SITES)
    with pytest.raises(ValueError, match="unknown row site"):
        parse_row_name("3.mlp")
    with pytest.raises(ValueError, match="not a row name"):
        parse_row_name("x")


def test_result_depths_come_from_rows(lens):
    """Catches depths computed from a row's index instead of its (layer, site)."""
    res = lens.run("Hello", include_subblocks=True)
    n = lens.n_layers
    assert res.row_names == [r.name for r in default_rows(n, include_subblocks=True)]
    for r, depth in zip(res.rows, res.depths, strict=True):
        want = 0.0 if r.site == "embed" else (r.layer + (0.5 if r.site == "attn" else 1.0)) / n
        assert math.isclose(depth, want)
    assert res.depths[res.row_names.index("1.attn")] == pytest.approx(1.5 / n)
    # a hand-made result with only some rows: depth from the row, never from its position in the list
    part = res.select(0)
    keep = [res.row_names.index(n_) for n_ in ("embed", "0.attn", "2")]
    picked = part.replace(
        rows=[part.rows[k] for k in keep],
        row_names=[part.row_names[k] for k in keep],
        stats={k: v[:, keep] for k, v in part.stats.items()},
    )
    assert picked.depths == pytest.approx([0.0, 0.5 / 3, 1.0])
    assert picked.to_dataframe().depth.iloc[:3].tolist() == pytest.approx([0.0, 0.5 / 3, 1.0])


# ---- the final norm as arithmetic -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_final_norm_description_reproduces_the_module(name):
    """Catches a family whose final norm is not described (or described wrongly), and a ``scale=`` that
    is not used: with a frozen scale the norm must be affine in x (attribution's linearisation)."""
    model = build(name)
    decoder = Decoder(model, architecture_for(model)[0])
    norm = decoder.final_norm
    assert norm is not None, f"{name}: no FinalNorm reproduces {type(decoder.norm_module).__name__}"
    assert (norm.kind == "identity") == (decoder.norm_module is None)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, D, generator=g) * 3 + 0.5
    with torch.inference_mode():
        want = x if decoder.norm_module is None else decoder.norm_module(x)
        got = norm.apply(x)
        torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)
        a, b = x[0], torch.randn(5, D, generator=g)
        s = norm.scale(a + b)  # (5, 1)
        torch.testing.assert_close(norm.apply(a + b, scale=s), norm.apply(a + b), atol=1e-5, rtol=1e-5)
        bias = norm.bias.float() if norm.bias is not None else torch.zeros(D)
        parts = norm.apply(a, scale=s, bias=False) + norm.apply(b, scale=s, bias=False) + bias
        torch.testing.assert_close(norm.apply(a + b, scale=s), parts, atol=1e-5, rtol=1e-5)
        if norm.kind != "identity":  # not vacuous: each part with its own scale is not additive
            own = norm.apply(a, bias=False) + norm.apply(b, bias=False) + bias
            assert (own - norm.apply(a + b)).abs().max() > 1e-3


# ---- "attn" rows: the residual after attention, before the MLP --------------------------------------

ATTN_MODULE = {"gpt2": "attn", "gpt_neo": "attn", "bloom": "self_attention"}  # else "self_attn"
FINAL_NORM = {"gpt2": "transformer.ln_f", "gpt_neo": "transformer.ln_f", "bloom": "transformer.ln_f"}


def _after_attention(name: str, block, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The residual stream after block's attention, from its input ``x`` and its attention output, written
    from each family's modeling code."""
    model_type = SPECS[name].model_type
    if model_type == "bloom":  # BloomAttention adds the residual itself
        return attn
    if model_type == "granite":
        return x + attn * build(name).config.residual_multiplier
    if model_type in ("gemma2", "gemma3_text", "olmo2"):  # a norm on the attention output
        return x + block.post_attention_layernorm(attn)
    return x + attn


def _decode(name: str, h: torch.Tensor) -> torch.Tensor:
    """The model's own final norm + lm_head + logit post-processing: (T, d) -> (T, V)."""
    model = build(name)
    cfg = model.config
    logits = model.lm_head(module_at(model, FINAL_NORM.get(name, "model.norm"))(h.unsqueeze(0)))[0].float()
    if getattr(cfg, "logits_scaling", None):
        logits = logits / cfg.logits_scaling
    if getattr(cfg, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
    return logits


def _reference_after_attention(name: str, ids: list[int]) -> torch.Tensor:
    """(L, T, V): for each block, its input plus its attention's output, decoded. Hooks of our own."""
    model = build(name)
    blocks = module_at(model, SPECS[name].blocks)
    seen: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: seen.__setitem__(("in", i), (args or (kwargs["hidden_states"],))[0]),
            with_kwargs=True))  # fmt: skip
        attn = getattr(block, ATTN_MODULE.get(name, "self_attn"))
        handles.append(attn.register_forward_hook(
            lambda m, args, out, i=i: seen.__setitem__(("attn", i), out[0] if isinstance(out, tuple) else out)))  # fmt: skip
    try:
        with torch.inference_mode():
            model(torch.tensor([ids]))
            rows = [
                _decode(name, _after_attention(name, block, seen[("in", i)], seen[("attn", i)])[0])
                for i, block in enumerate(blocks)
            ]
    finally:
        for h in handles:
            h.remove()
    return torch.stack(rows)


# The families with "attn" rows (sequential blocks with Architecture.mid); checked against the table below.
SEQUENTIAL = [
    "gpt2", "gpt_neo", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
    "phi3", "bloom", "stablelm", "olmo", "olmo2", "granite", "starcoder2",
]  # fmt: skip
WITHOUT = [n for n in ALL if n not in SEQUENTIAL]
ATTN_IDS = [[9, 120, 64, 3, 77], [5, 17, 200, 33, 90, 4, 250]]


def test_the_families_with_attn_rows():
    """The table's sequential families have "attn" rows; the parallel ones (and those whose entry names
    no point between attention and MLP: OPT, the discovered families) do not."""
    decoders = {n: LogitLens(build(n), None, check=False).decoder for n in ALL}
    assert [n for n, d in decoders.items() if d.arch.mid is not None and not d.parallel] == SEQUENTIAL
    assert {n for n, d in decoders.items() if d.parallel} == {"gptj", "phi", "cohere", "gpt_neox", "falcon"}


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_attn_rows_decode_the_residual_after_attention(name):
    """Catches a wrong ``mid`` entry (e.g. a norm's output instead of its input, or the MLP's input where a
    norm sits between), and "attn" rows captured at the wrong place or decoded differently."""
    lens = LogitLens(build(name), None)
    n = lens.n_layers
    res = lens.run(ATTN_IDS, top_k=3, include_subblocks=True)
    attn_rows = [res.row_names.index(f"{i}.attn") for i in range(n)]
    assert attn_rows == [1 + 2 * i for i in range(n)]
    for p, ids in enumerate(ATTN_IDS):
        t = len(ids)
        ref = _reference_after_attention(name, ids)  # (L, T, V)
        probs = torch.softmax(ref.double(), -1)
        ours = torch.softmax(lens.layer_logits(ids, include_subblocks=True).double(), -1)[attn_rows]
        torch.testing.assert_close(ours, probs, atol=1e-4, rtol=0)
        top = probs.topk(3, -1)
        assert torch.equal(res.top_ids[p, attn_rows, :t], top.indices)
        torch.testing.assert_close(res.top_probs[p, attn_rows, :t].double(), top.values, atol=1e-4, rtol=0)
        # not vacuous: after attention differs from the blocks' inputs and outputs
        resid = torch.softmax(lens.layer_logits(ids).double(), -1)
        assert (probs - resid[:-1]).abs().max() > 1e-3 and (probs - resid[1:]).abs().max() > 1e-3


@pytest.mark.parametrize("name", WITHOUT)
def test_no_attn_rows_is_one_clear_line(name):
    lens = LogitLens(build(name), None, check=False)
    with pytest.raises(LogitLensError) as info:
        lens.run([[5, 6, 7]], include_subblocks=True)
    msg = one_line(info)
    assert f"model_type '{SPECS[name].model_type}'" in msg and "'attn' rows" in msg
    assert ("parallel" in msg) == lens.decoder.parallel
    assert lens.run([[5, 6, 7]]).n_rows == lens.n_layers + 1  # without sub-blocks it runs


# ---- devices: accelerate device maps with CPU and disk offload --------------------------------------


def test_offloaded_model_gives_the_same_results(tiny_model_dir, tokenizer, tmp_path):
    """Catches a lens that reads offloaded (meta) weights or sends inputs to the meta device: some blocks,
    the final norm and the unembedding offloaded to CPU and to disk by an accelerate device map."""
    from transformers import AutoModelForCausalLM

    main = 0 if torch.cuda.is_available() else "cpu"  # on a GPU machine "cpu" entries are offloaded
    device_map = {
        "model.embed_tokens": "disk",
        "model.rotary_emb": main,
        "model.layers.0": main,
        "model.layers.1": "cpu",
        "model.layers.2": "disk",
        "model.norm": "cpu",
        "lm_head": "disk",
    }
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if main != "cpu":
        plain = plain.to(f"cuda:{main}")
    spread = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    assert spread.lm_head.weight.device.type == "meta"  # the weights really are elsewhere
    kwargs = dict(top_k=5, targets=[" Paris", (" Rome", " Paris")], include_subblocks=True)
    a = LogitLens(plain, tokenizer).run(PROMPTS, **kwargs)
    spread_lens = LogitLens(spread, tokenizer)
    assert spread_lens.self_check_diff <= 1e-4
    b = spread_lens.run(PROMPTS, **kwargs)
    assert torch.equal(a.top_ids, b.top_ids)
    for name in ("top_probs", "final_probs", "target_probs"):
        torch.testing.assert_close(a.stats[name], b.stats[name], atol=1e-5, rtol=0, equal_nan=True)
    for name in ("entropy", "kl_to_final", "cross_entropy"):
        torch.testing.assert_close(a.stats[name], b.stats[name], atol=1e-4, rtol=1e-5, equal_nan=True)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    torch.testing.assert_close(
        spread_lens.layer_logits(ids), LogitLens(plain, tokenizer).layer_logits(ids), atol=1e-4, rtol=0
    )
