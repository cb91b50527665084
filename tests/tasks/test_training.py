"""Training a tuned lens (``logitlens.tasks.training``, ``logitlens train-lens``) and evaluating it beside the logit
lens (``logitlens eval --lens logit --lens DIR``), on the tiny Llama of conftest.py."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from logitlens import LogitLensError
from logitlens.cli import main
from logitlens.engine.tuned import TunedLens
from logitlens.tasks.data import Corpus
from logitlens.tasks.evaluation import evaluate
from logitlens.tasks.training import CHECKPOINT, Interrupted, batch_indices, row_kl, train_tuned_lens
from words import word_texts

_TEXT = (
    "The Eiffel Tower is in the city of Paris . Colosseum Rome Hello world , hello logit lens ! Layers "
    "decode the residual stream through final norm and unembedding one two three four five six seven"
)
WORDS = _TEXT.split(" ")
SEQ, BATCH = 32, 128  # tokens per sequence, tokens per step
FAST = dict(seq_len=SEQ, batch_tokens=BATCH, progress=False)


def texts(n: int = 40, words: int = 60, seed: int = 0) -> list[str]:
    return word_texts(n, words, seed, vocabulary=WORDS)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(texts(), name="words")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "words.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts()))
    return path


# ---- the trainer ------------------------------------------------------------------------------------------
def test_data_order_is_a_pure_function_of_seed_and_step():
    n, per = 10, 3
    first = [batch_indices(n, s, per, seed=7) for s in range(8)]
    assert first == [batch_indices(n, s, per, seed=7) for s in range(8)]
    stream = [i for b in first for i in b]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))  # epochs
    assert stream[:10] != stream[10:20]  # each epoch in its own order
    assert first != [batch_indices(n, s, per, seed=8) for s in range(8)]


def test_training_lowers_held_out_kl_at_every_row(lens, corpus, tmp_path):
    tuned = train_tuned_lens(lens, corpus, out=tmp_path / "lens", steps=16, eval_tokens=512, **FAST)
    facts = tuned.meta["training"]
    held = facts["held_out"]
    assert held["rows"] == lens.row_names[:-1] and len(held["kl_tuned"]) == lens.n_layers
    assert all(t < g for t, g in zip(held["kl_tuned"], held["kl_logit"], strict=True)), held
    assert facts["steps"] == 16 and facts["tokens_seen"] == 16 * BATCH and len(facts["losses"]) == 16
    # the saved folder: config.json (with the facts) + translators.safetensors, no checkpoint left
    names = sorted(p.name for p in (tmp_path / "lens").iterdir())
    assert names == ["config.json", "translators.safetensors"]
    back = TunedLens.load(tmp_path / "lens")
    assert (
        torch.equal(back.weight, tuned.weight.cpu())
        and back.meta["training"]["final_loss"] == facts["final_loss"]
    )
    # independently, through evaluate (the eval command's path) on the validation split, lens= forwarded
    kw = dict(seq_len=SEQ, split="validation", progress=False)
    logit, tuned_df = evaluate(lens, corpus, **kw), evaluate(lens, corpus, lens=back, **kw)
    assert list(tuned_df["lens"].unique()) == ["tuned"] and list(logit["lens"].unique()) == ["logit"]
    inner = slice(0, lens.n_layers)  # every row but the output row
    assert (tuned_df["kl_to_final"].to_numpy()[inner] < logit["kl_to_final"].to_numpy()[inner]).all()
    assert tuned_df["kl_to_final"].iloc[-1] == logit["kl_to_final"].iloc[-1] == 0.0


def test_only_the_translators_get_gradients(lens, corpus, tmp_path):
    model = lens.model
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert any(flags.values())  # the model's own parameters would take gradients if the trainer let them
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned = train_tuned_lens(lens, corpus, out=tmp_path / "lens", steps=2, eval_tokens=0, **FAST)
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert tuned.weight.abs().sum() > 0 and tuned.bias.abs().sum() > 0  # the translators did move


def test_training_decode_equals_the_lens_decode(lens, corpus, tmp_path):
    """The KL the trainer computes (model's own logits, one product over all rows) = LensResult.kl_to_final
    averaged over the same tokens: at the identity (the first step's loss) and through translators."""
    seen = []
    train_tuned_lens(
        lens,
        corpus,
        out=tmp_path / "lens",
        steps=1,
        eval_tokens=0,
        callback=lambda s, loss: seen.append(loss),
        **FAST,
    )
    ids = corpus.split("train", seed=0).sequences(lens.tokenizer, SEQ)
    batch = ids[batch_indices(ids.shape[0], 0, BATCH // SEQ, seed=42)]  # the first step's sequences
    res = lens.run(batch, top_k=1)
    lens_kl = res.kl_to_final[:, : lens.n_layers].double().mean(dim=(0, 2))  # (L,) over every position
    assert seen[0] == pytest.approx(float(lens_kl.mean()), rel=1e-4)
    assert torch.allclose(row_kl(lens, batch), lens_kl, rtol=1e-4, atol=1e-7)
    tuned = TunedLens.for_model(lens)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        tuned.weight.copy_(torch.randn(tuned.weight.shape, generator=g) * 0.05)
        tuned.bias.copy_(torch.randn(tuned.bias.shape, generator=g) * 0.5)
    through = lens.run(batch, top_k=1, lens=tuned).kl_to_final[:, : lens.n_layers].double().mean(dim=(0, 2))
    assert not torch.allclose(through, lens_kl, rtol=1e-2)  # the translators change the numbers
    assert torch.allclose(row_kl(lens, batch, tuned), through, rtol=1e-4, atol=1e-7)


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(lens, corpus, tmp_path):
    kw = dict(steps=7, checkpoint_every=2, eval_tokens=0, **FAST)
    whole = train_tuned_lens(lens, corpus, out=tmp_path / "whole", **kw)

    def stop_at_5(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        train_tuned_lens(lens, corpus, out=tmp_path / "cut", callback=stop_at_5, **kw)
    assert info.value.step == 4 and (tmp_path / "cut" / CHECKPOINT).is_file()  # lost: step 5 only
    assert not (tmp_path / "cut" / "config.json").exists()
    with pytest.raises(LogitLensError, match="steps = 7.*this run has 8"):
        train_tuned_lens(lens, corpus, out=tmp_path / "cut", resume=True, **{**kw, "steps": 8})
    with pytest.raises(LogitLensError, match="unfinished run; add --resume"):
        train_tuned_lens(lens, corpus, out=tmp_path / "cut", **kw)
    resumed = train_tuned_lens(lens, corpus, out=tmp_path / "cut", resume=True, **kw)
    assert torch.equal(resumed.weight, whole.weight) and torch.equal(resumed.bias, whole.bias)
    assert resumed.meta["training"]["losses"] == whole.meta["training"]["losses"]
    assert not (tmp_path / "cut" / CHECKPOINT).exists()
    saved = [TunedLens.load(tmp_path / d) for d in ("whole", "cut")]
    assert torch.equal(saved[0].weight, saved[1].weight)


def test_bfloat16_weights_and_autocast_train_fp32_translators(tokenizer, corpus, tmp_path):
    """``--dtype bfloat16``: bf16 weights, autocast of the forward pass and the decode; the translators,
    their gradients and the KL stay fp32 (on a CPU only because it was asked for)."""
    from conftest import make_llama
    from logitlens import LogitLens

    bf16 = LogitLens(make_llama(len(tokenizer)).to(torch.bfloat16), tokenizer, name="tiny-bf16")
    tuned = train_tuned_lens(
        bf16, corpus, out=tmp_path / "lens", steps=3, eval_tokens=128, dtype="bfloat16", **FAST
    )
    assert tuned.weight.dtype == torch.float32 and tuned.weight.abs().sum() > 0
    facts = tuned.meta["training"]
    assert facts["dtype"] == "bfloat16" and all(map(math.isfinite, facts["losses"]))
    assert all(map(math.isfinite, facts["held_out"]["kl_tuned"]))
    with pytest.raises(LogitLensError, match="choose float32 or bfloat16"):
        train_tuned_lens(bf16, corpus, out=tmp_path / "x", steps=1, dtype="float16", **FAST)


# ---- the command --------------------------------------------------------------------------------------
def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("logitlens: error: ") and "\n" not in err, err
    return err


def _train_args(model_dir, corpus_file, out, *extra):
    return [
        "train-lens",
        "--model",
        str(model_dir),
        "--data",
        str(corpus_file),
        "--out",
        str(out),
        "--seq-len",
        str(SEQ),
        "--batch-tokens",
        str(BATCH),
        "--no-progress",
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--steps", "-3"], "--steps must be at least 1, got -3"),
        (["--resume"], "holds no checkpoint"),
        (["--batch-tokens", "8"], "less than one sequence"),
    ],
)
def test_train_lens_refuses_bad_options_before_loading(
    tiny_model_dir, corpus_file, tmp_path, capsys, extra, message
):
    assert (
        main(_train_args(tiny_model_dir, corpus_file, tmp_path / "out", *extra)) == 2
    )  # the last value wins
    assert message in _error(capsys)


def test_train_lens_refuses_an_out_folder_in_use(lens, tiny_model_dir, corpus_file, tmp_path, capsys):
    done = tmp_path / "done"
    TunedLens.for_model(lens).save(done)
    assert main(_train_args(tiny_model_dir, corpus_file, done)) == 2
    assert "already holds a trained tuned lens; give another --out, or --overwrite" in _error(capsys)
    assert main(_train_args(tiny_model_dir, corpus_file, done, "--resume")) == 2
    assert "nothing to resume" in _error(capsys)
    half = tmp_path / "half"
    half.mkdir()
    (half / CHECKPOINT).write_bytes(b"")
    assert main(_train_args(tiny_model_dir, corpus_file, half)) == 2
    assert "add --resume to continue it" in _error(capsys)
    file = tmp_path / "file"
    file.write_text("x")
    assert main(_train_args(tiny_model_dir, corpus_file, file)) == 2
    assert "is a file" in _error(capsys)


def test_train_lens_refuses_what_the_model_or_corpus_cannot_do(tiny_model_dir, corpus_file, tmp_path, capsys):
    out = tmp_path / "out"
    too_long = _train_args(tiny_model_dir, corpus_file, out, "--seq-len", "100", "--batch-tokens", "200")
    assert main(too_long) == 2
    assert "--seq-len) 100 is longer than the context of" in _error(capsys)
    assert main(_train_args(tiny_model_dir, corpus_file, out, "--batch-tokens", str(10**6))) == 2
    assert "the corpus is too small for one step" in _error(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_train_lens_then_eval_puts_both_lenses_side_by_side(tiny_model_dir, corpus_file, tmp_path, capsys):
    out = tmp_path / "lens"
    assert main(_train_args(tiny_model_dir, corpus_file, out, "--steps", "3", "--eval-tokens", "64")) == 0
    assert "wrote" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["steps"] == 3 and config["training"]["held_out"]["tokens"] > 0
    csv, js, png = tmp_path / "e.csv", tmp_path / "e.json", tmp_path / "e.png"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(corpus_file), "--seq-len", str(SEQ)]
    args += ["--lens", "logit", "--lens", str(out), "--csv", str(csv), "--json", str(js), "--png", str(png)]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "logit lens" in printed and "tuned lens" in printed
    df = pd.read_csv(csv)
    n_rows = config["num_hidden_layers"] + 1
    assert df.groupby("lens").size().to_dict() == {"logit": n_rows, "tuned": n_rows}
    assert df["model"].nunique() == 1  # one model, two lenses: not renamed apart
    kl = df.pivot(index="row", columns="lens", values="kl_to_final")
    assert not kl["logit"].equals(kl["tuned"]) and kl["logit"].iloc[-1] == kl["tuned"].iloc[-1] == 0
    assert {r["lens"] for r in json.loads(js.read_text())["rows"]} == {"logit", "tuned"}
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_refuses_a_tuned_lens_for_another_model(tiny_model_dir, corpus_file, tmp_path, capsys):
    other = tmp_path / "other"
    TunedLens(5, 64, base_model_name_or_path="another-model").save(other)
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(corpus_file), "--seq-len", str(SEQ)]
    assert main([*args, "--lens", "logit", "--lens", str(other), "--no-progress"]) == 2
    assert "trained for another-model with blocks = 5" in _error(capsys)
    assert main([*args, "--lens", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "--lens" in _error(capsys)


def test_eval_png_puts_an_outlier_row_on_a_log_scale():
    """One row far above the others (the embeddings' ~100 nats of KL under the logit lens) would flatten the
    rest: that panel switches to a log scale above 1; an ordinary panel stays linear."""
    from logitlens.views.evaluation import eval_png_figure

    n = 6
    base = {"depth": [i / (n - 1) for i in range(n)], "row_name": ["embed", *map(str, range(n - 1))]}
    cols = {m: [1.0, 2, 3, 2, 1, 0.5] for m in ("bits_per_token", "entropy", "agreement", "accuracy")}
    df = pd.DataFrame({**base, **cols, "kl_to_final": [100.0, 5, 4, 3, 2, 0]})
    for m in ("bits_per_token", "kl_to_final", "entropy", "agreement", "accuracy"):
        df[f"{m}_se"] = 0.0
    axes = eval_png_figure(df).axes
    assert axes[1].get_yscale() == "symlog" and "log scale" in axes[1].get_title()  # KL
    assert axes[0].get_yscale() == "linear" and axes[2].get_yscale() == "linear"


def test_train_lens_says_how_to_resume_after_ctrl_c(
    tiny_model_dir, corpus_file, tmp_path, capsys, monkeypatch
):
    import logitlens.tasks.training

    def interrupted(lens, data, *, out, **kwargs):
        raise Interrupted(out, 10)

    monkeypatch.setattr(logitlens.tasks.training, "train_tuned_lens", interrupted)
    assert main(_train_args(tiny_model_dir, corpus_file, tmp_path / "out")) == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        f"logitlens: interrupted; the checkpoint of step 10 is in {tmp_path / 'out'}: run the same command "
        "with --resume to continue"
    )
