"""Tests written from the mutation run of ``engine/tuned.py`` (scripts/mutate.py tuned): every one-line
message of a bad tuned lens (arguments, config, tensors, folders, files in the way) read in full, the
config and ``meta`` a lens keeps, ``state_dict`` with nn.Module's arguments, translators in bf16 against
``h + h @ W.T + b`` written here, a chunk whose output row is not the last, the unembedding hash computed
once per weight, and ``load_lens``'s choice between ``lens.json`` and a tuned lens folder."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import logitlens.engine.tuned as tuned_module
from conftest import make_llama
from logitlens import LogitLens
from logitlens.core.rows import Row
from logitlens.engine.lenses import LENSES, IdentityLens
from logitlens.engine.tuned import TunedLens, load_lens
from logitlens.errors import LogitLensError
from markers import needs_cuda

ROWS = [Row(-1, "embed"), Row(0), Row(1), Row(2)]  # the last one is the output row of a 3-block model


def _tuned(n_layers: int = 3, d: int = 4, seed: int = 0, **config) -> TunedLens:
    """A TunedLens with random, non-symmetric translators and biases."""
    gen = torch.Generator().manual_seed(seed)
    lens = TunedLens(n_layers, d, **config)
    with torch.no_grad():
        lens.weight.copy_(torch.randn(n_layers, d, d, generator=gen))
        lens.bias.copy_(torch.randn(n_layers, d, generator=gen))
    return lens


def _package_hash(weight: torch.Tensor) -> str:
    """The tuned-lens package's unembedding fingerprint (its utils.tensor_hash), written here."""
    return hashlib.sha256(str.encode(np.array_str(weight.detach().float().numpy(), precision=1))).hexdigest()


def _small_lens(name: str = "small") -> LogitLens:
    """A fresh 2-block LogitLens (d_model 16, 64 tokens): its decoder's caches start empty."""
    model = make_llama(
        64, seed=5, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    return LogitLens(model, None, name=name)


# ---- construction ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_layers", "d_model", "message"),
    [
        (0, 4, "a tuned lens needs a positive integer n_layers, got 0"),
        (True, 4, "a tuned lens needs a positive integer n_layers, got True"),
        ("3", 4, "a tuned lens needs a positive integer n_layers, got '3'"),
        (3, 0, "a tuned lens needs a positive integer d_model, got 0"),
        (3, -2, "a tuned lens needs a positive integer d_model, got -2"),
        (3, 4.0, "a tuned lens needs a positive integer d_model, got 4.0"),
    ],
)
def test_bad_shapes_are_refused_with_their_name_and_value(n_layers, d_model, message):
    with pytest.raises(LogitLensError) as e:
        TunedLens(n_layers, d_model)
    assert str(e.value) == message


def test_the_smallest_lens_and_the_defaults():
    """One translator of width 1 is a valid lens; biases are on (and trained) unless ``bias=False``."""
    one = TunedLens(1, 1)
    assert (one.n_layers, one.d_model) == (1, 1)
    assert one.has_bias and one.bias.requires_grad and one.weight.requires_grad
    assert repr(one) == "TunedLens(1 translators, d_model=1, for '?')"
    plain = TunedLens(2, 3, bias=False)
    assert not plain.has_bias and not plain.bias.requires_grad and plain.weight.requires_grad
    assert plain.config()["bias"] is False
    assert repr(_tuned(base_model_name_or_path="tiny")) == "TunedLens(3 translators, d_model=4, for 'tiny')"


def test_config_is_the_shape_and_the_meta():
    lens = TunedLens(2, 3, bias=False, base_model_name_or_path="m", unembed_hash="abc")
    assert lens.config() == {
        "format": "logitlens.tuned_lens",
        "lens_type": "linear_tuned_lens",
        "num_hidden_layers": 2,
        "d_model": 3,
        "bias": False,
        "base_model_name_or_path": "m",
        "unembed_hash": "abc",
    }


