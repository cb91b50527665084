"""Tests written from the mutation run of ``tasks/training.py`` (scripts/mutate.py training): the data order,
every option's one-line message and its boundary, the run's settings as its checkpoint records them, the
checkpoint schedule, ``meta["training"]`` and the held-out evaluation, ``row_kl`` against a float64 decode of
the model's own hidden states, and the memory budget's batch sizes."""

from __future__ import annotations

import copy
import hashlib
import json
import warnings

import pytest
import torch

from logitlens import LogitLensError
from logitlens.engine.tuned import TunedLens
from logitlens.tasks import distributed, training
from logitlens.tasks.checkpoints import CHECKPOINT
from logitlens.tasks.data import Corpus
from logitlens.tasks.training import Interrupted, batch_indices, row_kl, train_tuned_lens
from words import word_texts

SEQ, BATCH = 16, 32  # tokens per sequence, tokens per step: two sequences a step
FAST = dict(seq_len=SEQ, batch_tokens=BATCH, progress=False)


def texts(n: int, words: int = 30, seed: int = 0) -> list[str]:
    return word_texts(n, words, seed)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(texts(24), name="words")


def _translators(lens, seed: int = 0) -> TunedLens:
    """A tuned lens with random (small) translators: decodes that differ from the logit lens."""
    tuned = TunedLens.for_model(lens)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tuned.weight.copy_(torch.randn(tuned.weight.shape, generator=g) * 0.05)
        tuned.bias.copy_(torch.randn(tuned.bias.shape, generator=g) * 0.5)
    return tuned


def _reference_kl(lens, ids: torch.Tensor, tuned: TunedLens | None = None) -> torch.Tensor:
    """(N, T, L) KL(p_final || p_row) in float64 from the model's own hidden states, norm and head (float64
    copies: the shared model is left as it is)."""
    model = lens.model
    norm = copy.deepcopy(model.model.norm).double()
    head = copy.deepcopy(model.get_output_embeddings()).double()
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        final = torch.log_softmax(out.logits.double(), -1)  # (N, T, V)
        kls = []
        for j in range(lens.n_layers):
            h = out.hidden_states[j].double()
            if tuned is not None:
                h = h + h @ tuned.weight[j].double().T + tuned.bias[j].double()
            logq = torch.log_softmax(head(norm(h)), -1)
            kls.append((final.exp() * (final - logq)).sum(-1))
    return torch.stack(kls, -1)


# ---- Ctrl-C and the data order ------------------------------------------------------------------------
def test_interrupted_names_the_last_checkpoint(tmp_path):
    exc = Interrupted(tmp_path, 30)
    assert isinstance(exc, KeyboardInterrupt)
    assert str(exc) == "interrupted; last checkpoint: step 30" and exc.out == tmp_path and exc.step == 30
    assert str(Interrupted(tmp_path, None)) == "interrupted; last checkpoint: step None"


def _order(n: int, seed: int, epoch: int) -> list[int]:
    """The documented order of an epoch: torch.randperm seeded with the top 63 bits (little-endian) of
    blake2b-64 of "seed:epoch"."""
    key = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return torch.randperm(
        n, generator=torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
    ).tolist()


def test_data_order_is_the_documented_stream_of_seeded_epochs():
    """A checkpoint records only the next position of the stream: the order itself must never change
    between versions, or a resumed run would read other sequences. Steps that straddle epochs included."""
    n, per, seed = 7, 3, 42
    stream = [i for e in range(4) for i in _order(n, seed, e)]
    for step in range(9):
        assert batch_indices(n, step, per, seed) == stream[step * per : (step + 1) * per], step
    assert batch_indices(5, 0, 5, 1) == _order(5, 1, 0)  # one whole epoch per step


