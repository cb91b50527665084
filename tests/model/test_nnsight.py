"""The nnsight backend against the forward-hook backend: the same rows, hence the same statistics.

Each tiny model is deep-copied before nnsight wraps it (nnsight instruments every module it wraps, and
``build`` caches one model per family for the whole session). The default model's test is slow (it loads
SmolLM2-135M once for this file and ``test_remote.py``), but it runs in ``make test``.
"""

from __future__ import annotations

import copy
import sys
import warnings
from functools import cache

import pytest
import torch

from logitlens import LogitLens
from logitlens.errors import LogitLensError
from markers import needs_default_model
from tiny_models import VOCAB, build

nnsight = pytest.importorskip(
    "nnsight", reason="needs the remote extra: pip install 'logitlens[remote]' (make test installs it)"
)

from logitlens.model.backends.nnsight import NNsightBackend, is_nnsight_model, wrap_model  # noqa: E402

FAMILIES = ["llama", "gpt2", "gemma2", "opt"]
TARGETS = [5, (6, 7, 200)]
PROMPT = "The Eiffel Tower is in the city of"


def tiny_prompts(seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (7, 4, 5)]


def wrapped(family: str, tokenizer) -> nnsight.TransformersModel:
    """A fresh copy of the tiny model of ``family`` inside nnsight's TransformersModel."""
    return nnsight.TransformersModel(copy.deepcopy(build(family)), tokenizer=tokenizer)


def assert_same(a, b, exact: bool = True) -> None:
    """Two LensResults of the same prompts: top-1 identical, probabilities within 1e-4."""
    assert a.row_names == b.row_names and a.stats.keys() == b.stats.keys()
    assert torch.equal(a.top_ids[..., 0], b.top_ids[..., 0])
    if exact:
        assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.target_ranks, b.target_ranks)
        assert torch.equal(a.agrees_with_final, b.agrees_with_final)
    for name in ("top_probs", "final_probs", "target_probs"):
        torch.testing.assert_close(a.stats[name], b.stats[name], atol=1e-4, rtol=0, equal_nan=True)
    for name in ("entropy", "kl_to_final", "cross_entropy"):
        torch.testing.assert_close(a.stats[name], b.stats[name], atol=1e-4, rtol=1e-4, equal_nan=True)


@cache
def default_models() -> tuple[LogitLens, LogitLens]:
    """The default model's LogitLens with hooks and one over the same weights inside nnsight (loaded
    once for this file and test_remote.py)."""
    hooks = LogitLens.from_pretrained("default")
    model = nnsight.TransformersModel(copy.deepcopy(hooks.model), tokenizer=copy.deepcopy(hooks.tokenizer))
    return hooks, LogitLens(model, name="default-nnsight")


@pytest.mark.parametrize("family", FAMILIES)
def test_nnsight_backend_equals_hooks(family, tokenizer):
    hooks = LogitLens(build(family), None)
    lens = LogitLens(wrapped(family, tokenizer))  # the object the classic recipe builds
    assert isinstance(lens.backend, NNsightBackend) and lens.tokenizer is tokenizer
    assert lens.self_check_diff is not None and lens.self_check_diff <= 1e-4
    ids = tiny_prompts()
    a = hooks.run(ids, top_k=4, targets=TARGETS)
    b = lens.run(ids, top_k=4, targets=TARGETS)
    assert b.meta["backend"] == "nnsight" and a.meta["backend"] == "hooks"
    assert_same(a, b)
    c = lens.run(ids, top_k=4, positions=[-1], batch_size=2)  # only the last position, several batches
    torch.testing.assert_close(
        c.top_probs[:, :, 0], a.top_probs[torch.arange(3), :, [6, 3, 4]], atol=1e-6, rtol=0
    )
    if family != "opt":  # OPT has no point between attention and MLP
        a = hooks.run(ids, top_k=3, include_subblocks=True)
        b = lens.run(ids, top_k=3, include_subblocks=True)
        assert "0.attn" in b.row_names
        assert_same(a, b)
    torch.testing.assert_close(lens.layer_logits(ids[0]), hooks.layer_logits(ids[0]), atol=1e-5, rtol=0)


def test_language_model_alias_and_bare_nnsight(tokenizer):
    """The deprecated LanguageModel (what the classic recipe builds) and a bare NNsight(module) work too."""
    ids = tiny_prompts(2)
    ref = LogitLens(build("llama"), None).run(ids, top_k=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # LanguageModel warns that it is deprecated
        lm = nnsight.LanguageModel(copy.deepcopy(build("llama")), tokenizer=tokenizer)
    assert is_nnsight_model(lm) and not is_nnsight_model(build("llama"))
    assert wrap_model(build("llama")) is None
    model, tok, make = wrap_model(lm)
    assert model is lm._module and tok is tokenizer and callable(make)
    assert_same(ref, LogitLens(lm).run(ids, top_k=3))
    bare = LogitLens(nnsight.NNsight(copy.deepcopy(build("llama"))))
    assert bare.tokenizer is None and bare.backend.name == "nnsight"
    assert_same(ref, bare.run(ids, top_k=3))


def test_from_pretrained_backend_nnsight(tiny_model_dir):
    a = LogitLens.from_pretrained(str(tiny_model_dir))
    b = LogitLens.from_pretrained(str(tiny_model_dir), backend="nnsight")
    assert b.backend.name == "nnsight" and b.tokenizer is not None
    text = ["The Eiffel Tower is in the city of Paris.", "Hello world"]
    assert_same(a.run(text, targets=[" Paris"]), b.run(text, targets=[" Paris"]))
    meta = LogitLens.from_pretrained(str(tiny_model_dir), backend="nnsight", load_weights=False)
    assert meta.self_check_diff is None and not meta.backend.runs_here  # checked on the server instead
    with pytest.raises(LogitLensError, match="no weights here"):
        meta.run(text)
    with pytest.raises(LogitLensError, match="choose one of: hooks, nnsight"):
        LogitLens.from_pretrained(str(tiny_model_dir), backend="vllm")


def test_missing_nnsight_says_how_to_install(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "nnsight", None)  # `import nnsight` raises ImportError
    with pytest.raises(LogitLensError) as info:
        LogitLens.from_pretrained(str(tiny_model_dir), backend="nnsight")
    message = str(info.value)
    assert "\n" not in message and "pip install 'logitlens[remote]'" in message
    lens = LogitLens.from_pretrained(str(tiny_model_dir))  # the default backend does not need it
    with pytest.raises(LogitLensError, match=r"pip install 'logitlens\[remote\]'"):
        lens.run("Hello", remote="local")


def test_backend_errors(tokenizer):
    lens = LogitLens(wrapped("llama", tokenizer))
    with pytest.raises(LogitLensError, match="nnsight model"):
        NNsightBackend(build("llama"), lens.decoder)
    with pytest.raises(LogitLensError, match="not part of the nnsight model"):
        lens.backend.envoy(torch.nn.Linear(2, 2))


@pytest.mark.slow
@needs_default_model
def test_default_model_nnsight_equals_hooks():
    hooks, lens = default_models()
    assert lens.self_check_diff <= 1e-4 and lens.backend.name == "nnsight"
    prompts = [PROMPT, "Hello world"]
    a = hooks.run(prompts, top_k=5, targets=[" Paris"])
    b = lens.run(prompts, top_k=5, targets=[" Paris"])
    assert_same(a, b)
    assert b.token(b.top_ids[0, -1, b.column_at(0, -1), 0]) == "␣Paris"
