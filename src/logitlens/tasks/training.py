"""Training a tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned
Lens"): one affine translator per row, fitted so that each row's decoding matches the model's own output.

``train_tuned_lens(lens, data, out=DIR)`` takes a ``LogitLens`` and a corpus and returns a ``TunedLens``
(saved into ``DIR`` with ``TunedLens.save``: ``config.json`` + ``translators.safetensors``).

Objective: KL(p_final || p_row), averaged over the tokens of a step, for every row but the output row
(the embeddings and blocks 0 .. L-2: the L translators of ``TunedLens``), each position matched with its
own final distribution (the package's default ``token_shift`` 0 for KL). ``p_final`` is the output row
decoded as the model decodes it (its own logits, as the load-time self-check holds); ``p_row`` decodes ``h + W_j h + b_j`` through the model's final norm and
unembedding (``Decoder.logits_functional``: the model's own modules), every row of a chunk of tokens in ONE
product, then an fp32 log-softmax. The reported loss is the mean over rows; the gradient step uses the sum
over rows, as the tuned-lens package does (each translator gets the gradient of its own row's KL, not
1/L of it).

Recipe and defaults (sources: the paper, and the tuned-lens package, ``tuned_lens/scripts/train_loop.py``
and ``ingredients.py``; the values below are the package's unless marked "ours"):

- zero initialisation: every translator starts as the identity, i.e. the logit lens (package
  ``TunedLens.__init__``);
- SGD with Nesterov momentum 0.9 (``Optimizer.momentum``, ``nesterov=True``); ``lr`` 1.0
  (``Optimizer.lr_scale``): PyTorch's momentum scales the step by 1 / (1 - momentum), so the optimiser is
  given ``lr * (1 - momentum)`` = 0.1, as the package does;
- weight decay 1e-3 on every translator parameter (PyTorch SGD's L2 term; ``Optimizer.weight_decay``);
  the residual form ``h + W h + b`` makes it pull towards the identity, not towards zero;
- learning rate: linear warm-up over ``warmup_steps`` (0 by default: the package's default for SGD; it
  uses min(1000, steps // 5) for Adam), then linear decay to 0 at the last step (the package's
  ``get_linear_schedule_with_warmup``);
- gradient clipping at global norm 1.0 (``clip_grad_norm_(lens.parameters(), 1.0)``);
- 250 steps (``Train.num_steps``) of 2^18 tokens (``Train.tokens_per_step``) in sequences of 2048 tokens
  (``Data.max_length``; here at most the model's context); data order seed 42 (``Train.seed``);
- bf16 autocast for the model's forward pass and the decode when asked (``dtype="bfloat16"``; the
  package always autocasts on its GPU); master weights, the optimiser, log-softmax and KL stay fp32;
- ours: checkpoints every 10 steps; a held-out evaluation on 2,048 tokens of the validation split at the
  end (per-row KL of the logit lens and the trained lens, in the lens's config).

Data: the corpus (``logitlens.Corpus``) is split by whole documents with ``split_seed`` (0: the split
``logitlens eval`` reads by default, so its validation split is never trained on); the train split is packed
into sequences of ``seq_len`` tokens, and each step takes ``batch_tokens // seq_len`` of them. The
sequences of step ``s`` are a pure function of (seed, s): stream index k = s * per_step + b maps to
epoch k // n and to position k % n of that epoch's permutation (seeded by a hash of (seed, epoch)).

Checkpoints (``DIR/checkpoint.pt``, replaced atomically every ``checkpoint_every`` steps, read back with
``torch.load(weights_only=True)``): translators, optimiser and scheduler states, RNG states, step, the next
sequence of the stream, the losses so far and the settings that define the run. ``resume=True`` continues
from it (losing at most one interval) and, on the same device, follows exactly the trajectory of an
uninterrupted run; it refuses a checkpoint made with other settings, model or data. Once the lens is saved
the checkpoint is removed.

Example:
    >>> lens = LogitLens.from_pretrained("default")
    >>> tuned = train_tuned_lens(lens, "sample", out="lenses/smollm2", steps=40, seq_len=128,
    ...                          batch_tokens=1024)
    >>> lens.run("The Eiffel Tower is in", lens=tuned)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logitlens.errors import LogitLensError
from logitlens.tasks import distributed
from logitlens.tasks.checkpoints import CHECKPOINT, LENS_FILES, check_out, load_checkpoint, save_checkpoint
from logitlens.tasks.data import Corpus
from logitlens.tasks.progress import progress_bar

if TYPE_CHECKING:  # torch is imported where it is used: `logitlens --help` reads the defaults below
    import torch

    from logitlens.engine.tuned import TunedLens

__all__ = ["Interrupted", "check_out", "row_kl", "train_tuned_lens"]

# ---- the recipe's defaults (see the module docstring for where each comes from) -------------------------
STEPS = 250  # tuned-lens package: Train.num_steps
BATCH_TOKENS = 2**18  # package: Train.tokens_per_step
SEQ_LEN = 2048  # package: Data.max_length (capped at the model's context)
LR = 1.0  # paper / package: Optimizer.lr_scale for SGD; the optimiser gets LR * (1 - MOMENTUM)
MOMENTUM = 0.9  # package: Optimizer.momentum, with Nesterov
WEIGHT_DECAY = 1e-3  # package: Optimizer.weight_decay
WARMUP_STEPS = 0  # package: Optimizer.warmup_steps for SGD
CLIP = 1.0  # package: clip_grad_norm_(..., 1.0)
SEED = 42  # package: Train.seed
SPLIT_SEED = 0  # ours: the train/validation split `logitlens eval` uses by default
CHECKPOINT_EVERY = 10  # ours
EVAL_TOKENS = 2048  # ours: held-out tokens evaluated at the end (0: none)


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C during training; ``step`` is the step of the last checkpoint in ``out`` (None: none yet)."""

    def __init__(self, out: Path, step: int | None):
        super().__init__(f"interrupted; last checkpoint: step {step}")
        self.out = out
        self.step = step