# ---- options: messages and boundaries -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps (--steps) must be an integer of at least 1, got 0"),
        ({"steps": True}, "steps (--steps) must be an integer of at least 1, got True"),
        ({"steps": 2.0}, "steps (--steps) must be an integer of at least 1, got 2.0"),
        ({"seq_len": 1}, "seq_len (--seq-len) must be an integer of at least 2, got 1"),
        ({"seq_len": "16"}, "seq_len (--seq-len) must be an integer of at least 2, got '16'"),
        ({"batch_tokens": 0}, "batch_tokens (--batch-tokens) must be an integer of at least 1, got 0"),
        (
            {"checkpoint_every": 0},
            "checkpoint_every (--checkpoint-every) must be an integer of at least 1, got 0",
        ),
        ({"warmup_steps": -1}, "warmup_steps (--warmup-steps) must be an integer of at least 0, got -1"),
        ({"eval_tokens": -1}, "eval_tokens (--eval-tokens) must be an integer of at least 0, got -1"),
        ({"lr": 0.0}, "lr must be a positive number, got 0.0"),
        ({"lr": True}, "lr must be a positive number, got True"),
        ({"lr": "1"}, "lr must be a positive number, got '1'"),
        ({"weight_decay": -0.5}, "weight_decay must be a number >= 0, got -0.5"),
        ({"momentum": 0}, "momentum must be a number between 0 and 1 (Nesterov needs one > 0), got 0"),
        ({"momentum": 1}, "momentum must be a number between 0 and 1 (Nesterov needs one > 0), got 1"),
        ({"clip": 0}, "clip must be a positive number, got 0"),
        ({"clip": None}, "clip must be a positive number, got None"),
        ({"dtype": "float16"}, "unknown training dtype 'float16'; choose float32 or bfloat16"),
        ({"dtype": torch.float16}, "unknown training dtype torch.float16; choose float32 or bfloat16"),
        ({"dtype": ["bf16"]}, "unknown training dtype ['bf16']; choose float32 or bfloat16"),
    ],
)
def test_a_bad_option_gets_its_one_line_message(lens, corpus, tmp_path, kwargs, message):
    with pytest.raises(LogitLensError) as info:
        train_tuned_lens(lens, corpus, out=tmp_path / "lens", **{**FAST, **kwargs})
    assert str(info.value) == message
    assert not (tmp_path / "lens").exists()


def test_the_smallest_allowed_values_pass_the_checks(lens, corpus, tmp_path):
    """Each option at its lowest allowed value is accepted: the run goes on to the batch check, which then
    refuses one token per step for sequences of 2."""
    low = dict(steps=1, seq_len=2, batch_tokens=1, checkpoint_every=1, warmup_steps=0, eval_tokens=0,
               lr=1e-9, weight_decay=0, momentum=1e-9, clip=1e-9, progress=False)  # fmt: skip
    for dtype in ("float32", "fp32", "bfloat16", "bf16", torch.float32, torch.bfloat16, None):
        with pytest.raises(LogitLensError) as info:
            train_tuned_lens(lens, corpus, out=tmp_path / "lens", dtype=dtype, **low)
        assert str(info.value) == (
            "batch_tokens (--batch-tokens) 1 is less than one sequence of 2 tokens; raise --batch-tokens or "
            "lower --seq-len"
        )


def test_seq_len_defaults_to_the_context_and_may_equal_it(lens, corpus, tmp_path):
    ctx = lens.context_length
    assert ctx == 64  # the tiny Llama of conftest.py
    for seq_len in (None, 64):  # the default is the context; the context itself is allowed
        with pytest.raises(LogitLensError) as info:
            train_tuned_lens(
                lens, corpus, out=tmp_path / "a", seq_len=seq_len, batch_tokens=63, progress=False
            )
        assert str(info.value) == (
            "batch_tokens (--batch-tokens) 63 is less than one sequence of 64 tokens; raise --batch-tokens or "
            "lower --seq-len"
        )
    with pytest.raises(LogitLensError) as info:
        train_tuned_lens(lens, corpus, out=tmp_path / "a", seq_len=65, batch_tokens=65, progress=False)
    assert str(info.value) == (
        "seq_len (--seq-len) 65 is longer than the context of tiny-llama (64 tokens); choose at most 64"
    )


