"""Per-prompt answers (multi-token, teacher-forced), critical layers, and the row vocabulary of the texts.

The tiny model checks every number against a direct computation; the default model checks the README's
claims (" Paris" for the Eiffel prompt, critical layers that are not block 0).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from logitlens import LensResult, LogitLensError
from logitlens.cli import main
from markers import needs_default_model

PROMPTS = ["The Eiffel Tower is in the city of", "Hello world, hello"]
ANSWERS = [" Paris.", " logit lens!"]


def direct_answer_logprob(model, ids: list[int], answer: list[int]) -> torch.Tensor:
    """The model's own teacher-forced log p(answer | prompt), from its logits (no lens involved)."""
    x = torch.tensor([ids + answer[:-1]])
    with torch.no_grad():
        logp = model(x).logits[0].float().log_softmax(-1)  # (T, V)
    return sum(logp[len(ids) - 1 + t, a] for t, a in enumerate(answer))


def direct_row_logprobs(lens, ids: list[int], answer: list[int]) -> torch.Tensor:
    """(R,) every row's teacher-forced log-probability of the whole answer, from ``layer_logits``."""
    logits = lens.layer_logits([ids + answer[:-1]])  # (R, T, V)
    logp = logits.log_softmax(-1)
    return sum(logp[:, len(ids) - 1 + t, a] for t, a in enumerate(answer))


def test_answers_are_teacher_forced_per_row(lens, tiny_model):
    res = lens.run(PROMPTS, answers=ANSWERS, top_k=3, batch_size=2)
    assert res.answers == ANSWERS and res.has_answers
    assert res.answer_logprobs.shape == (2, res.n_rows) == res.answer_ranks.shape == res.answer_probs.shape
    for i, (prompt, answer) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        ids = lens.tokenizer(prompt)["input_ids"]
        a = lens.tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert len(a) > 1 and res.answer_ids[i] == a  # multi-token answers
        torch.testing.assert_close(
            res.answer_logprobs[i], direct_row_logprobs(lens, ids, a), atol=2e-4, rtol=0
        )
        # the last row is the model's own output
        assert float(res.answer_logprobs[i, -1]) == pytest.approx(
            float(direct_answer_logprob(tiny_model, ids, a)), abs=2e-4
        )
        logits = lens.layer_logits([ids])[:, -1]  # (R, V) at the prompt's last position
        first = logits.log_softmax(-1)[:, a[0]].exp()
        torch.testing.assert_close(res.answer_probs[i], first, atol=1e-5, rtol=1e-4)
        ranks = (logits > logits[:, a[0] : a[0] + 1]).sum(-1) + 1
        assert res.answer_ranks[i].tolist() == ranks.tolist()
        hits = [r for r in range(res.n_rows) if ranks[r] == 1]
        assert res.answer_first_top1()[i] == (res.row_names[hits[0]] if hits else None)


def test_answers_leave_the_prompt_statistics_alone(lens):
    plain = lens.run(PROMPTS, top_k=3)
    with_answers = lens.run(PROMPTS, top_k=3, answers=ANSWERS)
    for name in ("top_ids", "kl_to_final", "entropy"):
        torch.testing.assert_close(
            plain.stats[name], with_answers.stats[name], atol=1e-4, rtol=1e-4, equal_nan=True
        )
    assert not plain.has_answers and plain.answers == []


