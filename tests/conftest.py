"""Shared fixtures: a tiny random Llama with perturbed norms, and a byte-level BPE tokenizer trained here.

Everything is built offline in a second or two; nothing is downloaded.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = [
    "The Eiffel Tower is in the city of Paris.",
    "The Colosseum is in the city of Rome.",
    "Hello world, hello logit lens!",
    "Layers decode the residual stream through the final norm and the unembedding.",
    "one two three four five six seven eight nine ten",
    "résumé café naïve — 東京 🙂\n\tnew line and tab",
]


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Make norms and biases matter: norm weights ~ N(1, scale), every bias ~ N(0, scale)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            elif "norm" in name or ".ln" in name:
                p.copy_(1 + torch.randn(p.shape, generator=g) * scale)
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return fast


def make_llama(vocab_size: int, seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
    return perturb(model, seed)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_llama(len(tokenizer))


@pytest.fixture(scope="session")
def lens(tiny_model, tokenizer):
    from logitlens import LogitLens

    return LogitLens(tiny_model, tokenizer, name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tokenizer, tmp_path_factory):
    """The tiny model saved as a normal Hugging Face folder (for from_pretrained and the CLI)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny products: one thread is faster than two fighting over shared cores (restored afterwards).
    A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lenses():
    """``lenses(name)``: a LogitLens on the test zoo's tiny ``name`` model, built once per test module."""
    from logitlens import LogitLens
    from tiny_models import build

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = LogitLens(build(name), None, name=name)
        return cache[name]

    return get
