"""Concepts (``logitlens.concept``): which tokens a word list gives, the summed mass a run reports for them,
the ``--concept`` option, the trajectory image, and every bad-input message."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import logitlens
from logitlens import LogitLensError, concept
from logitlens.cli import main
from logitlens.tasks.concepts import Concept
from markers import needs_default_model

PROMPT = "The Eiffel Tower is in the city of"
TRANSLATION = 'Français: "fleur" - English: "flower"\nFrançais: "montagne" - English: "'


def token_strings(c: Concept) -> list[str]:
    return [t.token for t in c.tokens]


# ---- which tokens (the conftest tokenizer: byte-level BPE trained on a few sentences) -----------------------
def test_variants_first_tokens_and_what_is_skipped(lens):
    tok = lens.tokenizer
    first = {
        v: tok(v, add_special_tokens=False)["input_ids"][0] for v in (" Paris", "Paris", " paris", "paris")
    }
    assert tok.convert_ids_to_tokens(first[" paris"]) == "Ġ"  # the bare leading-space piece
    c = concept(lens, ["Paris"])
    assert c.ids == (first[" Paris"], first["Paris"])
    assert token_strings(c) == ["␣Paris", "Pa"]
    assert [(t.word, t.variant) for t in c.tokens] == [("Paris", " Paris"), ("Paris", "Paris")]
    skipped = {s.variant: (s.token, s.reason) for s in c.skipped}
    assert skipped[" paris"][0] == "␣" and "whitespace" in skipped[" paris"][1]
    assert skipped["paris"][0] == "p" and "single letter" in skipped["paris"][1]
    assert c.name == "{Paris}" and isinstance(c, logitlens.engine.lens.Target)


def test_several_words_are_deduplicated_and_described(lens):
    c = concept(lens, ["Paris", "Rome", " Paris ", "city"], name="places")
    assert c.words == ("Paris", "Rome", "city")  # stripped, each once
    assert token_strings(c) == ["␣Paris", "Pa", "␣Rome", "Ro", "␣city"]
    assert len(set(c.ids)) == len(c.ids) == 5
    assert {s.token for s in c.skipped} == {"␣", "p", "r", "c", "C"}
    text = c.describe()
    assert text.splitlines()[0].startswith("concept places from 'Paris', 'Rome', 'city'")
    assert "␣Rome" in text and "from 'Rome' as ' Rome'" in text and "skipped C" in text
    line = c.line()
    assert "\n" not in line and line.startswith("concept places: 5 tokens ␣Paris, Pa, ␣Rome, Ro, ␣city")
    assert repr(c).startswith("Concept('places', 5 tokens: ␣Paris, Pa")


def test_byte_fragments_are_skipped_and_a_word_without_tokens_is_refused(lens):
    tok = lens.tokenizer
    assert tok.convert_ids_to_tokens(tok("東京", add_special_tokens=False)["input_ids"][0]) == "æĿ"  # 2 bytes
    with pytest.raises(LogitLensError, match=r"the word '東京' gives no usable first token .*byte fragment"):
        concept(lens, ["Paris", "東京"])


class _SentencePieceLike:
    """Llama-2-like: ' Paris' tokenises to '▁' + '▁Paris', and a BOS comes first whatever one asks."""

    pieces = ["<s>", "▁", "▁Paris", "▁par", "is"]
    all_special_ids = [0]
    table = {" Paris": [1, 2], "Paris": [2], " paris": [1, 3, 4], "paris": [3, 4]}

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [0, *self.table[text]]}

    def convert_ids_to_tokens(self, ids):
        return self.pieces[ids] if isinstance(ids, int) else [self.pieces[i] for i in ids]

    def __len__(self):
        return len(self.pieces)


def test_sentencepiece_space_piece_and_bos_are_not_taken():
    fake = SimpleNamespace(tokenizer=_SentencePieceLike(), decoder=SimpleNamespace(vocab_size=5))
    c = concept(fake, ["Paris"])  # type: ignore[arg-type]
    assert c.ids == (2, 3) and token_strings(c) == ["␣Paris", "␣par"]
    assert [(s.token, s.id) for s in c.skipped] == [("␣", 1)]  # once, though two variants start with it


@pytest.mark.parametrize(
    ("words", "name", "message"),
    [
        ([], None, "a concept needs a list of words"),
        (["Paris", "  "], None, "concept word 2 is empty"),
        (["Paris", 3], None, "concept word 2 is a int"),
        (["Paris"], " ", "a concept's name must be a non-empty string"),
    ],
)
def test_bad_words(lens, words, name, message):
    with pytest.raises(LogitLensError, match=message):
        concept(lens, words, name=name)


def test_a_target_with_ids_outside_the_vocabulary_is_refused(lens):
    foreign = Concept("{elsewhere}", (5, lens.decoder.vocab_size + 3))
    assert foreign.describe() == "concept {elsewhere}: mass summed over 2 tokens"
    with pytest.raises(LogitLensError, match=r"target '\{elsewhere\}' has token id 403: build it with this"):
        lens.run(PROMPT, targets=[foreign])


# ---- what a run reports for a concept -----------------------------------------------------------------------
def test_summed_probability_and_rank_match_layer_logits(lens):
    c = concept(lens, ["Paris", "Rome"])
    res = lens.run(PROMPT, targets=[c, " Paris"], include_subblocks=True)
    assert res.target_names == ["{Paris,Rome}", " Paris"] and res.target_ids[0] == list(c.ids)
    logits = lens.layer_logits(PROMPT, include_subblocks=True)  # (R, T, V) fp32
    ids = torch.tensor(c.ids)
    expected = logits.softmax(-1)[..., ids].sum(-1)  # (R, T)
    got = res.target_probs[0, :, :, 0]
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    alone = logits.softmax(-1)[..., ids[0]]
    assert (expected - alone).abs().max() > 1e-3  # the sum is not one token's probability
    best = logits[..., ids].amax(-1, keepdim=True)  # a set's rank is its best token's
    assert torch.equal(res.target_ranks[0, :, :, 0], (logits > best).sum(-1) + 1)
    assert not res.target_probs[..., 1].isnan().any()  # " Paris" tracked beside it


def test_concepts_survive_save_and_load(lens, tmp_path):
    c = concept(lens, ["Rome"], name="rome")
    res = lens.run(PROMPT, targets=[c], positions=[-1])
    back = logitlens.LensResult.load(res.save(tmp_path / "r.json"))
    assert back.target_names == ["rome"] and back.target_ids == [list(c.ids)]
    assert torch.equal(back.target_probs, res.target_probs)


def test_trajectory_png(lens, tmp_path):
    from logitlens.views.trajectory import trajectory_figure, write_trajectory_png

    res = lens.run(PROMPT, targets=[concept(lens, ["Paris"]), concept(lens, ["Rome"])], positions=[-1])
    fig = trajectory_figure(res, log_probs=True)
    prob_ax, rank_ax = fig.axes
    assert prob_ax.get_yscale() == "log" and rank_ax.get_yscale() == "log"
    assert rank_ax.yaxis_inverted()  # rank 1 on top
    line = prob_ax.get_lines()[1]
    assert line.get_label() == "{Rome}"
    assert torch.allclose(torch.tensor(line.get_ydata()).float(), res.target_probs[0, :, 0, 1])
    probs = res.target_probs.clone()
    probs[0, 0, 0, 0] = 0.0  # an fp32 underflow: drawn as a ▼ on the axis's floor, not off the chart
    low_ax = trajectory_figure(res.replace(target_probs=probs), log_probs=True).axes[0]
    floor = low_ax.get_lines()[0].get_ydata()[0]
    assert 0 < floor < probs[probs > 0].min() and low_ax.get_ylim()[0] < floor
    assert low_ax.get_lines()[1].get_marker() == "v" and "p = 0 in fp32" in low_ax.texts[0].get_text()
    path = write_trajectory_png(res, tmp_path / "c.png", log_probs=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LogitLensError, match="must end in"):
        write_trajectory_png(res, tmp_path / "c.gif")


# ---- the command line -----------------------------------------------------------------------------------
def test_cli_concept(capsys, tiny_model_dir, tmp_path):
    path = tmp_path / "r.json"
    argv = ["run", PROMPT, "--model", str(tiny_model_dir), "--concept", "places=Paris,Rome"]
    code = main([*argv, "--concept", "city", "--target", " Paris", "--json", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "logitlens: concept places: 4 tokens ␣Paris, Pa, ␣Rome, Ro; skipped" in err
    assert "logitlens: concept {city}: 1 token ␣city;" in err
    res = logitlens.LensResult.load(path)
    assert res.target_names == [" Paris", "places", "{city}"]
    assert len(res.target_ids[1]) == 4


def test_cli_concept_in_a_streamed_run(capsys, tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    argv = [
        "run",
        PROMPT,
        "--model",
        str(tiny_model_dir),
        "--concept",
        "places=Paris,Rome",
        "--out",
        str(path),
    ]
    code = main([*argv, "--positions=-1", "--quiet", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "logitlens: concept places: 4 tokens" in err
    assert "p(places)" in pq.read_table(path).column_names


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--concept '' has no words"),
        (" , ", "has no words"),
        ("=Paris", "has no name before ="),
        ("en=", "--concept 'en=' has no words"),
        ("Paris,東京", "the word '東京' gives no usable first token"),
    ],
)
def test_cli_bad_concept_exits_2_with_one_line(capsys, tiny_model_dir, value, message):
    code = main(["run", PROMPT, "--model", str(tiny_model_dir), "--concept", value])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("logitlens: error: ") and message in err


# ---- the real default model (SmolLM2-135M) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def default_lens():
    return logitlens.LogitLens.from_pretrained("default")


@pytest.mark.slow
@needs_default_model
def test_default_tokenizer_variants(default_lens):
    mountain = concept(default_lens, ["mountain"])
    assert token_strings(mountain) == ["␣mountain", "mount", "␣Mountain"]
    assert [(s.token, s.variant) for s in mountain.skipped] == [("M", "Mountain")]
    paris = concept(default_lens, ["Paris", "Parigi"])
    assert token_strings(paris) == ["␣Paris", "Paris", "␣par", "par", "␣Par", "Par"]
    with pytest.raises(
        LogitLensError, match=r"'パリ' gives no usable first token .*whitespace.*byte fragment"
    ):
        concept(default_lens, ["Paris", "パリ"])


@pytest.mark.slow
@needs_default_model
def test_default_model_latent_language(default_lens):
    en = concept(default_lens, ["mountain"], name="english")
    fr = concept(default_lens, ["montagne"], name="french")
    res = default_lens.run(TRANSLATION, targets=[en, fr], positions=[-1])
    logits = default_lens.layer_logits(TRANSLATION)[:, -1]  # (R, V)
    for t, c in enumerate((en, fr)):
        expected = logits.softmax(-1)[:, list(c.ids)].sum(-1)
        assert torch.allclose(res.target_probs[0, :, 0, t], expected, atol=1e-6, rtol=1e-4)
    assert res.target_ranks[0, -1, 0, 0] == 1  # the model answers in English: "mount" (ain)
    assert res.target_probs[0, -1, 0, 0] > res.target_probs[0, -1, 0, 1]