def test_answers_as_ids_none_and_one_prompt_alone(lens):
    a = lens.tokenizer(ANSWERS[0], add_special_tokens=False)["input_ids"]
    res = lens.run(PROMPTS, answers=[a, None], positions=[-1])
    assert res.answers[1] is None and res.answer_ids[1] == []
    assert torch.isnan(res.answer_logprobs[1]).all() and (res.answer_ranks[1] == -1).all()
    alone = lens.run(PROMPTS[0], answers=ANSWERS[0])  # a single prompt takes a single answer
    torch.testing.assert_close(alone.answer_logprobs[0], res.answer_logprobs[0], atol=1e-4, rtol=0)
    s = res.summary()
    assert s["answer"][0] == "".join(res.token(t) for t in a) and s["answer"].isna()[1]
    assert s["answer_logprob"][0] == pytest.approx(float(res.answer_logprobs[0, -1]))


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (["x"], "got 1 answers for 2 prompts"),
        ([" Paris", ""], "the answer of prompt 2 is empty"),
        ([" Paris", 3.5], "the answer of prompt 2 is a float"),
        ([" Paris", [10**9]], "the answer of prompt 2 has token id 1000000000 outside the vocabulary"),
        ([" Paris", " word" * 80], "prompt 2 with its answer has"),
    ],
)
def test_bad_answers_give_one_line(lens, answers, message):
    with pytest.raises(LogitLensError, match=message):
        lens.run(PROMPTS, answers=answers)


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_answers_survive_save_load_concat_and_export(lens, tmp_path, suffix):
    res = lens.run(PROMPTS, answers=ANSWERS, batch_size=1)  # two batches, concatenated
    back = LensResult.load(res.save(tmp_path / f"r{suffix}"))
    assert back.answers == res.answers and back.answer_ids == res.answer_ids
    for name in ("answer_logprobs", "answer_probs", "answer_ranks"):
        torch.testing.assert_close(getattr(back, name), getattr(res, name))
    df = res.to_dataframe()
    line = df[(df.prompt_index == 1) & (df.row == 2)].iloc[0]
    assert line["answer"] == ANSWERS[1]
    assert line["answer_logprob"] == pytest.approx(float(res.answer_logprobs[1, 2]))
    assert line["rank(answer)"] == int(res.answer_ranks[1, 2])
    picked = res.select([1])
    assert picked.answers == [ANSWERS[1]] and picked.answer_logprobs[0].equal(res.answer_logprobs[1])


def test_multi_token_target_is_labelled_by_its_tracked_token(lens):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = lens.run(PROMPTS[0], targets=[" Eiffel Tower"])
    first = lens.tokenizer.decode(lens.tokenizer(" Eiffel Tower", add_special_tokens=False)["input_ids"][:1])
    assert res.target_names == [first] and first != " Eiffel Tower"
    assert any("--answer" in str(w.message) for w in caught)


# ---- critical layers --------------------------------------------------------------------------------------
def test_critical_layers_leave_out_the_embedding_step(lens):
    res = lens.run(PROMPTS[0])
    rises, falls = res.critical_rows(0)
    assert len(rises) <= 3 and len(falls) <= 3
    assert all(c.layer >= 1 and c.nats > 0 for c in rises + falls)  # never the step embed -> block 0
    logp = res.final_probs[0, :, -1].clamp_min(1e-30).log()
    for c in rises:
        r = res.row_names.index(c.row)
        assert res.rows[r].layer == c.layer  # the block index, as the summary and the tables number rows
        assert c.nats == pytest.approx(float(logp[r] - logp[r - 1]), abs=1e-5)
    assert [c.nats for c in rises] == sorted((c.nats for c in rises), reverse=True)


# ---- the command ------------------------------------------------------------------------------------------
def test_cli_answer_and_prompts_files(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "r.json"
    code = main(
        ["run", PROMPTS[0], "--answer", ANSWERS[0], "--model", str(tiny_model_dir), "--json", str(out)]
    )
    text = capsys.readouterr().out
    assert code == 0 and "answer ␣Paris. log p" in text
    assert LensResult.load(out).answers == [ANSWERS[0]]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("".join(f"{p}\t{a}\n" for p, a in zip(PROMPTS, ANSWERS, strict=True)), encoding="utf-8")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"prompt": p, "answer": a}) for p, a in zip(PROMPTS, ANSWERS, strict=True))
    )
    for path in (tsv, jsonl):
        code = main(
            [
                "run",
                "--prompts-file",
                str(path),
                "--model",
                str(tiny_model_dir),
                "--json",
                str(out),
                "--quiet",
            ]
        )
        capsys.readouterr()
        back = LensResult.load(out)
        assert code == 0 and back.answers == ANSWERS and back.prompts == PROMPTS