def test_seq_len_defaults_to_2048_for_a_model_that_states_no_context(lens, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(type(lens), "context_length", property(lambda self: None))
    with pytest.raises(LogitLensError) as info:
        train_tuned_lens(lens, corpus, out=tmp_path / "a", batch_tokens=2047, progress=False)
    assert "2047 is less than one sequence of 2048 tokens" in str(info.value)


def test_a_step_that_ranks_cannot_share_evenly_is_refused(lens, corpus, tmp_path, monkeypatch):
    """Two ranks and three sequences a step: refused before any collective (so one process can check it)."""
    import contextlib

    @contextlib.contextmanager
    def two_ranks(what):
        yield distributed.Group(rank=0, world_size=2)

    monkeypatch.setattr(distributed, "together", two_ranks)
    with pytest.raises(LogitLensError) as info:
        train_tuned_lens(lens, corpus, out=tmp_path / "a", seq_len=SEQ, batch_tokens=3 * SEQ, progress=False)
    assert str(info.value) == (
        "a step of 3 sequences (--batch-tokens 48 / --seq-len 16) cannot be shared evenly by 2 ranks: make "
        "--batch-tokens a multiple of 32, or use a number of ranks that divides 3"
    )


def test_on_two_ranks_the_waits_are_named_and_ddp_wraps_the_translators(lens, corpus, tmp_path, monkeypatch):
    """What each rank checks and waits for before the first step, as rank 0 of two sees it (the
    collectives recorded, not run): the training data's hash agreed on, the wait before --out is cleared,
    and the translators wrapped in DistributedDataParallel with no device ids on the CPU."""
    import contextlib

    import torch.nn.parallel

    calls = []

    @contextlib.contextmanager
    def two_ranks(what):
        calls.append(("together", what))
        yield distributed.Group(rank=0, world_size=2)

    class Stop(Exception):
        pass

    def ddp(module, device_ids):
        calls.append(("ddp", type(module).__name__, device_ids))
        raise Stop

    monkeypatch.setattr(distributed, "together", two_ranks)
    monkeypatch.setattr(distributed, "agree", lambda *a: calls.append(("agree", *a)))
    monkeypatch.setattr(distributed, "barrier", lambda what: calls.append(("barrier", what)))
    monkeypatch.setattr(
        distributed, "run_collective", lambda what, fn: (calls.append(("collective", what)), fn())
    )
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", ddp)
    with pytest.raises(Stop):
        train_tuned_lens(lens, corpus, out=tmp_path / "a", **FAST)
    train_ids = corpus.split("train", seed=0).sequences(lens.tokenizer, SEQ)
    digest = hashlib.blake2b(train_ids.numpy().astype("<i8").tobytes(), digest_size=16).hexdigest()
    fix = "give every rank the same files (a path every node sees), --split-seed and --seq-len"
    assert calls == [
        ("together", "training"),
        ("agree", "the training data", digest, fix),
        ("barrier", "checking --out"),
        ("collective", "wrapping the translators in DDP"),
        ("ddp", "Translators", None),
    ]


def test_a_single_process_names_its_waits_too(lens, corpus, tmp_path, monkeypatch):
    """The same calls in one process (where they return at once), and the wait before the lens is saved;
    by default a progress bar is shown."""
    waits = []
    barrier = distributed.barrier
    monkeypatch.setattr(distributed, "barrier", lambda what: (waits.append(what), barrier(what)))
    seen = _watched(monkeypatch)
    train_tuned_lens(
        lens, corpus, out=tmp_path / "a", steps=1, eval_tokens=0, seq_len=SEQ, batch_tokens=BATCH
    )
    assert waits == ["checking --out", "saving the lens"]
    assert seen["bars"] == [(1, "steps", True, "train", 0)]


@pytest.mark.parametrize("data", [42, [], ["a.txt", 3], None])
def test_data_of_another_kind_is_refused(lens, tmp_path, data):
    with pytest.raises(LogitLensError) as info:
        train_tuned_lens(lens, data, out=tmp_path / "a", **FAST)
    assert str(info.value) == (
        "data must be a corpus source ('sample' or a path), a list of them, or a logitlens.Corpus, got "
        f"{type(data).__name__}"
    )


def test_a_corpus_too_small_for_one_step(lens, tmp_path):
    small = Corpus.from_texts(texts(30, words=60), name="small")
    n = small.split("train", seed=0).sequences(lens.tokenizer, 8).shape[0]
    assert n * 8 >= 1000  # the token count is printed with a thousands separator
    with pytest.raises(LogitLensError) as info:
        train_tuned_lens(lens, small, out=tmp_path / "a", seq_len=8, batch_tokens=8 * (n + 1), progress=False)
    assert str(info.value) == (
        f"the corpus is too small for one step: the train split of 'small' packs into {n} sequences of 8 "
        f"tokens ({n * 8:,} tokens), one step needs {n + 1} (--batch-tokens {8 * (n + 1)}); lower "
        "--batch-tokens or --seq-len, or add text"
    )


def test_a_step_may_take_every_sequence_of_an_already_split_corpus(lens, tmp_path):
    """A split Corpus is trained on as it is (no held-out evaluation); one step may read all of it."""
    train = Corpus.from_texts(texts(4, words=12), name="four").split("train", seed=0)
    n = train.sequences(lens.tokenizer, SEQ).shape[0]
    assert n == 3
    tuned = train_tuned_lens(lens, train, out=tmp_path / "a", steps=1, seq_len=SEQ, batch_tokens=n * SEQ,
                             eval_tokens=SEQ, progress=False)  # fmt: skip
    facts = tuned.meta["training"]
    assert facts["split"] == "train" and facts["data"] == "four" and facts["sequences"] == n
    assert facts["sequences_per_step"] == n and "held_out" not in facts


def test_data_as_paths_lines_and_a_field(lens, tmp_path):
    """Paths (str or Path, alone or in a list) are read with ``lines`` and ``field``."""
    a, b, j = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.jsonl"
    a.write_text("\n".join(texts(12, words=12, seed=1)))
    b.write_text("\n".join(texts(12, words=12, seed=2)))
    j.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts(12, words=12, seed=3)))
    kw = dict(steps=1, eval_tokens=0, **FAST)

    def n_train(corpus):
        return corpus.split("train", seed=0).sequences(lens.tokenizer, SEQ).shape[0]

    facts = train_tuned_lens(lens, [str(a), b], out=tmp_path / "1", lines=True, **kw).meta["training"]
    with pytest.raises(
        LogitLensError, match=r"the train split of '.*a\.txt' is empty: the corpus has 1 document"
    ):
        train_tuned_lens(lens, a, out=tmp_path / "0", **kw)  # a text file is one document unless lines=True
    assert facts["data"] == f"{a} + {b}"
    assert facts["sequences"] == n_train(Corpus.read([a, b], lines=True)) != n_train(Corpus.read([a, b]))
    one = {**kw, "batch_tokens": SEQ + 5}  # one sequence a step: batch_tokens rounds down to it
    facts = train_tuned_lens(lens, j, out=tmp_path / "2", field="body", **one).meta["training"]
    assert facts["data"] == str(j) and facts["sequences"] == n_train(Corpus.read(j, field="body"))
    assert facts["sequences_per_step"] == 1 and facts["batch_tokens"] == SEQ
    with pytest.raises(LogitLensError, match="has no field 'text'"):
        train_tuned_lens(lens, str(j), out=tmp_path / "3", **kw)


