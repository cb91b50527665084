"""Every path gives the same numbers and fails before the work: the options that change values reach
``--json`` and ``--out`` alike (and the run record, so a changed resume is refused), the summary reads the
prompt's last position whatever the order of ``--positions``, one row numbering, every output checked
writable before the model loads, a finished ``--out`` kept, errors that need only the config or the
tokenizer given before the weights load, and a "did you mean" for a typo."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import transformers

from logitlens import LensResult, LogitLens, TunedLens
from logitlens.cli import main

UNWRITABLE = Path("/proc/1")  # a folder that exists but cannot hold files, even for root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def last_line(err: str) -> str:
    return [line for line in err.strip().splitlines() if line.strip()][-1]


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model, tokenizer, tmp_path_factory):
    """The tiny model with a BOS token and a chat template on its tokenizer (for --chat, --bos, --no-bos)."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.bos_token = "<|endoftext|>"
    tok.chat_template = "{% for m in messages %}user: {{ m['content'] }}\n{% endfor %}assistant:"
    path = tmp_path_factory.mktemp("tiny-chat")
    tiny_model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tuned_dir(tiny_model, tokenizer, tmp_path_factory):
    import torch

    lens = LogitLens(tiny_model, tokenizer)
    tuned = TunedLens(lens.n_layers, int(lens.decoder.weight.shape[1]))  # no unembedding hash: not checked
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        tuned.weight.copy_(0.05 * torch.randn(tuned.weight.shape, generator=g))
        tuned.bias.copy_(0.05 * torch.randn(tuned.bias.shape, generator=g))
    path = tmp_path_factory.mktemp("tuned") / "lens"
    tuned.save(path)
    return path


def _frame(res: LensResult):
    df = res.to_dataframe().sort_values(["prompt_index", "row", "position"]).reset_index(drop=True)
    return df


