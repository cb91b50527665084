"""Guards for the tuned lens (issue 20): the single-row translation, the unembedding-hash cache and the
default of ``bias`` for a folder whose config does not say.

Each test here fails on a plausible bug that the rest of the suite let through (see the issue)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_llama
from logitlens import LogitLens, LogitLensError, Row, TunedLens


def _lens_with_translators(lens: LogitLens, seed: int = 0) -> TunedLens:
    """A TunedLens for ``lens`` with random, clearly non-symmetric translators and biases."""
    tuned = TunedLens.for_model(lens)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(tuned.weight.shape, generator=g) * 0.3
        w += torch.triu(torch.ones_like(w[0]), diagonal=1) * 0.5  # W != W.T by a wide margin
        tuned.weight.copy_(w)
        tuned.bias.copy_(torch.randn(tuned.bias.shape, generator=g))
    return tuned


def test_transform_of_each_row_is_h_plus_h_W_transposed_plus_b(lens):
    """``transform`` of one row (the single-translator path, not the batched one) is the nn.Linear
    layout ``h + h @ W.T + b``; a forgotten transpose gives ``h @ W`` instead."""
    tuned = _lens_with_translators(lens)
    w, b = tuned.weight.detach(), tuned.bias.detach()
    assert not torch.allclose(w[0], w[0].T, atol=1e-2)
    h = torch.randn(2, 5, tuned.d_model, generator=torch.Generator().manual_seed(1))
    rows = [Row(-1, "embed")] + [Row(i) for i in range(lens.n_layers - 1)]
    with torch.no_grad():
        for j, row in enumerate(rows):
            want = h + h @ w[j].T + b[j]
            torch.testing.assert_close(tuned.transform(row, j, h), want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(tuned.translate(j, h), want, atol=1e-5, rtol=1e-5)
        # the output row is decoded as it is
        out = Row(lens.n_layers - 1)
        assert torch.equal(tuned.transform(out, lens.n_layers, h), h)


def test_a_lens_is_refused_after_the_unembedding_was_edited_in_place(tokenizer):
    """The hash cache must see an in-place edit of the same tensor (same address, new version)."""
    model = make_llama(len(tokenizer), seed=3)
    lens = LogitLens(model, tokenizer, name="edited")
    tuned = TunedLens.for_model(lens)  # computes (and caches) the unembedding's hash
    tuned.check(lens)  # made for it: accepted
    weight = model.get_output_embeddings().weight
    ptr = weight.data_ptr()
    with torch.no_grad():
        weight.add_(1.0)  # in place: same storage, same address
    assert weight.data_ptr() == ptr
    with pytest.raises(LogitLensError, match="hash mismatch"):
        tuned.check(lens)
    tuned.check(lens, check_hash=False)  # the way out the message names


def test_a_folder_without_a_bias_key_keeps_its_biases(lens, tmp_path):
    """A config.json without ``"bias"`` means biases (the default); saved again in the tuned-lens
    package's layout the biases must still be there."""
    tuned = _lens_with_translators(lens)
    tuned.save(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    del config["bias"]
    (tmp_path / "ours" / "config.json").write_text(json.dumps(config))
    back = TunedLens.load(tmp_path / "ours")
    assert back.has_bias and back.bias.requires_grad and back.config()["bias"] is True
    torch.testing.assert_close(back.bias.detach(), tuned.bias.detach())
    back.save(tmp_path / "package", format="tuned-lens")
    again = TunedLens.load(tmp_path / "package")
    torch.testing.assert_close(again.bias.detach(), tuned.bias.detach())
    h = torch.randn(3, tuned.d_model)
    with torch.no_grad():
        torch.testing.assert_close(again.transform(Row(0), 1, h), tuned.transform(Row(0), 1, h))