# ---- one run, watched closely --------------------------------------------------------------------------
TICK = 7 / 64


class _Clock:
    """time.perf_counter for the trainer: 7/64 s per call (exact in binary), from 100 s."""

    def __init__(self):
        self.t = 100.0 - TICK

    def perf_counter(self) -> float:
        self.t += TICK
        return self.t


def _watched(monkeypatch):
    """Record the progress bar's arguments and statuses, and every checkpoint saved (read back at once)."""
    import contextlib

    seen = {"bars": [], "status": [], "saved": []}

    @contextlib.contextmanager
    def bar(total, unit, *, enabled=True, description="", completed=0):
        seen["bars"].append((total, unit, enabled, description, completed))
        yield lambda n, status=None: seen["status"].append((n, status))

    save = training.save_checkpoint

    def saving(out, step, *args):
        save(out, step, *args)
        seen["saved"].append(torch.load(out / CHECKPOINT, weights_only=True))

    monkeypatch.setattr(training, "progress_bar", bar)
    monkeypatch.setattr(training, "save_checkpoint", saving)
    monkeypatch.setattr(training, "time", _Clock())
    return seen


RECIPE = dict(lr=0.5, momentum=0.8, weight_decay=0.01, warmup_steps=1, clip=2.0, seed=7, split_seed=3)