def test_for_model_keeps_bias_and_the_model_revision():
    lens = _small_lens()
    lens.model.config._commit_hash = "0123456789abcdef"
    tuned = TunedLens.for_model(lens, bias=False)
    assert (tuned.n_layers, tuned.d_model, tuned.has_bias) == (2, 16, False)
    assert not tuned.bias.requires_grad
    assert tuned.meta == {
        "base_model_name_or_path": "small",
        "base_model_revision": "0123456789abcdef",
        "unembed_hash": _package_hash(lens.model.get_output_embeddings().weight),
    }


def test_the_unembedding_hash_is_computed_once_per_weight(monkeypatch):
    """The hash copies the whole unembedding to the CPU: computed once, kept on the decoder, and computed
    again only when the weight changes (an in-place edit: same storage, a new version)."""
    lens = _small_lens()
    real, calls = tuned_module.unembed_hash, []

    def counted(weight):
        calls.append(1)
        return real(weight)

    monkeypatch.setattr(tuned_module, "unembed_hash", counted)
    tuned = TunedLens.for_model(lens)
    tuned.check(lens)
    again = TunedLens.for_model(lens)
    tuned.check(lens)
    assert len(calls) == 1
    assert tuned.meta["unembed_hash"] == again.meta["unembed_hash"]
    weight = lens.model.get_output_embeddings().weight
    assert tuned.meta["unembed_hash"] == _package_hash(weight)
    with torch.no_grad():
        weight.add_(1.0)
    with pytest.raises(LogitLensError, match="hash mismatch"):
        tuned.check(lens)
    assert len(calls) == 2
    assert TunedLens.for_model(lens).meta["unembed_hash"] == _package_hash(weight)
    assert len(calls) == 2


# ---- decoding ---------------------------------------------------------------------------------------------
def test_sub_block_row_message_names_the_way_out():
    with pytest.raises(LogitLensError) as e:
        _tuned().transform(Row(0, "attn"), 1, torch.zeros(2, 4))
    assert str(e.value) == (
        "the tuned lens has no translator for the sub-block row '0.attn'; run it without "
        "include_subblocks=True, or see them through the logit lens: lens=logitlens.IdentityLens()"
    )


def test_translators_keep_a_bf16_stream_in_bf16():
    """A bf16 residual stream is translated with the fp32 translators and comes back in bf16, one row at
    a time and batched (one translator per row)."""
    lens = _tuned()
    w, b = lens.weight.detach(), lens.bias.detach()
    h = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)  # (m, R, d)
    with torch.no_grad():
        for j in range(3):
            out = lens.translate(j, h[:, j])
            assert out.dtype == torch.bfloat16
            want = h[:, j] + (h[:, j].float() @ w[j].T + b[j]).to(torch.bfloat16)
            torch.testing.assert_close(out, want)
        batched = lens.translate(torch.tensor([2, 0, 1]), h)
        assert batched.dtype == torch.bfloat16
        for r, j in enumerate([2, 0, 1]):
            want = h[:, r] + (h[:, r].float() @ w[j].T + b[j]).to(torch.bfloat16)
            torch.testing.assert_close(batched[:, r], want)


def test_new_translators_are_used_after_the_parameters_change():
    """Decoding without gradients keeps the translators it cast; every way of changing them must be seen:
    new storage behind the parameters (what ``module.to(...)`` or ``.data =`` do), new Parameters (a
    fresh bias has the same version, 0, as the zero bias it replaces) and in-place edits."""
    h = torch.randn(5, 4)
    with torch.no_grad():
        fresh = TunedLens(2, 4)
        assert torch.equal(fresh.translate(0, h), h)
        fresh.bias = nn.Parameter(torch.ones(2, 4))
        torch.testing.assert_close(fresh.translate(0, h), h + 1.0)
        fresh.weight = nn.Parameter(torch.eye(4).expand(2, 4, 4).clone())
        torch.testing.assert_close(fresh.translate(1, h), 2 * h + 1.0)

        lens = _tuned()
        lens.translate(0, h)
        lens.weight.data = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(lens.translate(0, h), h + h @ lens.weight[0].T + lens.bias[0])
        lens.bias.data = torch.full((3, 4), 7.0)
        torch.testing.assert_close(lens.translate(1, h), h + h @ lens.weight[1].T + 7.0)
        lens.bias.add_(1.0)
        lens.weight.zero_()
        torch.testing.assert_close(lens.translate(2, h), h + 8.0)