@pytest.mark.parametrize(
    ("argv", "content", "message"),
    [
        (["A", "B", "--answer", " x"], None, "--answer goes with one PROMPT"),
        ([], "a prompt\tx\nno tab here\n", "line 2: give 'prompt<TAB>answer' on every line"),
        ([], '{"prompt": "a"}\n{"answer": "x"}\n', 'line 2: give an object with a "prompt" string'),
        ([], '{"prompt": "a"}\n{oops\n', "line 2 is not valid JSON"),
        ([], b"\xff\xfe\x00binary", "it is not UTF-8 text"),
    ],
)
def test_cli_bad_answers_and_files(capsys, tiny_model_dir, tmp_path, argv, content, message):
    if content is not None:
        path = tmp_path / "p.txt"
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        argv = [*argv, "--prompts-file", str(path)]
    code = main(["run", *argv, "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ---- the default model ------------------------------------------------------------------------------------
README_PROMPTS = [
    "The Eiffel Tower is in the city of",
    "The Colosseum is in the city of",
    "The capital of Japan is",
]


@pytest.fixture(scope="module")
def default_lens():
    from logitlens import LogitLens

    return LogitLens.from_pretrained("default")


@needs_default_model
@pytest.mark.slow
def test_default_model_answers_paris_and_a_multi_token_answer(default_lens):
    res = default_lens.run(README_PROMPTS[:2], answers=[" Paris", " Rome, Italy"], positions=[-1])
    assert res.answer_ranks[0, -1] == 1 and res.answer_first_top1()[0] is not None
    assert res.summary()["answer_rank"][0] == 1
    tok = default_lens.tokenizer
    ids = tok(README_PROMPTS[1])["input_ids"]
    a = tok(" Rome, Italy", add_special_tokens=False)["input_ids"]
    assert len(a) >= 3
    direct = float(direct_answer_logprob(default_lens.model, ids, a))
    assert float(res.answer_logprobs[1, -1]) == pytest.approx(direct, abs=1e-3)


@needs_default_model
@pytest.mark.slow
def test_default_model_critical_layers_are_not_block_0(default_lens):
    res = default_lens.run(README_PROMPTS, positions=[-1])
    s = res.summary()
    for i in range(len(README_PROMPTS)):
        assert s["kl_fall_layers"][i] and s["logprob_rise_layers"][i]
        assert s["kl_fall_layers"][i][0] != 0 and s["logprob_rise_layers"][i][0] != 0


# ---- instruct models and BOS ------------------------------------------------------------------------------
@needs_default_model
@pytest.mark.slow
def test_default_model_chat_template_and_bos(default_lens):
    tok = default_lens.tokenizer
    res = default_lens.run("What is the capital of France?", chat=True, positions=[-1], answers=["Paris"])
    expected = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert (
        res.input_ids[0] == tok(expected, add_special_tokens=False)["input_ids"]
    )  # exactly what the model saw
    assert "".join(res.tokens[0]).endswith("assistant↵") and res.answer_ranks.shape == (1, res.n_rows)
    bos = res.token(tok.bos_token_id)
    assert default_lens.run("Hi", prepend_bos=True).tokens[0] == [bos, "Hi"]
    assert default_lens.run("Hi", prepend_bos=False).tokens[0] == ["Hi"]


def test_chat_without_a_template_and_cli_bos(lens, capsys, tiny_model_dir):
    with pytest.raises(LogitLensError, match="has no chat template; leave out chat=True"):
        lens.run("Hello", chat=True)
    code = main(["run", "Hello", "--chat", "--model", str(tiny_model_dir)])
    assert code == 2 and "has no chat template" in capsys.readouterr().err
    out = main(["run", "Hello world", "--no-bos", "--model", str(tiny_model_dir), "--top-k", "2"])
    assert out == 0


def test_largest_changes_leave_out_block_0_with_attn_rows():
    from logitlens.core.rows import default_rows
    from logitlens.engine.analysis import largest_changes

    rows = default_rows(2, include_subblocks=True)  # embed, 0.attn, 0, 1.attn, 1
    assert largest_changes([0.0, 50.0, 90.0, 91.0, 95.0], rows) == [(4, 4.0), (3, 1.0)]
    assert largest_changes([0.0, 50.0, 90.0, 91.0, 95.0], rows, top=1) == [(4, 4.0)]
    assert largest_changes([5.0, 4.0, 3.0, 2.0, 1.0], rows) == []  # only falls: no rise