def test_a_run_records_its_settings_checkpoints_progress_and_facts(lens, corpus, tmp_path, monkeypatch):
    """Five steps of three sequences, a checkpoint every two steps, micro-batches of two sequences and
    decode chunks of six tokens (a small memory budget): the trajectory of one whole-step decode, the
    settings and optimiser state in each checkpoint, the progress bar's statuses (a fixed clock), the
    callback, and ``meta["training"]`` with the held-out evaluation of both lenses."""
    kw = dict(steps=5, seq_len=SEQ, batch_tokens=3 * SEQ, checkpoint_every=2, eval_tokens=40, **RECIPE)
    whole = train_tuned_lens(lens, corpus, out=tmp_path / "whole", progress=False, **kw)
    per_seq = SEQ * (lens.n_layers * 64 + 400 * 2) * 4  # captured rows + final log-probabilities, fp32
    monkeypatch.setattr(lens, "budget_bytes", 2 * per_seq)
    assert training._token_chunk(lens.decoder, lens.n_layers, lens.budget_bytes) == 6
    seen = _watched(monkeypatch)
    calls = []
    out = tmp_path / "lens"
    tuned = train_tuned_lens(lens, corpus, out=out, progress=True, callback=lambda *a: calls.append(a), **kw)
    facts = tuned.meta["training"]
    losses = [loss for _, loss in calls]

    # the same run whatever the batch cut
    torch.testing.assert_close(tuned.weight, whole.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tuned.bias, whole.bias, rtol=1e-5, atol=1e-6)
    assert losses == pytest.approx(whole.meta["training"]["losses"], abs=1e-6)  # those are rounded to 1e-6
    assert [s for s, _ in calls] == [1, 2, 3, 4, 5]

    # checkpoints after steps 2 and 4 (none after the last: the lens itself is saved), then removed
    assert [c["step"] for c in seen["saved"]] == [2, 4] and not (out / CHECKPOINT).exists()
    assert [c["next_sequence"] for c in seen["saved"]] == [6, 12]
    assert [c["losses"] for c in seen["saved"]] == [losses[:2], losses[:4]]
    assert [c["seconds"] for c in seen["saved"]] == [2 * TICK, 4 * TICK]
    train_ids = corpus.split("train", seed=3).sequences(lens.tokenizer, SEQ)
    settings = {
        "model": "tiny-llama", "unembed_hash": TunedLens.for_model(lens).meta["unembed_hash"], "data": "words",
        "data_hash": hashlib.blake2b(train_ids.numpy().astype("<i8").tobytes(), digest_size=16).hexdigest(),
        "sequences": train_ids.shape[0], "split_seed": 3, "steps": 5, "seq_len": SEQ, "batch_tokens": 3 * SEQ,
        "lr": 0.5, "momentum": 0.8, "weight_decay": 0.01, "warmup_steps": 1, "clip": 2.0, "seed": 7,
        "dtype": "float32",
    }  # fmt: skip
    assert settings["unembed_hash"] and seen["saved"][0]["settings"] == settings
    group = seen["saved"][0]["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == pytest.approx(0.5 * (1 - 0.8), rel=1e-12)
    assert group["lr"] == pytest.approx(0.1 * (5 - 2) / 4, rel=1e-12)  # warm-up 1, then linear decay
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.8, True, 0.01)
    assert len(group["params"]) == 2

    # the progress bar: its arguments, and the status after each step (48 tokens per 7/64 s)
    assert seen["bars"] == [(5, "steps", True, "train", 0)]
    assert seen["status"] == [(1, f"loss {loss:.4f} nats · 439 tokens/s") for loss in losses]

    val = corpus.split("validation", seed=3).sequences(lens.tokenizer, SEQ, max_sequences=3)
    assert val.shape[0] == 3  # 40 tokens: three sequences of 16, not two (the validation split has 5)
    held = {
        "data": "words [validation]", "tokens": 3 * (SEQ - 1), "rows": lens.row_names[: lens.n_layers],
        "kl_logit": [round(float(x), 6) for x in row_kl(lens, val, next_token_only=True)],
        "kl_tuned": [round(float(x), 6) for x in row_kl(lens, val, tuned, next_token_only=True)],
    }  # fmt: skip
    want = {
        **{k: v for k, v in settings.items() if k not in ("model", "unembed_hash", "data_hash")},
        "split": "train", "sequences_per_step": 3, "ranks": 1, "sequences_per_rank": 3, "micro_batch": 2,
        "grad_accumulation": 2, "tokens_seen": 5 * 3 * SEQ, "optimizer": "SGD, Nesterov momentum 0.8",
        "final_loss": losses[-1], "losses": [round(x, 6) for x in losses], "seconds": 0.55,
        "tokens_per_s": 438.86, "device": "cpu",
        "recipe": "Belrose et al. 2023; defaults of the tuned-lens package (scripts/train_loop.py)",
        "held_out": held,
    }  # fmt: skip
    assert facts == want
    ints = ("sequences", "seq_len", "batch_tokens", "sequences_per_step", "sequences_per_rank", "micro_batch")
    assert all(type(facts[k]) is int for k in (*ints, "grad_accumulation", "tokens_seen", "ranks"))
    assert json.loads((out / "config.json").read_text())["training"] == want