def test_chunk_with_the_output_row_not_last_keeps_it_as_it_is():
    """``output_row`` names the row decoded as it is; the last block's row (no translator) stays as it
    is too, wherever it is."""
    lens = _tuned()
    w, b = lens.weight.detach(), lens.bias.detach()
    h = torch.randn(2, 4, 4)
    with torch.no_grad():
        out = lens.chunk_transform(ROWS, 1)(h)
    assert torch.equal(out[:, 1], h[:, 1]) and torch.equal(out[:, 3], h[:, 3])
    for r in (0, 2):
        torch.testing.assert_close(out[:, r], h[:, r] + h[:, r] @ w[r].T + b[r])


@needs_cuda("decodes a GPU residual stream with the lens's CPU parameters")
def test_a_gpu_stream_is_translated_on_the_gpu():
    """The parameters stay where they are (the CPU here); a stream on the GPU is translated there, with or
    without gradients (which reach the CPU parameters)."""
    lens = _tuned()
    h = torch.randn(2, 4, 4)
    with torch.no_grad():
        cpu = lens.chunk_transform(ROWS, 3)(h)
        gpu = lens.chunk_transform(ROWS, 3)(h.cuda())
        one = lens.translate(1, h[:, 1].cuda())
    assert gpu.device.type == "cuda" and one.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one.cpu(), cpu[:, 1], atol=1e-5, rtol=1e-5)
    out = lens.translate(torch.tensor([0, 1]), h[:, :2].cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.detach().cpu(), cpu[:, :2], atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert lens.weight.grad.device.type == "cpu" and lens.weight.grad[:2].abs().sum() > 0
    assert torch.equal(lens.weight.grad[2], torch.zeros(4, 4))


# ---- compatibility ----------------------------------------------------------------------------------------
def test_shape_messages_name_both_models(lens):
    with pytest.raises(LogitLensError) as e:
        TunedLens(2, 64).check(lens)
    assert str(e.value) == (
        "this tuned lens was trained for an unnamed model with blocks = 2, but tiny-llama has blocks = 3; "
        "train one for it with `logitlens train-lens`"
    )
    with pytest.raises(LogitLensError) as e:
        TunedLens(3, 8, base_model_name_or_path="org/base").check(lens)
    assert str(e.value) == (
        "this tuned lens was trained for org/base with d_model = 8, but tiny-llama has d_model = 64; "
        "train one for it with `logitlens train-lens`"
    )


def test_hash_message_names_the_way_out(lens):
    with pytest.raises(LogitLensError) as e:
        TunedLens(3, 64, unembed_hash="0" * 64).check(lens)
    assert str(e.value) == (
        "this tuned lens was trained for an unnamed model, whose unembedding differs from tiny-llama's "
        "(hash mismatch); use a lens trained for this model, or pass check_hash=False (--no-lens-check) "
        "to decode with it anyway"
    )


# ---- state --------------------------------------------------------------------------------------------
def test_state_dict_with_nn_modules_arguments():
    """With no argument: ours ({"weight", "bias"}); with nn.Module's arguments (an optimiser, a checkpoint
    of a model holding the lens): nn.Module's, keyword or positional."""
    lens = _tuned()
    assert set(lens.state_dict()) == {"weight", "bias"}
    by_keyword = lens.state_dict(prefix="lens.")
    assert set(by_keyword) == {"lens.weight", "lens.bias"}
    assert torch.equal(by_keyword["lens.weight"], lens.weight.detach())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: positional arguments are deprecated
        by_position = lens.state_dict(None, "p.")
    assert set(by_position) == {"p.weight", "p.bias"}
    assert torch.equal(by_position["p.bias"], lens.bias.detach())
    kept = lens.state_dict(keep_vars=True)
    assert kept["weight"] is lens.weight


def test_from_state_drops_the_keys_it_writes_itself():
    """``format``, ``lens_type``, ``kind`` and ``name`` describe the file, not the lens: they are not kept
    in ``meta`` (and a saved lens does not carry them twice)."""
    config = {
        "num_hidden_layers": 1, "d_model": 2, "bias": False, "format": "f", "lens_type": "t", "kind": "k",
        "name": "n", "base_model_name_or_path": "m",
    }  # fmt: skip
    lens = TunedLens.from_state(config, {"weight": torch.ones(1, 2, 2)})
    assert lens.meta == {"base_model_name_or_path": "m"}
    assert not lens.has_bias and not lens.bias.requires_grad and lens.config()["bias"] is False
    assert lens.config()["format"] == "logitlens.tuned_lens"
    assert torch.equal(lens.weight.detach(), torch.ones(1, 2, 2)) and torch.equal(
        lens.bias, torch.zeros(1, 2)
    )
    assert config["format"] == "f"  # the caller's dict is not changed


@pytest.mark.parametrize(
    ("config", "state", "message"),
    [
        (
            {"d_model": 2},
            {},
            "a tuned lens config needs integer num_hidden_layers and d_model ('num_hidden_layers')",
        ),
        (
            {"num_hidden_layers": 1, "d_model": 2},
            {},
            "tuned lens weights have shape None, expected (1, 2, 2) (num_hidden_layers=1, d_model=2 in "
            "config.json)",
        ),
        (
            {"num_hidden_layers": 1, "d_model": 2},
            {"weight": torch.zeros(1, 3, 3)},
            "tuned lens weights have shape (1, 3, 3), expected (1, 2, 2) (num_hidden_layers=1, d_model=2 in "
            "config.json)",
        ),
        (
            {"num_hidden_layers": 1, "d_model": 2},
            {"weight": torch.zeros(1, 2, 2), "bias": torch.zeros(2)},
            "tuned lens biases have shape (2,), expected (1, 2)",
        ),
    ],
)
def test_from_state_messages(config, state, message):
    with pytest.raises(LogitLensError) as e:
        TunedLens.from_state(config, state)
    assert str(e.value) == message


# ---- saving -------------------------------------------------------------------------------------------
def test_save_makes_the_missing_folders(tmp_path):
    lens = _tuned(base_model_name_or_path="tiny")
    for fmt in ("logitlens", "tuned-lens"):
        path = lens.save(tmp_path / fmt / "deep" / "lens", format=fmt)
        assert path == tmp_path / fmt / "deep" / "lens"
        back = TunedLens.load(path)
        assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)


