"""Tests written from the mutation runs of ``engine/lenses.py`` and ``engine/tuned.py`` (scripts/mutate.py
lenses tuned): the base lens's chunk transform and output row, the fingerprint against an independent
sha256, saving and reading back a lens defined by a subclass, and the tuned lens's translators against
``h + h @ W.T + b`` written here."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from logitlens.core.rows import Row
from logitlens.engine.lenses import LENSES, FunctionLens, IdentityLens, Lens
from logitlens.engine.tuned import TunedLens, load_lens
from logitlens.errors import LogitLensError

ROWS = [Row(-1, "embed"), Row(0), Row(1), Row(2)]  # the last one is the output row of a 3-block model


def test_the_identity_lenses():
    for lens in (Lens(), IdentityLens()):
        assert lens.is_identity and lens.chunk_transform(ROWS, 3) is None
        h = torch.randn(2, 4)
        assert lens.transform(ROWS[1], 1, h) is h
        assert lens.config() == {} and lens.state_dict() == {}
        assert lens.fingerprint() == "logit" and lens.touches_output is False
    assert type(IdentityLens.from_state({}, {})) is IdentityLens
    assert LENSES["identity"] is IdentityLens and "" not in LENSES
    assert repr(IdentityLens()) == "IdentityLens(name='logit')"


def test_function_lens_gets_each_row_index_and_leaves_the_output_row_alone():
    seen = []

    def fn(index, h):
        seen.append((index, tuple(h.shape)))
        return h * (index + 2)

    lens = FunctionLens(fn, name="scaled")
    assert lens.name == "scaled" and not lens.is_identity and repr(lens) == "FunctionLens(name='scaled')"
    assert FunctionLens(fn).name == "custom"
    h = torch.randn(5, 4, 3)  # (m, R, d)
    out = lens.chunk_transform(ROWS, 3)(h)
    assert seen == [(0, (5, 3)), (1, (5, 3)), (2, (5, 3))]
    want = torch.stack([h[:, 0] * 2, h[:, 1] * 3, h[:, 2] * 4, h[:, 3]], 1)
    assert torch.equal(out, want)
    # another output row: that one is kept, the others transformed
    out = lens.chunk_transform(ROWS, 1)(h)
    assert torch.equal(out[:, 1], h[:, 1]) and torch.equal(out[:, 3], h[:, 3] * 5)
    assert lens.transform(ROWS[2], 2, h[:, 2]).equal(h[:, 2] * 4)


def test_a_lens_that_touches_the_output_transforms_every_row():
    class Everywhere(FunctionLens):
        touches_output = True

    h = torch.randn(2, 4, 3)
    out = Everywhere(lambda i, x: x + i).chunk_transform(ROWS, 3)(h)
    assert torch.equal(out, h + torch.arange(4.0).view(1, 4, 1))


def test_function_lens_refuses_what_is_not_callable():
    with pytest.raises(LogitLensError, match="a lens function must be callable, got int"):
        FunctionLens(3)


class _Stateful(Lens):
    kind = "test-stateful-mutants"

    def __init__(self, a: torch.Tensor, b: torch.Tensor, name: str = "stateful"):
        self.a, self.b, self.name = a, b, name

    def transform(self, row, index, h):
        return h + self.a[index]

    def config(self):
        return {"rows": int(self.a.shape[0])}

    def state_dict(self):
        return {"b": self.b, "a": self.a}  # not in sorted order

    @classmethod
    def from_state(cls, config, state):
        assert state["a"].shape[0] == config["rows"]
        return cls(state["a"], state["b"])


@pytest.fixture
def stateful():
    LENSES[_Stateful.kind] = _Stateful  # registered when the class was defined; again after a test removed it
    try:
        yield _Stateful
    finally:
        LENSES.pop(_Stateful.kind, None)


def _digest(kind: str, state: dict) -> str:
    d = hashlib.sha256(kind.encode())
    for key in sorted(state):
        t = state[key].contiguous()
        d.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        d.update(t.numpy().tobytes())
    return d.hexdigest()[:16]


def test_fingerprint_is_a_sha256_over_names_dtypes_shapes_and_bytes(stateful):
    a, b = torch.randn(4, 3), torch.arange(6, dtype=torch.int32).view(2, 3)
    lens = stateful(a, b)
    fp = lens.fingerprint()
    assert fp == "stateful:" + _digest(stateful.kind, {"a": a, "b": b})
    assert stateful(a.clone(), b.clone()).fingerprint() == fp  # equal tensors, equal fingerprints
    changed = a.clone()
    changed[3, 2] += 1e-3
    assert stateful(changed, b).fingerprint() != fp
    assert stateful(a.double(), b).fingerprint() != fp  # another dtype
    assert stateful(a.reshape(3, 4), b).fingerprint() != fp  # another shape, same bytes
    assert stateful(a, b.view(3, 2)).fingerprint() != fp


def test_save_and_load_a_lens_defined_by_a_subclass(stateful, tmp_path):
    a, b = torch.randn(4, 3), torch.randn(2)
    path = stateful(a, b, name="mine").save(tmp_path / "deep" / "lens")
    assert path == tmp_path / "deep" / "lens"
    info = json.loads((path / "lens.json").read_text())
    assert info == {"kind": stateful.kind, "name": "mine", "config": {"rows": 4}}
    loaded = load_lens(path)
    assert type(loaded) is stateful and loaded.name == "mine"
    assert torch.equal(loaded.a, a) and torch.equal(loaded.b, b)
    # a lens without tensors writes an empty tensor file and reads back
    IdentityLens().save(tmp_path / "id")
    again = load_lens(tmp_path / "id")
    assert type(again) is IdentityLens and again.name == "logit"


def test_a_lens_defined_by_code_has_no_saved_form(tmp_path):
    with pytest.raises(
        LogitLensError, match=r"^the FunctionLens has no saved form \(it is defined by code\)$"
    ):
        FunctionLens(lambda i, h: h).save(tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---- the tuned lens: translators against h + h @ W.T + b --------------------------------------------


def _tuned(n_layers=3, d=4, seed=0) -> TunedLens:
    gen = torch.Generator().manual_seed(seed)
    lens = TunedLens(n_layers, d, base_model_name_or_path="tiny")
    with torch.no_grad():
        lens.weight.copy_(torch.randn(n_layers, d, d, generator=gen))  # not symmetric
        lens.bias.copy_(torch.randn(n_layers, d, generator=gen))
    return lens


def test_tuned_chunk_transform_equals_each_row_translated_alone():
    lens = _tuned()
    w, b = lens.weight.detach(), lens.bias.detach()
    h = torch.randn(5, 4, 4)
    with torch.no_grad():
        out = lens.chunk_transform(ROWS, 3)(h)
        for r in range(3):
            want = h[:, r] + h[:, r] @ w[r].T + b[r]
            torch.testing.assert_close(out[:, r], want)
            torch.testing.assert_close(lens.transform(ROWS[r], r, h[:, r]), want)
        assert torch.equal(out[:, 3], h[:, 3])  # the output row has no translator
        last = h[:, 3]
        assert lens.transform(ROWS[3], 3, last) is last
    assert torch.equal(h, h.clone())  # the input chunk is not written


def test_tuned_lens_rows_past_its_translators_and_sub_block_rows_are_refused():
    lens = _tuned(2)
    with pytest.raises(LogitLensError, match=r"has 2 translators, for a 2-block model; row '2' is past them"):
        lens.chunk_transform([Row(-1, "embed"), Row(2)], 1)
    with pytest.raises(LogitLensError, match="no translator for the sub-block row '0.attn'"):
        lens.chunk_transform([Row(0, "attn"), Row(1)], 1)
    assert lens.chunk_transform([Row(1)], 0) is None  # only the output row: nothing to transform


def test_a_subclass_with_a_kind_is_registered_and_sees_each_row():
    class ByRow(Lens):
        kind = "test-by-row-mutants"

        def transform(self, row, index, h):
            return h + (100 if row.site == "embed" else row.layer)

    try:
        assert LENSES["test-by-row-mutants"] is ByRow
        h = torch.zeros(1, 4, 2)
        out = ByRow().chunk_transform(ROWS, 3)(h)
        assert out[0, :, 0].tolist() == [100.0, 0.0, 1.0, 0.0]
    finally:
        LENSES.pop("test-by-row-mutants", None)


def test_saving_again_into_the_same_folder_overwrites(stateful, tmp_path):
    stateful(torch.zeros(2, 3), torch.zeros(1)).save(tmp_path / "lens")
    path = stateful(torch.ones(2, 3), torch.ones(1), name="second").save(tmp_path / "lens")
    loaded = load_lens(path)
    assert loaded.name == "second" and torch.equal(loaded.a, torch.ones(2, 3))
