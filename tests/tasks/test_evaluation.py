"""``evaluate`` against a direct computation from ``layer_logits``, the running aggregate, the progress bar,
the ``eval`` command's table and files, and its bad-input messages."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from logitlens import LogitLensError
from logitlens.cli.eval import add_parser as add_eval_parser
from logitlens.cli.eval import run as cmd_eval
from logitlens.core.rows import default_rows
from logitlens.tasks.data import Corpus
from logitlens.tasks.evaluation import RowAggregate, evaluate

TEXTS = [
    "The Eiffel Tower is in the city of Paris.",
    "The Colosseum is in the city of Rome.",
    "Hello world, hello logit lens!",
    "Layers decode the residual stream through the final norm and the unembedding.",
    "one two three four five six seven eight nine ten",
] * 6


def direct_metrics(lens, seqs: torch.Tensor) -> dict[str, np.ndarray]:
    """Per row, from raw logits in float64: every metric over every position with a next token."""
    per: dict[str, list[torch.Tensor]] = {k: [] for k in ("ce", "kl", "ent", "agree", "acc")}
    for seq in seqs.tolist():
        logp = torch.log_softmax(lens.layer_logits(seq).double(), -1)[:, :-1]  # (R, T-1, V)
        nxt = torch.tensor(seq[1:])
        p = logp.exp()
        top1 = logp.argmax(-1)  # (R, T-1)
        per["ce"].append(-logp.gather(-1, nxt.view(1, -1, 1).expand(logp.shape[0], -1, 1)).squeeze(-1))
        per["kl"].append((p[-1:] * (logp[-1:] - logp)).sum(-1))
        per["ent"].append(-(p * logp).sum(-1))
        per["agree"].append((top1 == top1[-1:]).double())
        per["acc"].append((top1 == nxt).double())
    return {k: torch.cat(v, 1).numpy() for k, v in per.items()}  # (R, n)


def test_metrics_equal_a_direct_computation(lens):
    corpus = Corpus.from_texts(TEXTS)
    df = evaluate(lens, corpus, seq_len=16, split="all", batch_size=3, progress=False)
    seqs = corpus.sequences(lens.tokenizer, 16)
    ref = direct_metrics(lens, seqs)
    n = ref["ce"].shape[1]
    assert n == seqs.shape[0] * 15 and (df["tokens"] == n).all()
    assert list(df["row_name"]) == lens.row_names and list(df["model"].unique()) == ["tiny-llama"]
    assert df["depth"].tolist() == [r.depth(lens.n_layers) for r in lens.rows()]
    for col, key in (
        ("cross_entropy", "ce"),
        ("kl_to_final", "kl"),
        ("entropy", "ent"),
        ("agreement", "agree"),
        ("accuracy", "acc"),
    ):
        np.testing.assert_allclose(df[col], ref[key].mean(1), atol=1e-5, rtol=0, err_msg=col)
        se = ref[key].std(1, ddof=1) / math.sqrt(n)
        np.testing.assert_allclose(df[f"{col}_se"], se, atol=1e-5, rtol=0, err_msg=col)
    np.testing.assert_allclose(df["bits_per_token"], ref["ce"].mean(1) / math.log(2), atol=1e-5)
    assert df.attrs["sequences"] == seqs.shape[0] and df.attrs["tokens"] == seqs.numel()
    assert df.attrs["split"] == "all" and df.attrs["tokens_per_s"] > 0


def test_token_ids_batches_and_limits_give_the_same_numbers(lens):
    corpus = Corpus.from_texts(TEXTS)
    seqs = corpus.sequences(lens.tokenizer, 16)
    a = evaluate(lens, corpus, seq_len=16, split="all", batch_size=1, progress=False)
    b = evaluate(lens, seqs, batch_size=7, progress=False)  # token ids: used as they are
    cols = ["cross_entropy", "kl_to_final", "entropy", "agreement", "accuracy", "entropy_se"]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), atol=1e-6)
    c = evaluate(lens, seqs.tolist(), tokens=40, progress=False)  # 40 tokens -> 3 sequences of 16
    assert c.attrs["sequences"] == 3 and c.attrs["tokens"] == 48 and (c["tokens"] == 45).all()
    d = evaluate(lens, corpus, seq_len=16, split="all", tokens=40, progress=False)
    assert d.attrs["sequences"] == 3


def test_default_split_is_validation_and_seeded(lens):
    corpus = Corpus.from_texts([f"Document {i}: " + TEXTS[i % 5] for i in range(40)])
    df = evaluate(lens, corpus, seq_len=8, progress=False)
    assert df.attrs["split"] == "validation" and df.attrs["seed"] == 0
    expected = corpus.split("validation", seed=0).sequences(lens.tokenizer, 8).shape[0]
    assert df.attrs["sequences"] == expected
    again = evaluate(lens, corpus.split("validation", seed=0), seq_len=8, progress=False)  # already split
    np.testing.assert_array_equal(df["cross_entropy"], again["cross_entropy"])


def test_row_aggregate_matches_numpy_with_nans():
    rng = np.random.default_rng(0)
    rows = default_rows(2)
    agg = RowAggregate(rows, 2)
    values = rng.normal(5, 2, size=(3, 1000))
    values[rng.random(values.shape) < 0.1] = np.nan
    for chunk in np.array_split(np.arange(1000), 7):  # uneven batches
        part = values[:, chunk]
        agg.add("x", part.reshape(-1), np.repeat(np.arange(3), len(chunk)))
    mean, se = agg.mean_se("x")
    for r in range(3):
        v = values[r][~np.isnan(values[r])]
        assert mean[r] == pytest.approx(v.mean(), abs=1e-12)
        assert se[r] == pytest.approx(v.std(ddof=1) / math.sqrt(len(v)), abs=1e-12)
    df = agg.to_frame({"n": "x"})
    assert list(df.columns) == ["row", "row_name", "layer", "site", "depth", "n", "x", "x_se"]


def test_progress_bar_on_stderr_and_off(lens, capsys):
    evaluate(lens, Corpus.from_texts(TEXTS), seq_len=16, split="all", progress=True)
    err = capsys.readouterr().err
    assert "tokens/s" in err and "ETA" in err and "eval tiny-llama" in err
    evaluate(lens, Corpus.from_texts(TEXTS), seq_len=16, split="all", progress=False)
    assert capsys.readouterr().err == ""


def test_evaluate_bad_input(lens):
    corpus = Corpus.from_texts(TEXTS)
    with pytest.raises(
        LogitLensError, match=r"seq_len \(--seq-len\) 65 is longer than the context of tiny-llama"
    ):
        evaluate(lens, corpus, seq_len=65, progress=False)
    with pytest.raises(LogitLensError, match="top_k= is not an option here"):
        evaluate(lens, corpus, top_k=3, progress=False)
    with pytest.raises(LogitLensError, match=r"tokens \(--tokens\) must be a positive integer"):
        evaluate(lens, corpus, tokens=0, progress=False)
    with pytest.raises(LogitLensError, match="data must be a corpus source"):
        evaluate(lens, 3.5, progress=False)
    with pytest.raises(LogitLensError, match="the corpus is shorter than one sequence"):
        evaluate(lens, Corpus.from_texts(["short text"]), seq_len=64, progress=False)


# ---- the eval command ---------------------------------------------------------------------------------
def eval_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``logitlens eval`` through its own parser, with main()'s handling of LogitLensError."""
    from logitlens.cli.common import quiet_transformers

    quiet_transformers()  # as main() does
    parser = argparse.ArgumentParser(prog="logitlens")
    add_eval_parser(parser.add_subparsers(dest="command"))
    try:
        code = cmd_eval(parser.parse_args(["eval", *argv]))
    except LogitLensError as exc:
        print(f"logitlens: error: {exc}", file=__import__("sys").stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    return path


def test_eval_command_writes_every_file(capsys, tiny_model_dir, corpus_file, tmp_path):
    files = {k: tmp_path / f"eval.{k}" for k in ("json", "csv", "png", "html")}
    argv = ["--model", str(tiny_model_dir), "--data", str(corpus_file), "--seq-len", "16", "--split", "all"]
    for k, path in files.items():
        argv += [f"--{k}", str(path)]
    code, out, err = eval_cli(capsys, *argv)
    assert code == 0, err
    assert "bits/token" in out and "embed" in out and "= next token" in out
    assert all(f"wrote {p}" in err for p in files.values())
    doc = json.loads(files["json"].read_text())
    assert doc["format"] == "logitlens.eval" and len(doc["rows"]) == 4 and doc["runs"][0]["split"] == "all"
    import pandas as pd

    table = pd.read_csv(files["csv"])
    assert list(table["row_name"]) == ["embed", "0", "1", "2"] and "bits_per_token_se" in table.columns
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["png"].stat().st_size > 20_000
    html = files["html"].read_text()
    assert "Plotly" in html and "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html and "bits_per_token" in html


def test_eval_command_lines_several_models_up_on_depth(capsys, tiny_model_dir, corpus_file, tmp_path):
    argv = ["--model", str(tiny_model_dir), "--model", str(tiny_model_dir), "--data", str(corpus_file)]
    code, out, err = eval_cli(
        capsys, *argv, "--seq-len", "16", "--split", "all", "--csv", str(tmp_path / "e.csv")
    )
    assert code == 0, err
    assert "lined up on relative depth" in out and f"{tiny_model_dir} (#2)" in out
    import pandas as pd

    assert pd.read_csv(tmp_path / "e.csv")["model"].nunique() == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seq-len", "128"], "--seq-len 128 is longer than the context of"),
        (
            ["--png", "no/such/folder/e.png"],
            "--png no/such/folder/e.png: the folder no/such/folder does not exist",
        ),
        (["--csv", "missing-dir/e.csv"], "the folder missing-dir does not exist; create it first"),
        (["--tokens", "0"], "--tokens must be at least 1, got 0"),
        (["--seq-len", "1"], "--seq-len must be at least 2, got 1"),
        (["--png", "e.jpg"], "--png e.jpg: the file name must end in .png"),
    ],
)
def test_eval_command_bad_input(capsys, tiny_model_dir, corpus_file, extra, message):
    code, _, err = eval_cli(capsys, "--model", str(tiny_model_dir), "--data", str(corpus_file), *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_eval_command_bad_data_fails_before_loading_a_model(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    code, _, err = eval_cli(capsys, "--model", "no/such/model", "--data", str(bad))
    assert code == 2 and "line 2 has no field 'text'" in err
    code, _, err = eval_cli(capsys, "--model", "no/such/model", "--data", str(tmp_path / "nope.txt"))
    assert code == 2 and "cannot read corpus file" in err and "No such file or directory" in err