def test_save_refuses_an_unknown_format(tmp_path):
    with pytest.raises(LogitLensError) as e:
        _tuned().save(tmp_path / "lens", format="pickle")
    assert str(e.value) == "unknown tuned lens format 'pickle'; choose one of: logitlens, tuned-lens"
    assert not (tmp_path / "lens").exists()


@pytest.mark.parametrize(
    ("fmt", "in_the_way", "what"),
    [
        ("logitlens", "translators.safetensors", "the tuned lens weights"),
        ("tuned-lens", "params.pt", "the tuned lens weights"),
        ("logitlens", "config.json", "the tuned lens config"),
    ],
)
def test_save_names_the_file_a_folder_is_in_the_way_of(tmp_path, fmt, in_the_way, what):
    (tmp_path / "lens" / in_the_way).mkdir(parents=True)
    with pytest.raises(LogitLensError) as e:
        _tuned().save(tmp_path / "lens", format=fmt)
    target = tmp_path / "lens" / in_the_way
    assert str(e.value) == f"cannot write {what} to {target}: it is a directory; give a file name"


# ---- reading a folder ----------------------------------------------------------------------------------
def _folder(tmp_path, config, name: str = "lens"):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def test_load_messages_for_a_bad_config(tmp_path):
    path = _folder(tmp_path, "{", "broken")
    try:
        json.loads("{")
    except ValueError as exc:
        why = str(exc)
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == f"cannot read {path / 'config.json'}: {why}"
    path = _folder(tmp_path, [1, 2], "list")
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == f"{path / 'config.json'} holds a list, not a JSON object"


