"""Big local models: device maps, offload and quantised weights through ``from_pretrained`` and the CLI.

A device map that spreads the blocks gives the plain model's results; int8 weight-only weights (torchao, on
CPU) decode through the model's own quantised modules (the self-check holds) and give the fp32 top-1 on the
README's prompts; every bad combination is one line before anything loads.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from logitlens import LogitLens, LogitLensError
from logitlens.cli import main
from logitlens.model.loading import load_options
from markers import needs_default_model

needs_torchao = pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None, reason="torchao not installed (make setup installs it)"
)
PROMPTS = ["The Eiffel Tower is in the city of", "Hello", "one two three four five six"]
# The README's prompts (quick start, Python section) on the default model.
README_PROMPTS = [
    "The Eiffel Tower is in the city of",
    "The Colosseum is in the city of",
    "The capital of Japan is",
    "Water boils at",
]


def _close(a, b) -> None:
    assert torch.equal(a.top_ids, b.top_ids)
    for name in ("top_probs", "final_probs"):
        torch.testing.assert_close(a.stats[name], b.stats[name], atol=1e-5, rtol=0, equal_nan=True)
    for name in ("entropy", "kl_to_final", "cross_entropy"):
        torch.testing.assert_close(a.stats[name], b.stats[name], atol=1e-4, rtol=1e-5, equal_nan=True)


# ---- placement ----------------------------------------------------------------------------------------
def test_device_map_spreading_blocks_to_cpu_and_disk_equals_plain_loading(tiny_model_dir, tmp_path):
    main_device = 0 if torch.cuda.is_available() else "cpu"
    device_map = {
        "model.embed_tokens": main_device,
        "model.rotary_emb": main_device,
        "model.layers.0": main_device,
        "model.layers.1": "cpu",
        "model.layers.2": "disk",
        "model.norm": "cpu",
        "lm_head": "disk",
    }
    plain = LogitLens.from_pretrained(str(tiny_model_dir))
    spread = LogitLens.from_pretrained(
        str(tiny_model_dir), device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    assert spread.model.lm_head.weight.device.type == "meta"  # really offloaded, read back by accelerate
    assert spread.input_device == torch.device(main_device) and plain.input_device == torch.device("cpu")
    assert spread.self_check_diff is not None and spread.self_check_diff <= 1e-4
    kwargs = dict(top_k=5, include_subblocks=True)
    _close(plain.run(PROMPTS, **kwargs), spread.run(PROMPTS, **kwargs))


def test_device_map_auto_from_the_command_line(tiny_model_dir, capsys, tmp_path):
    out = tmp_path / "r.json"
    code = main(
        ["run", "Hello world", "--model", str(tiny_model_dir), "--device-map", "auto", "--json", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    plain = LogitLens.from_pretrained(str(tiny_model_dir)).run("Hello world", top_k=10)
    from logitlens import LensResult

    _close(plain, LensResult.load(out))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(device="cpu", device_map="auto"), "not both"),
        (dict(device_map="everywhere"), "unknown device map 'everywhere'"),
        (dict(device_map=3), "must be a string or a dict"),
        (dict(max_memory={"cpu": "1GiB"}), "max_memory needs a device map"),
        (dict(offload_folder="off"), "offload_folder needs a device map"),
        (dict(quantization="int3"), "unknown quantization 'int3'"),
    ],
)
def test_bad_placement_is_one_line(kwargs, needle):
    with pytest.raises(LogitLensError, match=needle) as info:
        load_options(**kwargs)
    assert "\n" not in str(info.value)


def test_bitsandbytes_on_cpu_is_refused_before_loading(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, here or on a GPU one
    code = main(["run", "Hello", "--model", str(tiny_model_dir), "--quantize", "bnb-4bit"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "needs a CUDA GPU" in err and "int8" in err


@pytest.mark.parametrize("text", ["0:20GiB", "cpu=", "=3GiB"])
def test_bad_max_memory_is_one_line(tiny_model_dir, capsys, text):
    code = main(
        ["run", "Hello", "--model", str(tiny_model_dir), "--device-map", "auto", "--max-memory", text]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "DEVICE=SIZE" in err


def test_max_memory_is_parsed_for_accelerate():
    from logitlens.cli.common import parse_max_memory

    assert parse_max_memory("0=20GiB, cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}


# ---- quantised weights ----------------------------------------------------------------------------------
@needs_torchao
def test_int8_weights_decode_through_the_quantised_modules(tiny_model_dir):
    lens = LogitLens.from_pretrained(str(tiny_model_dir), quantization="int8")
    weight = lens.model.model.layers[0].mlp.down_proj.weight
    assert type(weight).__name__ != "Parameter" or weight.dtype == torch.int8, type(weight)  # really int8
    assert lens.self_check_diff is not None and lens.self_check_diff <= 1e-4  # the lens = the model's logits
    ids = [[5, 9, 200, 31, 7]]
    res = lens.run(ids, top_k=3)
    with torch.no_grad():
        logits = lens.model(torch.tensor(ids)).logits[0].float()
    torch.testing.assert_close(
        res.top_probs[0, -1, :, 0], logits.softmax(-1).max(-1).values, atol=1e-5, rtol=0
    )


@needs_torchao
@pytest.mark.slow
@needs_default_model
def test_int8_default_model_gives_the_readme_prompts_fp32_top1():
    fp32 = LogitLens.from_pretrained("default")
    int8 = LogitLens.from_pretrained("default", quantization="int8")
    assert int8.self_check_diff is not None and int8.self_check_diff <= 1e-4
    a = fp32.run(README_PROMPTS, positions=[-1], top_k=1)
    b = int8.run(README_PROMPTS, positions=[-1], top_k=1)
    assert torch.equal(a.top_ids[:, -1], b.top_ids[:, -1])  # the output row's top-1 for every prompt
    assert a.top_ids.shape[1] == 31