# ---- data ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of the n training sequences in ``epoch``: a pure function of (n, seed, epoch)."""
    import torch

    key = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    g = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)  # 63 bits
    return tuple(torch.randperm(n, generator=g).tolist())


def batch_indices(n: int, step: int, per_step: int, seed: int) -> list[int]:
    """Which of the n training sequences step ``step`` reads (``per_step`` of them, epochs one after the
    other, each in its own order)."""
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(k, n)
        out.append(_permutation(n, seed, epoch)[i])
    return out


def _corpus(data, lines: bool, field: str) -> Corpus:
    if isinstance(data, Corpus):
        return data
    if isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and data and all(isinstance(d, str | os.PathLike) for d in data)
    ):
        return Corpus.read(data, lines=lines, field=field)
    raise LogitLensError(
        "data must be a corpus source ('sample' or a path), a list of them, or a logitlens.Corpus, "
        f"got {type(data).__name__}"
    )


def _data_hash(ids: torch.Tensor) -> str:
    return hashlib.blake2b(ids.numpy().astype("<i8").tobytes(), digest_size=16).hexdigest()


# ---- capture and decode ---------------------------------------------------------------------------------
def _capture(lens, input_ids: torch.Tensor, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of the frozen model under inference mode, read by the lens's own backend: the rows
    with translators (the embeddings and blocks 0 .. L-2) and the output row's log-probabilities, cloned
    into normal tensors.

    input_ids: (B, T) -> rows (B*T, L, d) on the unembedding's device, final log-probabilities (B*T, V) fp32
    (the output row decoded as the model decodes it: equal to its own logits, which the self-check holds).
    """
    import torch

    from logitlens.core.rows import default_rows

    decoder = lens.decoder
    n_translators = decoder.n_layers  # rows 0 .. L-1 of a run; row L (the output) has none
    b, t = input_ids.shape
    dev = lens.input_device
    gather = torch.arange(t).expand(b, t)
    with torch.inference_mode(), autocast():
        captured = lens.backend.capture(
            input_ids.to(dev), torch.ones_like(input_ids).to(dev), gather.to(dev), default_rows(n_translators)
        ).to(decoder.device)  # (B, L + 1, T, d)
        rows = captured[:, :n_translators].transpose(1, 2).flatten(0, 1)  # (B*T, L, d)
        final = torch.log_softmax(decoder.logits(captured[:, -1].flatten(0, 1)).float(), -1)  # (B*T, V)
    return rows.clone(), final.clone()  # normal tensors: autograd may save them


def _row_kl(
    decoder, x: torch.Tensor, final: torch.Tensor, autocast, *, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KL(p_final || p_row) for m tokens x L rows: x (m, L, d) the (translated) rows, final (m, V) the
    model's log-probabilities -> (KL (m, L), gradient or None).

    ONE decode of all m * L vectors (the model's final norm and unembedding, the model's own modules), then
    log-softmax in fp32; the sums over the vocabulary are torch's (cascade) sums, not fp32 dot products.
    With ``scale``: also the gradient of ``scale * KL.sum()`` with respect to x (which must require grad),
    back-propagated through the decode from dKL/dlogits = softmax(logits) - p_final, computed in place.
    """
    import torch

    m, n_rows, d = x.shape
    with autocast():
        logits = decoder.logits_functional(x.reshape(m * n_rows, d))  # (m*L, V) fp32: one product
    with torch.no_grad():
        logq = torch.log_softmax(logits.detach().float(), -1).view(m, n_rows, -1)  # (m, L, V)
        p = final.exp()  # (m, V)
        neg_entropy = (p * final).sum(-1, keepdim=True)  # (m, 1) <p_f, log p_f>
        kl = neg_entropy - (logq * p.unsqueeze(1)).sum(-1)  # (m, L)
        if scale is None:
            return kl, None
        grad_logits = logq.exp_().sub_(p.unsqueeze(1)).mul_(scale)  # (m, L, V) over logq's memory
    (grad,) = torch.autograd.grad(logits, x, grad_logits.view(m * n_rows, -1).to(logits.dtype))
    return kl, grad


def _translate(tuned: TunedLens | None, h: torch.Tensor) -> torch.Tensor:
    """Rows (n, L, d) through ``tuned``'s translators, all in one batched product (None: the identity)."""
    import torch

    return h if tuned is None else tuned.translate(torch.arange(h.shape[1], device=h.device), h)


def _token_chunk(decoder, n_rows: int, budget_bytes: int) -> int:
    """Tokens decoded (and back-propagated) together: their fp32 (rows x vocab) intermediates fit the
    budget (logits, log-probabilities, and two gradients of that size in the backward pass)."""
    per_token = n_rows * decoder.vocab_size * 4 * 4
    return max(1, budget_bytes // per_token)


def _micro_batch(decoder, seq_len: int, n_rows: int, budget_bytes: int) -> int:
    """Sequences per forward pass: the captured rows and final log-probabilities fit the budget."""
    d = decoder.weight.shape[1]
    per_seq = seq_len * (n_rows * d + decoder.vocab_size * 2) * 4
    return max(1, budget_bytes // per_seq)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    import torch

    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def _compute_dtype(dtype) -> torch.dtype | None:
    """None (no autocast) for float32; torch.bfloat16 for bfloat16."""
    import torch

    names = {"float32": None, "fp32": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype in (torch.float32, None):
        return None
    if dtype == torch.bfloat16:
        return torch.bfloat16
    if isinstance(dtype, str) and dtype in names:
        return names[dtype]
    raise LogitLensError(f"unknown training dtype {dtype!r}; choose float32 or bfloat16")


def row_kl(
    lens,
    input_ids: torch.Tensor,
    tuned: TunedLens | None = None,
    *,
    next_token_only: bool = False,
    dtype: str | torch.dtype = "float32",
    budget_bytes: int | None = None,
) -> torch.Tensor:
    """Mean KL(p_final || p_row) per row with a translator (the embeddings and blocks 0 .. L-2): (L,) fp64.

    The decode the trainer uses, without gradients: ``tuned`` None is the logit lens. input_ids: (N, T)
    token ids; next_token_only: average only over positions that have a next token (as ``evaluate`` does).
    """
    import torch

    budget = int(budget_bytes or lens.budget_bytes)
    dev = lens.decoder.device
    autocast = _autocast(dev, _compute_dtype(dtype))
    n_rows = lens.n_layers
    seq_len = input_ids.shape[1]
    total = torch.zeros(n_rows, dtype=torch.float64)
    count = 0
    micro = _micro_batch(lens.decoder, seq_len, n_rows, budget)
    chunk = _token_chunk(lens.decoder, n_rows, budget)
    for batch in input_ids.split(micro):
        h, final = _capture(lens, batch, autocast)
        if next_token_only:  # drop each sequence's last position
            keep = torch.arange(h.shape[0]) % seq_len != seq_len - 1
            h, final = h[keep.to(h.device)], final[keep.to(final.device)]
        with torch.no_grad():
            x = _translate(tuned, h)  # (n, L, d)
            kls = [_row_kl(lens.decoder, x[s : s + chunk], final[s : s + chunk], autocast)[0]
                   for s in range(0, x.shape[0], chunk)]  # fmt: skip
            for kl in kls:  # to the host after the loop: one wait for the device, not one per chunk
                total += kl.double().sum(0).cpu()
        count += h.shape[0]
    return total / max(1, count)


# ---- training -----------------------------------------------------------------------------------------
def _schedule(steps: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor of step s: linear warm-up over ``warmup`` steps, then linear decay that
    reaches 0 after the last step (with no warm-up: 1 at step 0, 1/steps at the last)."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        return max(0.0, (steps - s) / max(1, steps - warmup))

    return factor


def _positive_int(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        flag = "--" + name.replace("_", "-")
        raise LogitLensError(f"{name} ({flag}) must be an integer of at least {low}, got {value!r}")


def _check_args(
    steps, seq_len, batch_tokens, lr, warmup_steps, weight_decay, momentum, clip, ckpt, eval_tokens
):
    _positive_int("steps", steps)
    if seq_len is not None:
        _positive_int("seq_len", seq_len, 2)
    _positive_int("batch_tokens", batch_tokens)
    _positive_int("checkpoint_every", ckpt)
    _positive_int("warmup_steps", warmup_steps, 0)
    _positive_int("eval_tokens", eval_tokens, 0)
    for name, value, ok, want in (
        ("lr", lr, lambda v: v > 0, "a positive number"),
        ("weight_decay", weight_decay, lambda v: v >= 0, "a number >= 0"),
        ("momentum", momentum, lambda v: 0 < v < 1, "a number between 0 and 1 (Nesterov needs one > 0)"),
        ("clip", clip, lambda v: v > 0, "a positive number"),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
            raise LogitLensError(f"{name} must be {want}, got {value!r}")


def train_tuned_lens(
    lens,
    data,
    *,
    out: str | os.PathLike,
    steps: int = STEPS,
    seq_len: int | None = None,
    batch_tokens: int = BATCH_TOKENS,
    lr: float = LR,
    seed: int = SEED,
    split_seed: int = SPLIT_SEED,
    warmup_steps: int = WARMUP_STEPS,
    weight_decay: float = WEIGHT_DECAY,
    momentum: float = MOMENTUM,
    clip: float = CLIP,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: int = CHECKPOINT_EVERY,
    eval_tokens: int = EVAL_TOKENS,
    dtype: str | torch.dtype = "float32",
    progress: bool = True,
    lines: bool = False,
    field: str = "text",
    callback: Callable[[int, float], None] | None = None,
) -> TunedLens:
    """Train a tuned lens for ``lens`` (a ``LogitLens``) on ``data`` and save it into ``out``.

    The model stays frozen; each translator starts as the identity (the logit lens) and SGD with Nesterov
    momentum minimises KL(final || row), averaged over every row but the output row (the recipe and its
    defaults are the tuned-lens package's: see the module docstring).

    Under ``torchrun`` (``WORLD_SIZE`` > 1, see ``logitlens.tasks.distributed``) the run is data-parallel:
    each step's sequences (the same global batch as one process) are shared out, rank r taking sequences
    r, r + W, ...; the translators are wrapped in ``DistributedDataParallel`` (gradients all-reduced once
    per step, after the last micro-batch); rank 0 shows progress, checkpoints and saves the lens; every
    rank returns it. The global batch (= micro-batch x ranks x gradient accumulation) is in
    ``meta["training"]``. A checkpoint resumes on any number of ranks that divides the step's sequences.

    Args:
        lens: the ``LogitLens`` of the model to train for.
        data: "sample", file paths (see ``logitlens.tasks.data``), or a ``Corpus`` (one not yet split is
            split with ``split_seed``: training reads the train split, the held-out evaluation the
            validation split; an already split Corpus is trained on as it is, with no held-out evaluation).
        out: the folder the lens (``config.json`` + ``translators.safetensors``) and its checkpoint go to.
        steps: optimiser steps.
        seq_len: tokens per packed sequence (default: 2048 or the model's context, if shorter).
        batch_tokens: tokens per step, rounded down to whole sequences.
        lr: the learning rate as the paper gives it (PyTorch gets lr x (1 - momentum)).
        seed: the data order.
        split_seed: the train/validation split (``logitlens eval`` reads the same split by default).
        warmup_steps: linear warm-up, then linear decay to 0 at the last step.
        weight_decay: on every translator parameter.
        momentum: Nesterov momentum.
        clip: the global gradient norm.
        resume: continue from ``out``'s checkpoint.
        overwrite: replace a lens or checkpoint in ``out``.
        checkpoint_every: steps between checkpoints.
        eval_tokens: held-out tokens for the per-row KL written into the lens's config (0: skip).
        dtype: "float32", or "bfloat16" (autocast of the forward pass and the decode; only where asked).
        progress: a bar on stderr (steps, loss, tokens/s).
        lines: each line of a text file is one document.
        field: the text field of JSON Lines / tables.
        callback: ``fn(step, loss)`` after each step (1-based step, the step's mean KL over rows).

    Returns:
        The trained ``TunedLens``: translators ``weight`` (L, d, d) and ``bias`` (L, d); its
        ``meta["training"]`` holds the run's facts (losses, tokens seen, held-out KL of both lenses).

    Raises:
        LogitLensError: a bad option, a corpus too small for one step, an ``out`` in the way.
        Interrupted: on Ctrl-C (resume with ``resume=True``).

    Example:
        >>> tuned = train_tuned_lens(lens, "sample", out=".lenses/smollm2-sample", steps=20, seq_len=128,
        ...                          batch_tokens=256, eval_tokens=512)
        >>> lens.run("The Eiffel Tower is in the city of", lens=tuned, targets=[" Paris"])
    """
    from logitlens.engine.tuned import TunedLens

    _check_args(
        steps, seq_len, batch_tokens, lr, warmup_steps, weight_decay, momentum, clip, checkpoint_every,
        eval_tokens,
    )  # fmt: skip
    out = Path(out)
    recipe = dict(lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay),
                  warmup_steps=warmup_steps, clip=float(clip), seed=seed)  # fmt: skip
    with distributed.together("training") as group:
        plan = _plan_run(lens, data, out, steps, seq_len, batch_tokens, split_seed, recipe, dtype,
                         resume, overwrite, lines, field, group)  # fmt: skip
        tuned = TunedLens.for_model(lens).to(lens.decoder.device)
        plan.settings["unembed_hash"] = tuned.meta.get("unembed_hash")
        run = _start_run(lens, tuned, plan, group)
        _loop(run, checkpoint_every, progress and group.is_main, callback)
        facts = _facts(run)
        if eval_tokens and plan.held_out is not None:
            facts["held_out"] = _held_out(lens, tuned, plan.held_out, plan.seq_len, eval_tokens, dtype)
        tuned.meta["training"] = facts
        if group.is_main:
            tuned.save(out)
            (out / CHECKPOINT).unlink(missing_ok=True)
        distributed.barrier("saving the lens")
    return tuned


@dataclass
class _Plan:
    """A run decided before its first step: data, batch sizes and the settings a checkpoint must match."""

    out: Path
    has_checkpoint: bool
    seq_len: int
    per_step: int  # sequences per step, over all ranks: the global batch
    train_ids: torch.Tensor  # (n, seq_len) the packed train split
    held_out: Corpus | None
    split_name: str
    compute: torch.dtype | None  # autocast dtype (None: fp32)
    settings: dict[str, Any]


def _plan_run(lens, data, out, steps, seq_len, batch_tokens, split_seed, recipe, dtype, resume, overwrite,
              lines, field, group) -> _Plan:  # fmt: skip
    """Check the options against the model and the data; read, split and pack the corpus (every rank the
    same, which is checked); decide the settings. On rank 0, ``overwrite`` clears ``out``."""
    has_checkpoint = check_out(out, resume=resume, overwrite=overwrite)
    compute = _compute_dtype(dtype)
    ctx = lens.context_length
    if seq_len is None:
        seq_len = min(SEQ_LEN, ctx) if ctx else SEQ_LEN
    if ctx is not None and seq_len > ctx:
        raise LogitLensError(
            f"seq_len (--seq-len) {seq_len} is longer than the context of {lens.name} ({ctx} tokens); "
            f"choose at most {ctx}"
        )
    per_step = batch_tokens // seq_len
    if per_step < 1:
        raise LogitLensError(
            f"batch_tokens (--batch-tokens) {batch_tokens} is less than one sequence of {seq_len} tokens; "
            "raise --batch-tokens or lower --seq-len"
        )
    if per_step % group.world_size:
        raise LogitLensError(
            f"a step of {per_step} sequences (--batch-tokens {batch_tokens} / --seq-len {seq_len}) cannot be "
            f"shared evenly by {group.world_size} ranks: make --batch-tokens a multiple of "
            f"{group.world_size * seq_len}, or use a number of ranks that divides {per_step}"
        )
    corpus = _corpus(data, lines, field)
    held_out: Corpus | None = None
    train = corpus
    if corpus.split_name == "all":
        train = corpus.split("train", seed=split_seed)
        with contextlib.suppress(LogitLensError):  # a corpus of one document has no validation split
            held_out = corpus.split("validation", seed=split_seed)
    train_ids = train.sequences(lens.tokenizer, seq_len)  # (n, T)
    n_seq = train_ids.shape[0]
    if n_seq < per_step:
        raise LogitLensError(
            f"the corpus is too small for one step: the train split of '{corpus.name}' packs into {n_seq} "
            f"sequences of {seq_len} tokens ({n_seq * seq_len:,} tokens), one step needs {per_step} "
            f"(--batch-tokens {batch_tokens}); lower --batch-tokens or --seq-len, or add text"
        )
    settings: dict[str, Any] = {
        "model": str(lens.name), "unembed_hash": None, "data": corpus.name,
        "data_hash": _data_hash(train_ids), "sequences": n_seq, "split_seed": split_seed, "steps": steps,
        "seq_len": seq_len, "batch_tokens": per_step * seq_len, **recipe,
        "dtype": "bfloat16" if compute is not None else "float32",
    }  # fmt: skip
    distributed.agree(
        "the training data",
        settings["data_hash"],
        "give every rank the same files (a path every node sees), --split-seed and --seq-len",
    )
    distributed.barrier("checking --out")  # every rank has looked at --out before rank 0 clears it
    if overwrite and not has_checkpoint and group.is_main:
        for name in (*LENS_FILES, CHECKPOINT):
            (out / name).unlink(missing_ok=True)
    return _Plan(out, has_checkpoint, seq_len, per_step, train_ids, held_out, train.split_name, compute,
                 settings)  # fmt: skip


@dataclass
class _Run:
    """A run in progress: the lens, its translators (behind DDP when distributed), the optimiser, where
    it stands, and how each step is cut (micro-batches, decode chunks)."""

    lens: Any
    tuned: TunedLens
    plan: _Plan
    group: distributed.Group
    module: Any  # the translators as a module: (n, L, d) -> (n, L, d); DDP-wrapped when distributed
    params: list
    opt: Any
    sched: Any
    autocast: Any
    micro: int  # sequences per forward pass on one rank
    chunk: int  # tokens decoded together
    start: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # before this call (a resumed run)
    elapsed: float = 0.0  # in this call
    tokens_here: int = 0  # tokens trained on in this call, all ranks
    last_saved: int | None = None


def _translators_module(tuned: TunedLens):
    """The translators as an ``nn.Module`` whose forward is ``TunedLens.translate`` on every row (what
    ``DistributedDataParallel`` wraps: its forward prepares the gradient all-reduce)."""
    import torch
    from torch import nn

    class Translators(nn.Module):
        def __init__(self, lens: TunedLens):
            super().__init__()
            self.lens = lens

        def forward(self, h: torch.Tensor) -> torch.Tensor:  # (n, L, d) -> (n, L, d)
            return self.lens.translate(torch.arange(h.shape[1], device=h.device), h)

    return Translators(tuned)


def _start_run(lens, tuned: TunedLens, plan: _Plan, group: distributed.Group) -> _Run:
    """The optimiser and schedule, the checkpoint's state if resuming, and DDP when distributed."""
    import torch

    s = plan.settings
    params = [p for p in (tuned.weight, tuned.bias) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=s["lr"] * (1 - s["momentum"]), momentum=s["momentum"], nesterov=True,
                          weight_decay=s["weight_decay"])  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(s["steps"], s["warmup_steps"]))
    run = _Run(
        lens, tuned, plan, group, _translators_module(tuned), params, opt, sched,
        _autocast(lens.decoder.device, plan.compute),
        _micro_batch(lens.decoder, plan.seq_len, lens.n_layers, lens.budget_bytes),
        _token_chunk(lens.decoder, lens.n_layers, lens.budget_bytes),
    )  # fmt: skip
    if plan.has_checkpoint:
        run.start, run.losses, run.seconds = load_checkpoint(plan.out, s, tuned, opt, sched)
        run.last_saved = run.start
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        dev = lens.decoder.device
        ids = [dev.index] if dev.type == "cuda" else None
        run.module = distributed.run_collective(
            "wrapping the translators in DDP", lambda: DistributedDataParallel(run.module, device_ids=ids)
        )
    return run


def _step(run: _Run, step: int) -> float:
    """One optimiser step: this rank's share of the step's sequences, micro-batch by micro-batch (the
    gradient all-reduce after the last), then clipping, the update and the schedule. Returns the step's
    loss (the mean over rows of each row's mean KL over the step's tokens, all ranks)."""
    import torch

    plan, lens, group = run.plan, run.lens, run.group
    n_seq = plan.train_ids.shape[0]
    ids = plan.train_ids[batch_indices(n_seq, step, plan.per_step, plan.settings["seed"])]  # (per_step, T)
    mine = ids[group.rank :: group.world_size] if group.distributed else ids
    step_tokens = plan.per_step * plan.seq_len
    scale = group.world_size / step_tokens  # DDP averages over ranks: the mean is the sum / step_tokens
    run.opt.zero_grad(set_to_none=True)
    per_row = torch.zeros(lens.n_layers, dtype=torch.float64)
    batches = mine.split(run.micro)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        sync = contextlib.nullcontext() if last or not group.distributed else run.module.no_sync()
        with sync:
            per_row += _micro_step(run, batch, scale)
    if group.distributed:
        per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}'s loss"))
    torch.nn.utils.clip_grad_norm_(run.params, plan.settings["clip"])
    run.opt.step()
    run.sched.step()
    return float(per_row.mean()) / step_tokens


def _micro_step(run: _Run, batch: torch.Tensor, scale: float) -> torch.Tensor:
    """Forward, decode and backward of one micro-batch; (L,) float64 sums of each row's KL over its tokens.
    The decode runs chunk by chunk with gradients up to the translated rows, then ONE backward through the
    translators."""
    import torch

    h, final = _capture(run.lens, batch, run.autocast)  # (n, L, d), (n, V)
    x = run.module(h)  # (n, L, d), one product for all tokens and rows
    flat, grad_x = x.detach(), torch.zeros_like(x)
    kls = []
    for s in range(0, x.shape[0], run.chunk):
        xc = flat[s : s + run.chunk].requires_grad_()
        # the loss: the sum over rows of each row's mean KL over the step's tokens
        kl, grad = _row_kl(run.lens.decoder, xc, final[s : s + run.chunk], run.autocast, scale=scale)
        assert grad is not None
        grad_x[s : s + run.chunk] = grad
        kls.append(kl.detach())
    per_row = torch.zeros(run.lens.n_layers, dtype=torch.float64)
    for kl in kls:  # to the host after the loop: one wait for the device, not one per chunk
        per_row += kl.double().sum(0).cpu()
    x.backward(grad_x, inputs=run.params)  # then through the translators, once
    return per_row


def _loop(run: _Run, checkpoint_every: int, progress: bool, callback) -> None:
    """Steps from ``run.start`` to the last, with the progress bar, the callback and rank 0's checkpoints;
    Ctrl-C raises ``Interrupted``."""
    plan, steps = run.plan, run.plan.settings["steps"]
    step_tokens = plan.per_step * plan.seq_len
    t0 = time.perf_counter()
    label = f"train{run.group.label()}"
    try:
        with progress_bar(
            steps, "steps", enabled=progress, description=label, completed=run.start
        ) as advance:
            for step in range(run.start, steps):
                loss = _step(run, step)
                run.losses.append(loss)
                run.tokens_here += step_tokens
                run.elapsed = time.perf_counter() - t0
                rate = run.tokens_here / max(run.elapsed, 1e-9)
                advance(1, status=f"loss {loss:.4f} nats · {rate:,.0f} tokens/s")
                if callback is not None:
                    callback(step + 1, loss)
                if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                    if run.group.is_main:
                        save_checkpoint(plan.out, step + 1, plan.per_step, plan.settings, run.tuned,
                                         run.opt, run.sched, run.losses, run.seconds + run.elapsed)  # fmt: skip
                    run.last_saved = step + 1
                distributed.poll()
    except KeyboardInterrupt:
        raise Interrupted(plan.out, run.last_saved) from None


def _facts(run: _Run) -> dict[str, Any]:
    """``meta["training"]``: the settings, the global batch and how it was cut, losses, speed, device."""
    plan, s = run.plan, run.plan.settings
    per_rank = plan.per_step // run.group.world_size
    micro = min(run.micro, per_rank)
    return {
        **{k: v for k, v in s.items() if k not in ("model", "unembed_hash", "data_hash")},
        "split": plan.split_name,
        "sequences_per_step": plan.per_step,
        "ranks": run.group.world_size,
        "sequences_per_rank": per_rank,
        "micro_batch": micro,  # sequences per forward pass on one rank
        "grad_accumulation": -(-per_rank // micro),  # global batch = micro_batch x ranks x this
        "tokens_seen": s["steps"] * plan.per_step * plan.seq_len,
        "optimizer": f"SGD, Nesterov momentum {s['momentum']}",
        "final_loss": run.losses[-1] if run.losses else None,
        "losses": [round(x, 6) for x in run.losses],
        "seconds": round(run.seconds + run.elapsed, 2),
        "tokens_per_s": round(run.tokens_here / max(1e-9, run.elapsed), 2) if run.tokens_here else None,
        "device": str(run.lens.decoder.device),
        "recipe": "Belrose et al. 2023; defaults of the tuned-lens package (scripts/train_loop.py)",
    }


def _held_out(lens, tuned, corpus: Corpus, seq_len: int, eval_tokens: int, dtype) -> dict[str, Any] | None:
    """Per-row KL on the validation split, logit lens and tuned lens (positions with a next token)."""
    try:
        ids = corpus.sequences(lens.tokenizer, seq_len, max_sequences=-(-eval_tokens // seq_len))
    except LogitLensError as exc:
        warnings.warn(f"no held-out evaluation: {exc}", stacklevel=3)
        return None
    names = [r.name for r in lens.rows()][: lens.n_layers]
    logit = row_kl(lens, ids, None, next_token_only=True, dtype=dtype)
    tuned_kl = row_kl(lens, ids, tuned, next_token_only=True, dtype=dtype)
    return {
        "data": f"{corpus.name} [{corpus.split_name}]",
        "tokens": int(ids.shape[0] * (ids.shape[1] - 1)),
        "rows": names,
        "kl_logit": [round(float(x), 6) for x in logit],
        "kl_tuned": [round(float(x), 6) for x in tuned_kl],
    }