def test_load_message_for_damaged_safetensors(tmp_path):
    from safetensors.torch import load_file

    path = _folder(tmp_path, {"num_hidden_layers": 1, "d_model": 2})
    file = path / "translators.safetensors"
    file.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    try:
        load_file(str(file))
    except Exception as exc:  # safetensors' own error type
        why = str(exc).strip().splitlines()[0]
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == f"cannot read {file}: {why}"


def test_loaded_lens_remembers_its_folder(tmp_path):
    lens = _tuned(base_model_name_or_path="tiny")
    lens.save(tmp_path / "plain")
    assert TunedLens.load(tmp_path / "plain").meta == {
        "base_model_name_or_path": "tiny",
        "source": str(tmp_path / "plain"),
    }
    _tuned(source="hub:org/lens").save(tmp_path / "named")
    assert TunedLens.load(tmp_path / "named").meta["source"] == "hub:org/lens"  # kept as written


# ---- the tuned-lens package's params.pt ------------------------------------------------------------------
def _package_folder(tmp_path, config=None, name: str = "lens"):
    return _folder(tmp_path, {"num_hidden_layers": 2, "d_model": 2} if config is None else config, name)


def test_params_saved_from_gpu_tensors_load_on_the_cpu(tmp_path):
    """A params.pt written from CUDA tensors (a lens trained on a GPU) records the device of each storage;
    it is read onto the CPU whatever the machine."""
    import torch.serialization as ser

    path = _package_folder(tmp_path)
    w = torch.randn(2, 2, 2)
    state = {f"{i}.weight": w[i].clone() for i in range(2)}

    def cuda_tag(storage):
        return "cuda:0"

    ser.register_package(-1000, cuda_tag, lambda obj, location: None)
    try:
        torch.save(state, path / "params.pt")
    finally:
        ser._package_registry[:] = [e for e in ser._package_registry if e[1] is not cuda_tag]
    assert b"cuda:0" in (path / "params.pt").read_bytes()
    lens = TunedLens.load(path)
    assert lens.weight.device.type == "cpu" and torch.equal(lens.weight.detach(), w)


class _Payload:
    def __reduce__(self):
        return (_ran, ("unpickled",))


RAN: list[str] = []


def _ran(what: str) -> str:
    RAN.append(what)
    return what


