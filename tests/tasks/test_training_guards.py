"""Guards for tuned-lens training (issue 20): the learning-rate schedule, the optimiser's weight decay and
the next-token-only mask of ``row_kl``, each against a reference written here."""

from __future__ import annotations

import pytest
import torch

from logitlens import Corpus, TunedLens, train_tuned_lens
from logitlens.tasks.training import _schedule, batch_indices, row_kl
from words import word_texts

SEQ, BATCH = 32, 64  # tokens per sequence, tokens per step: two sequences a step


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(word_texts(30, 50), name="w")


@pytest.mark.parametrize(
    ("steps", "warmup", "want"),
    [
        (4, 0, [1.0, 0.75, 0.5, 0.25]),  # 1 at step 0, 1/steps at the last
        (1, 0, [1.0]),
        (6, 2, [1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25]),  # warm-up (s + 1) / (w + 1), then linear decay
    ],
)
def test_schedule_factors(steps, warmup, want):
    factor = _schedule(steps, warmup)
    assert [factor(s) for s in range(steps)] == pytest.approx(want, abs=1e-12)
    assert factor(steps) == 0.0  # after the last step


def test_schedule_without_warmup_is_the_packages_linear_schedule():
    """No warm-up (SGD's default): exactly transformers' get_linear_schedule_with_warmup, which the
    tuned-lens package uses."""
    from transformers import get_linear_schedule_with_warmup

    steps = 7
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = get_linear_schedule_with_warmup(opt, 0, steps)
    factor = _schedule(steps, 0)
    for s in range(steps):
        assert factor(s) == pytest.approx(ref.lr_lambdas[0](s), abs=1e-12)


def _reference_training(lens, corpus, steps, *, lr, momentum, weight_decay, clip, seed=42):
    """The recipe written out with torch.optim.SGD and the model's own modules: the loss is the sum over
    rows of each row's mean KL(p_final || p_row), rows = hidden_states[0 .. L-1]."""
    model = lens.model
    norm, head = model.model.norm, model.get_output_embeddings()
    ids = corpus.split("train", seed=0).sequences(lens.tokenizer, SEQ)
    per_step = BATCH // SEQ
    n_layers = lens.n_layers
    d = head.weight.shape[1]
    w = torch.zeros(n_layers, d, d, requires_grad=True)
    b = torch.zeros(n_layers, d, requires_grad=True)
    opt = torch.optim.SGD(
        [w, b], lr=lr * (1 - momentum), momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (steps - s) / steps)
    for step in range(steps):
        batch = ids[batch_indices(ids.shape[0], step, per_step, seed)]
        with torch.no_grad():
            out = model(batch, output_hidden_states=True)
        final = torch.log_softmax(out.logits.float(), -1)  # (n, T, V)
        p = final.exp()
        loss = 0.0
        for j in range(n_layers):
            h = out.hidden_states[j]
            logq = torch.log_softmax(head(norm(h + h @ w[j].T + b[j])).float(), -1)
            loss = loss + (p * (final - logq)).sum(-1).mean()
        opt.zero_grad()
        loss.backward(inputs=[w, b])  # the shared model's parameters get no .grad
        torch.nn.utils.clip_grad_norm_([w, b], clip)
        opt.step()
        sched.step()
    return w.detach(), b.detach()


def test_two_sgd_steps_match_torch_sgd_with_the_same_weight_decay(lens, corpus, tmp_path):
    """A large weight decay and two steps (the decay acts from the second step on: the translators start
    at zero), against torch.optim.SGD with Nesterov momentum, clipping and the linear schedule."""
    kw = dict(lr=1.0, momentum=0.9, weight_decay=5.0, clip=1.0)
    tuned = train_tuned_lens(
        lens, corpus, out=tmp_path / "lens", steps=2, seq_len=SEQ, batch_tokens=BATCH, eval_tokens=0,
        progress=False, **kw,
    )  # fmt: skip
    w, b = _reference_training(lens, corpus, 2, **kw)
    scale = float(w.abs().max())
    assert scale > 1e-6  # the translators moved
    torch.testing.assert_close(tuned.weight.detach().cpu(), w, rtol=1e-3, atol=1e-4 * scale)
    torch.testing.assert_close(tuned.bias.detach().cpu(), b, rtol=1e-3, atol=1e-4 * float(b.abs().max()))
    # and the decay matters at this size: without it the second step lands elsewhere
    w0, _ = _reference_training(lens, corpus, 2, **{**kw, "weight_decay": 0.0})
    assert (w0 - w).abs().max() > 0.05 * scale


def test_row_kl_next_token_only_averages_positions_0_to_T_minus_2(lens, corpus):
    ids = corpus.sequences(lens.tokenizer, 16, max_sequences=3)  # (3, 16)
    n_layers = lens.n_layers
    tuned = TunedLens.for_model(lens)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tuned.weight.copy_(torch.randn(tuned.weight.shape, generator=g) * 0.05)
        tuned.bias.copy_(torch.randn(tuned.bias.shape, generator=g) * 0.5)
    for lens_ in (None, tuned):
        kl = lens.run(ids, top_k=1, lens=lens_).kl_to_final[:, :n_layers].double()  # (N, L, T)
        want = kl[:, :, :-1].mean(dim=(0, 2))
        got = row_kl(lens, ids, lens_, next_token_only=True)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(kl[:, :, 1:].mean(dim=(0, 2)), want, rtol=1e-3)  # first != last dropped
        torch.testing.assert_close(row_kl(lens, ids, lens_), kl.mean(dim=(0, 2)), rtol=1e-4, atol=1e-7)