def test_interrupted_runs_name_their_last_checkpoint_and_resume_from_it(lens, corpus, tmp_path, monkeypatch):
    """Six steps, a checkpoint every three: Ctrl-C before any checkpoint names none; at step 5 (after the
    checkpoint of step 3) names step 3; a resumed run starts its bar at 3 and, cut at step 4, still names
    step 3; the last step writes no checkpoint."""
    kw = dict(steps=6, checkpoint_every=3, eval_tokens=0, seq_len=SEQ, batch_tokens=BATCH)
    seen = _watched(monkeypatch)

    def stop_at(n):
        def callback(step, loss):
            if step == n:
                raise KeyboardInterrupt

        return callback

    with pytest.raises(Interrupted) as info:
        train_tuned_lens(lens, corpus, out=tmp_path / "a", callback=stop_at(1), progress=False, **kw)
    assert info.value.step is None and info.value.out == tmp_path / "a"
    with pytest.raises(Interrupted) as info:
        train_tuned_lens(lens, corpus, out=tmp_path / "b", callback=stop_at(5), progress=False, **kw)
    assert info.value.step == 3 and info.value.out == tmp_path / "b"
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["step"] == 3
    with pytest.raises(Interrupted) as info:
        train_tuned_lens(
            lens, corpus, out=tmp_path / "b", resume=True, callback=stop_at(4), progress=True, **kw
        )
    assert info.value.step == 3
    resumed = train_tuned_lens(lens, corpus, out=tmp_path / "b", resume=True, progress=True, **kw)
    assert [c["step"] for c in seen["saved"]] == [3]
    assert seen["bars"] == [(6, "steps", False, "train", 0)] * 2 + [(6, "steps", True, "train", 3)] * 2
    facts = resumed.meta["training"]
    assert len(facts["losses"]) == 6 and "held_out" not in facts
    assert facts["tokens_per_s"] == round(3 * BATCH / (3 * TICK), 2) and facts["seconds"] == round(
        6 * TICK, 2
    )