def test_pickled_code_is_refused_even_when_torch_is_told_to_unpickle_by_default(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns torch.load's default into weights_only=False; the lens
    asks for weights_only=True itself, so nothing runs."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = _package_folder(tmp_path, {"num_hidden_layers": 1, "d_model": 2})
    torch.save({"0.weight": _Payload()}, path / "params.pt")
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert RAN == []
    name = f"{__name__}._ran"
    assert str(e.value) == (
        f"{path / 'params.pt'} holds a pickled object ({name}), not only tensors; it was not loaded "
        "(weights_only=True never runs pickled code): save the translators as a dict of tensors"
    )


def test_pickled_object_without_a_global_is_refused(tmp_path):
    """An old-style pickled instance (the INST opcode) names no global: the message has no name in it."""
    path = _package_folder(tmp_path)
    (path / "params.pt").write_bytes(b"(i__main__\nX\n(dS'a'\nI1\nsb.")
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == (
        f"{path / 'params.pt'} holds a pickled object, not only tensors; it was not loaded "
        "(weights_only=True never runs pickled code): save the translators as a dict of tensors"
    )


def test_damaged_params_name_the_error(tmp_path):
    path = _package_folder(tmp_path)
    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    file = path / "params.pt"
    file.write_bytes(data[: len(data) // 2])
    try:
        torch.load(file, map_location="cpu", weights_only=True)
    except RuntimeError as exc:
        why = str(exc).strip().splitlines()[0]
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == f"cannot read {file} as tensors: RuntimeError: {why}"
    file.write_bytes(b"")
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == f"cannot read {file} as tensors: EOFError: EOFError"  # an empty message: its type


def test_params_that_are_not_a_state_dict(tmp_path):
    path = _package_folder(tmp_path)
    torch.save([torch.zeros(2, 2)], path / "params.pt")
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == f"{path / 'params.pt'} holds a list, not a state dict of translators"


def test_params_with_a_config_without_the_layer_count(tmp_path):
    path = _package_folder(tmp_path, {"d_model": 2})
    torch.save({"0.weight": torch.zeros(2, 2)}, path / "params.pt")
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == f"{path / 'config.json'} needs an integer num_hidden_layers"


def test_translators_of_different_shapes_are_listed(tmp_path):
    """Only the weights' shapes are listed (sorted, each once): the biases are not what differs."""
    path = _package_folder(tmp_path, {"num_hidden_layers": 3, "d_model": 4})
    state = {"0.weight": torch.zeros(4, 4), "1.weight": torch.zeros(3, 3), "2.weight": torch.zeros(4, 4)}
    state.update({f"{i}.bias": torch.zeros(4) for i in range(3)})
    torch.save(state, path / "params.pt")
    with pytest.raises(LogitLensError) as e:
        TunedLens.load(path)
    assert str(e.value) == (
        f"{path / 'params.pt'}: the translators differ in shape ((3, 3), (4, 4)); each must be "
        "(d_model, d_model) with a (d_model,) bias"
    )


# ---- load_lens ----------------------------------------------------------------------------------------
def test_load_lens_prefers_lens_json_to_a_config_json(tmp_path):
    """A folder with both (a lens saved next to a model's config.json) holds a ``Lens.save`` lens."""
    IdentityLens().save(tmp_path / "both")
    (tmp_path / "both" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert type(load_lens(tmp_path / "both")) is IdentityLens


def test_load_lens_without_a_name_keeps_the_class_name(tmp_path):
    (tmp_path / "lens").mkdir()
    (tmp_path / "lens" / "lens.json").write_text(json.dumps({"kind": "identity"}))
    loaded = load_lens(tmp_path / "lens")
    assert type(loaded) is IdentityLens and loaded.name == "logit"


def test_load_lens_without_a_tensor_file_gives_the_lens_no_tensors(tmp_path):
    """No lens.safetensors: the lens is built from an empty state, and says what it lacks."""
    (tmp_path / "lens").mkdir()
    info = {"kind": "tuned", "config": {"num_hidden_layers": 1, "d_model": 2}}
    (tmp_path / "lens" / "lens.json").write_text(json.dumps(info))
    with pytest.raises(LogitLensError) as e:
        load_lens(tmp_path / "lens")
    assert str(e.value) == (
        "tuned lens weights have shape None, expected (1, 2, 2) (num_hidden_layers=1, d_model=2 in config.json)"
    )


def test_load_lens_messages(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogitLensError) as e:
        load_lens(tmp_path / "empty")
    missing = tmp_path / "empty" / "lens.json"
    assert str(e.value) == (
        f"cannot read a lens from {tmp_path / 'empty'}: FileNotFoundError: [Errno 2] No such file or "
        f"directory: '{missing}'"
    )
    (tmp_path / "nokind").mkdir()
    (tmp_path / "nokind" / "lens.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(LogitLensError) as e:
        load_lens(tmp_path / "nokind")
    assert str(e.value) == f"cannot read a lens from {tmp_path / 'nokind'}: KeyError: 'kind'"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "lens.json").write_text(json.dumps({"kind": "nope"}))
    with pytest.raises(LogitLensError) as e:
        load_lens(tmp_path / "other")
    assert {"identity", "tuned"} <= set(LENSES)
    known = ", ".join(sorted(LENSES))
    assert str(e.value) == f"unknown lens kind 'nope' in {tmp_path / 'other'}; known kinds: {known}"