def _plain(value):
    """A cell as plain Python, NaN and None alike (a missing next token reads back either way)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return np.asarray(value).tolist()


def _same_values(a: LensResult, b: LensResult) -> None:
    fa, fb = _frame(a), _frame(b)
    assert len(fa) == len(fb) and list(fa.columns) == list(fb.columns)
    for col in fa.columns:
        x, y = fa[col].to_numpy(), fb[col].to_numpy()
        if x.dtype == object:
            assert [_plain(v) for v in x] == [_plain(v) for v in y], col
        else:
            np.testing.assert_allclose(x.astype(float), y.astype(float), rtol=0, atol=0, err_msg=col)
    assert a.tokens == b.tokens and a.target_names == b.target_names


OPTIONS = {  # option -> (arguments, needs the chat tokenizer)
    "answers from a file": (["--prompts-file", "{tsv}"], False),
    "--chat": (["--chat"], True),
    "--bos": (["--bos"], True),
    "--no-bos": (["--no-bos"], True),
    "--concept": (["--concept", "x=the"], False),
    "--target": (["--target", " the", "--target", "a| b"], False),
    "--positions": (["--positions=-1,-2"], False),
    "--tuned-lens": (["--tuned-lens", "{tuned}"], False),
    "--subblocks": (["--subblocks"], False),
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_an_option_gives_the_same_values_through_json_and_out(
    option, capsys, tmp_path, tiny_model_dir, chat_model_dir, tuned_dir
):
    args, chat = OPTIONS[option]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("the cat sat on\t the mat\nhello there\t friend\n", encoding="utf-8")
    args = [a.format(tsv=tsv, tuned=tuned_dir) for a in args]
    prompts = [] if "--prompts-file" in args else ["the cat sat on the mat", "hello there"]
    model = ["--model", chat_model_dir if chat else tiny_model_dir, "--top-k", "3"]
    code, _, err = run_cli(capsys, "run", *prompts, *model, *args, "--json", tmp_path / "a.json", "--quiet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "run", *prompts, *model, *args, "--out", tmp_path / "a.parquet", "--quiet")
    assert code == 0, err
    direct, streamed = LensResult.load(tmp_path / "a.json"), LensResult.load(tmp_path / "a.parquet")
    _same_values(direct, streamed)
    if option == "answers from a file":
        assert direct.answers == [" the mat", " friend"]
        assert "answer_logprob" in direct.to_dataframe().columns or direct.has_answers
    if option == "--tuned-lens":
        assert direct.meta["lens"] == "tuned" == streamed.meta.get("lens", "tuned")


def test_the_answers_of_a_file_reach_the_run_record_and_a_changed_resume_is_refused(
    capsys, tmp_path, tiny_model_dir
):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("the cat sat on\t the mat\n", encoding="utf-8")
    out = tmp_path / "r.parquet"
    base = ["run", "--prompts-file", tsv, "--model", tiny_model_dir, "--out", out, "--quiet"]
    assert run_cli(capsys, *base)[0] == 0
    tsv.write_text("the cat sat on\t the hat\n", encoding="utf-8")
    code, _, err = run_cli(capsys, *base, "--resume")
    assert code == 2 and "cannot resume" in err and "answers" in err
    code, _, err = run_cli(capsys, *base, "--resume", "--subblocks")
    assert code == 2 and "cannot resume" in err


def test_a_finished_out_file_is_kept_unless_overwrite(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "r.parquet"
    argv = ["run", "a b c", "d e", "--model", tiny_model_dir, "--out", out, "--quiet"]
    assert run_cli(capsys, *argv)[0] == 0
    before = out.read_bytes()
    code, _, err = run_cli(capsys, "run", "x", "--model", tmp_path / "no-model", "--out", out, "--quiet")
    assert code == 2 and "already exists: pass --overwrite" in last_line(err)
    assert out.read_bytes() == before
    code, _, err = run_cli(
        capsys, "run", "x y", "--model", tiny_model_dir, "--out", out, "--quiet", "--overwrite"
    )
    assert code == 0, err
    assert LensResult.load(out).n_prompts == 1


def test_the_summary_is_at_the_last_position_whatever_the_order(lens):
    a = lens.run("the cat sat on the mat", positions=[-1, -2], targets=[" the"])
    b = lens.run("the cat sat on the mat", positions=[-2, -1], targets=[" the"])
    assert a.positions.tolist() == b.positions.tolist()  # columns in position order
    assert a.positions[0, 0] < a.positions[0, 1]
    sa, sb = a.summary(), b.summary()
    assert sa.to_dict() == sb.to_dict()
    assert int(sa["position"][0]) == len(a.input_ids[0]) - 1


def test_a_summary_off_the_last_position_says_so(lens, capsys):
    from rich.console import Console

    from logitlens.views.terminal import summary_line

    res = lens.run("the cat sat on the mat", positions=[0, 1])
    Console(width=200).print(summary_line(res, 0))
    out = capsys.readouterr().out
    assert "at position 1" in out and "last position was not decoded" in out


def test_critical_rows_use_the_block_index_of_the_summary(lens):
    res = lens.run(["the cat sat on the mat", "hello there friend"])
    summary = res.summary()
    for i in range(res.n_prompts):
        rises, falls = res.critical_rows(i)
        assert [c.layer for c in rises] == summary["logprob_rise_layers"][i]
        assert [c.layer for c in falls] == summary["kl_fall_layers"][i]
        for c in rises + falls:
            assert res.rows[res.row_names.index(c.row)].layer == c.layer


# ---- outputs checked before the work -----------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "hi", "--json", UNWRITABLE / "x.json"],
        ["run", "hi", "--png", "ok.png", "--json", UNWRITABLE / "x.json"],
        ["run", "hi", "--out", UNWRITABLE / "x.parquet"],
        ["run", "hi", "--html", UNWRITABLE / "x.html"],
        ["compare", "hi", "--model", "a", "--model", "b", "--png", UNWRITABLE / "x.png"],
        ["attribute", "hi", "--target", " x", "--csv", UNWRITABLE / "a.csv"],
        ["eval", "--data", "sample", "--csv", UNWRITABLE / "e.csv"],
        ["train-lens", "--data", "sample", "--out", UNWRITABLE / "lens"],
    ],
)
def test_an_unwritable_output_is_refused_before_the_model_loads(argv, capsys, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    monkeypatch.chdir(tmp_path)
    if "--model" not in argv:
        argv = [*argv, "--model", tmp_path / "no-model"]
    start = time.perf_counter()
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "", err
    assert "cannot write in the folder /proc/1" in last_line(err)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "ok.png").exists()


def test_a_late_write_failure_writes_the_others_and_names_it(capsys, tmp_path, tiny_model_dir, monkeypatch):
    from logitlens.errors import LogitLensError
    from logitlens.views import report

    def full_disk(res, path, *a, **k):
        raise LogitLensError(f"cannot write the HTML report to {path}: No space left on device")

    monkeypatch.setattr(report, "write_html", full_disk)
    argv = ["run", "hi there", "--model", tiny_model_dir, "--quiet"]
    code, _, err = run_cli(
        capsys,
        *argv,
        "--html",
        tmp_path / "r.html",
        "--json",
        tmp_path / "r.json",
        "--png",
        tmp_path / "r.png",
    )
    assert code == 2
    assert last_line(err) == (
        f"logitlens: error: --html: cannot write the HTML report to {tmp_path / 'r.html'}: No space left on device"
    )
    assert (tmp_path / "r.json").is_file() and (tmp_path / "r.png").is_file()
    assert f"wrote {tmp_path / 'r.json'}" in err and f"wrote {tmp_path / 'r.png'}" in err


# ---- errors that need only the config or the tokenizer ----------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-k", "1000000"], "--top-k must be at most the vocabulary size"),
        (["--positions=5"], "position 5 is out of range for prompt 1, which has"),
        (["--device", "cuda"], "CUDA is not available here"),
        (["--device", "mps"], "MPS is not available here"),
        (["--tuned-lens", "no-such-lens"], "--tuned-lens no-such-lens: the folder does not exist"),
        (["--tuned-lens", "{wide}"], "this tuned lens was trained for"),
    ],
)
def test_errors_that_need_no_weights_come_before_they_load(
    args, message, capsys, tmp_path, tiny_model_dir, monkeypatch
):
    import torch

    wide = tmp_path / "wide"
    TunedLens(3, 32).save(wide)  # 3 blocks but width 32: the tiny model has 64
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_model(*a, **k):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    args = [a.format(wide=wide) for a in args]
    start = time.perf_counter()
    code, out, err = run_cli(capsys, "run", "a b", "--model", tiny_model_dir, *args)
    assert code == 2 and out == "" and message in last_line(err), err
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--overwrite"], "--overwrite replaces a streamed run's file: give --out FILE too"),
        (["--out", "{parts_run}"], "holds an interrupted run: pass --resume to continue it"),
        (["--json", "r.json"], "under torchrun, `logitlens run` shares the prompts over the ranks only when"),
    ],
)
def test_streamed_run_options_are_checked_before_loading(args, message, capsys, tmp_path, monkeypatch):
    from logitlens.cli import run as run_command

    (tmp_path / "r.parquet.parts").mkdir()  # an interrupted run's parts folder
    if "--json" in args:
        monkeypatch.setattr(run_command, "_ranks", lambda: 2)  # as under torchrun with two ranks
    monkeypatch.chdir(tmp_path)
    args = [a.format(parts_run=tmp_path / "r.parquet") for a in args]
    code, out, err = run_cli(capsys, "run", "hi", "--model", tmp_path / "no-model", *args)
    assert code == 2 and out == "" and message in last_line(err), err


def test_quiet_alone_is_refused(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", "hi", "--quiet", "--model", tmp_path / "none")
    assert code == 2 and "--quiet with no output file" in last_line(err)


# ---- the reader's side -------------------------------------------------------------------------------
def test_eval_tokens_below_one_sequence_takes_a_shorter_sequence(lens):
    from logitlens import Corpus, evaluate

    corpus = Corpus.from_texts(["the cat sat on the mat and the dog sat on the log " * 20])
    df = evaluate(lens, corpus, tokens=24, seq_len=512, split="all", progress=False)
    assert df.attrs["tokens"] == 24 and df.attrs["seq_len"] == 24 and df.attrs["sequences"] == 1


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["rnu", "hi"], "did you mean run?"),
        (["run", "hi", "--top_k", "3"], "did you mean --top-k?"),
        (["run", "hi", "--taget", " x"], "did you mean --target?"),
        (["evl"], "did you mean eval?"),
    ],
)
def test_a_typo_gets_a_did_you_mean(argv, hint, capsys):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and last_line(err).endswith(hint), err


def test_json_help_names_both_formats(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "F.json" in text and "F.parquet" in text