def test_overwrite_clears_the_folder_before_the_first_step(lens, corpus, tmp_path):
    """A finished lens and a checkpoint (and no params.pt: a file to clear may be missing) are gone before
    the first step; without --overwrite a run removes nothing that is not its own."""
    out = tmp_path / "lens"
    TunedLens.for_model(lens).save(out)
    (out / CHECKPOINT).write_bytes(b"old")
    assert not (out / "params.pt").exists()

    def stop(step, loss):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        train_tuned_lens(lens, corpus, out=out, overwrite=True, steps=3, eval_tokens=0, callback=stop, **FAST)
    assert info.value.step is None and sorted(p.name for p in out.iterdir()) == []
    other = tmp_path / "other"
    other.mkdir()
    (other / "params.pt").write_bytes(b"not ours")
    train_tuned_lens(lens, corpus, out=other, steps=1, eval_tokens=0, **FAST)
    assert sorted(p.name for p in other.iterdir()) == ["config.json", "params.pt", "translators.safetensors"]


# ---- the held-out evaluation -----------------------------------------------------------------------------
def test_bfloat16_trains_and_evaluates_under_autocast(lens, corpus, tmp_path):
    """dtype="bf16": the first step's loss is the bf16-autocast decode of its sequences (not the fp32 one),
    and the held-out KL of both lenses is evaluated in bf16 too."""
    seen = []
    tuned = train_tuned_lens(lens, corpus, out=tmp_path / "a", steps=1, eval_tokens=SEQ, dtype="bf16",
                             callback=lambda s, loss: seen.append(loss), **FAST)  # fmt: skip
    facts = tuned.meta["training"]
    assert facts["dtype"] == "bfloat16"
    ids = corpus.split("train", seed=0).sequences(lens.tokenizer, SEQ)
    batch = ids[batch_indices(ids.shape[0], 0, BATCH // SEQ, seed=42)]
    bf16_loss = float(row_kl(lens, batch, dtype="bfloat16").mean())
    assert seen[0] == pytest.approx(bf16_loss, rel=1e-12)
    assert seen[0] != pytest.approx(float(row_kl(lens, batch).mean()), rel=1e-7)
    val = corpus.split("validation", seed=0).sequences(lens.tokenizer, SEQ, max_sequences=1)
    for name, lens_ in (("kl_logit", None), ("kl_tuned", tuned)):
        bf16 = [round(float(x), 6) for x in row_kl(lens, val, lens_, next_token_only=True, dtype="bfloat16")]
        fp32 = [round(float(x), 6) for x in row_kl(lens, val, lens_, next_token_only=True)]
        assert facts["held_out"][name] == bf16 != fp32
    assert facts["held_out"]["tokens"] == SEQ - 1


def test_a_validation_split_too_short_warns_at_the_callers_line(lens, tmp_path):
    short = Corpus.from_texts(texts(8, words=12), name="short")  # validation: 14 tokens
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = train_tuned_lens(lens, short, out=tmp_path / "a", steps=1, eval_tokens=SEQ, **FAST)
    [w] = [w for w in caught if "held-out" in str(w.message)]
    assert str(w.message) == (
        "no held-out evaluation: the corpus is shorter than one sequence: the validation split of 'short' has "
        "14 tokens in 1 document(s), a sequence needs 16; lower --seq-len, add text, or use --split all"
    )
    # at the caller's line (stacklevel=3: here), not in logitlens, nor deeper in pytest
    assert not w.filename.endswith("training.py") and "_pytest" not in w.filename
    assert tuned.meta["training"]["held_out"] is None


# ---- row_kl and the memory budget ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ids(lens, corpus) -> torch.Tensor:
    return corpus.sequences(lens.tokenizer, 12, max_sequences=3)  # (3, 12)


def test_row_kl_equals_a_float64_decode_of_the_hidden_states(lens, ids):
    tuned = _translators(lens)
    for lens_ in (None, tuned):
        ref = _reference_kl(lens, ids, lens_)  # (N, T, L)
        torch.testing.assert_close(row_kl(lens, ids, lens_), ref.mean(dim=(0, 1)), rtol=1e-4, atol=1e-6)
        got = row_kl(lens, ids, lens_, next_token_only=True)
        torch.testing.assert_close(got, ref[:, :-1].mean(dim=(0, 1)), rtol=1e-4, atol=1e-6)
        # one token per micro-batch and per decode chunk: the same numbers
        tiny = row_kl(lens, ids, lens_, budget_bytes=1)
        torch.testing.assert_close(tiny, ref.mean(dim=(0, 1)), rtol=1e-4, atol=1e-6)
        assert row_kl(lens, ids, lens_).dtype == torch.float64
    one = ids[:1, :1]  # a single token: its own KL, not half of it
    torch.testing.assert_close(row_kl(lens, one), _reference_kl(lens, one)[0, 0], rtol=1e-4, atol=1e-6)
    assert torch.equal(
        row_kl(lens, one, next_token_only=True), torch.zeros(lens.n_layers, dtype=torch.float64)
    )


def test_row_kl_on_a_family_that_reads_left_padding_from_the_ids():
    """CPM-Ant prepends prompt tokens and reads its padding from the attention mask and the ids: the
    trainer's capture hands it the all-ones mask of packed sequences, and the KL matches the lens's own."""
    from logitlens import LogitLens
    from tiny_models import build

    cpm = LogitLens(build("cpmant"), None)
    ids = torch.randint(5, 60, (2, 8), generator=torch.Generator().manual_seed(0))  # no pad id 0
    want = cpm.run(ids, top_k=1).kl_to_final[:, : cpm.n_layers].double().mean(dim=(0, 2))
    torch.testing.assert_close(row_kl(cpm, ids), want, rtol=1e-4, atol=1e-7)


def test_row_kl_dtypes(lens, ids):
    fp32 = row_kl(lens, ids)
    for same in ("fp32", torch.float32, None):
        assert torch.equal(row_kl(lens, ids, dtype=same), fp32)
    bf16 = row_kl(lens, ids, dtype="bfloat16")
    for same in ("bf16", torch.bfloat16):
        assert torch.equal(row_kl(lens, ids, dtype=same), bf16)
    assert not torch.equal(bf16, fp32) and torch.allclose(bf16, fp32, rtol=0.1)


def test_budget_sizes_of_decode_chunks_and_micro_batches(lens):
    """Decode chunks: tokens whose (rows x vocab) fp32 logits, log-probabilities and two gradients fit;
    micro-batches: sequences whose captured rows and final log-probabilities (fp32) fit; at least one."""
    dec, n_rows, vocab, d = lens.decoder, lens.n_layers, 400, 64
    per_token = n_rows * vocab * 4 * 4
    for k in (1, 2, 7):
        assert training._token_chunk(dec, n_rows, k * per_token) == k
        assert training._token_chunk(dec, n_rows, (k + 1) * per_token - 1) == k
    assert training._token_chunk(dec, n_rows, per_token - 1) == 1 == training._token_chunk(dec, n_rows, 0)
    per_seq = 10 * (n_rows * d + vocab * 2) * 4
    for k in (1, 3):
        assert training._micro_batch(dec, 10, n_rows, k * per_seq) == k
        assert training._micro_batch(dec, 10, n_rows, (k + 1) * per_seq - 1) == k
    assert training._micro_batch(dec, 10, n_rows, 0) == 1


def test_schedule_with_a_warmup_of_all_but_one_step():
    factor = training._schedule(3, 2)
    assert [factor(s) for s in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.0], abs=1e-12)
    assert training._schedule(4, 4)(4) == 0.0


def test_the_first_steps_loss_is_the_float64_mean_of_its_rows(lens, tmp_path):
    """At the identity the first step's loss is the logit lens's KL on that step's sequences, summed per row
    in float64 (the same decode as ``row_kl``), to float64 precision. 2,048 tokens: per-row sums of a few
    dozen nats, where float32 sums would round (each token's KL is a multiple of 2^-21 nats here)."""
    big = Corpus.from_texts(texts(150, words=60), name="big")
    seen = []
    kw = dict(seq_len=64, batch_tokens=2048, progress=False)
    train_tuned_lens(lens, big, out=tmp_path / "a", steps=1, eval_tokens=0,
                     callback=lambda s, loss: seen.append(loss), **kw)  # fmt: skip
    ids = big.split("train", seed=0).sequences(lens.tokenizer, 64)
    batch = ids[batch_indices(ids.shape[0], 0, 32, seed=42)]
    assert seen[0] == pytest.approx(float(row_kl(lens, batch).mean()), rel=1e-13, abs=0)
