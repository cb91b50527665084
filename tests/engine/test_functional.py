"""The functional decode + reduction (the form a remote trace runs) against the local fast path.

``Decoder.logits_functional`` calls the model's modules instead of reading the unembedding's weight, and
``decode_reduce`` chunks over a count fixed in advance; both must give what ``decode_stats`` gives with
``Decoder.logits``, on every family (post-processing included: soft-capping, logit scale, divisor).
"""

from __future__ import annotations

import pytest
import torch

from logitlens import LogitLens
from logitlens.engine.reduce import decode_reduce, decode_stats
from tiny_models import SPECS, VOCAB, build

TARGETS = [[5], [6, 7, 200]]


@pytest.mark.parametrize("family", sorted(SPECS))
def test_functional_decode_reduce_equals_fast_path(family):
    lens = LogitLens(build(family), None)
    g = torch.Generator().manual_seed(1)
    ids = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (3, 6)]  # shortest first
    cols = [list(range(len(s))) for s in ids]
    captured = lens.capture(ids, cols, lens.rows())  # (B, R, P, d)
    flat = torch.cat([captured[0, :, :3].transpose(0, 1), captured[1].transpose(0, 1)])  # (M, R, d)
    nxt = torch.tensor([ids[0][1], ids[0][2], -1, *ids[1][1:], -1])
    fast = decode_stats(flat, lens.decoder.logits, vocab_size=VOCAB, top_k=4, next_ids=nxt, targets=TARGETS)
    with torch.inference_mode():
        func = decode_reduce(
            flat,
            lens.decoder.logits_functional,
            top_k=4,
            next_ids=nxt,
            targets=[torch.tensor(t) for t in TARGETS],
            chunk=2,
        )
    assert set(func) == set(fast)
    assert torch.equal(func["top_ids"], fast.top_ids)
    assert torch.equal(func["target_ranks"], fast.target_ranks)
    assert torch.equal(func["agrees_with_final"], fast.agrees_with_final)
    for name in ("top_probs", "final_probs", "target_probs"):
        torch.testing.assert_close(func[name], fast[name], atol=1e-6, rtol=0)
    for name in ("entropy", "kl_to_final", "cross_entropy"):
        torch.testing.assert_close(func[name], fast[name], atol=1e-4, rtol=1e-5, equal_nan=True)


def test_functional_logits_call_the_modules_not_the_weight(lens, tokenizer):
    """logits_functional goes through the unembedding module (a hook on it fires) and equals logits."""
    h = torch.randn(5, lens.model.config.hidden_size)
    calls = []
    handle = lens.decoder.unembed_module.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.inference_mode():
            got = lens.decoder.logits_functional(h)
    finally:
        handle.remove()
    assert calls == [1]
    torch.testing.assert_close(got, lens.decoder.logits(h), atol=1e-5, rtol=1e-6)
