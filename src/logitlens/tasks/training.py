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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logitlens.errors import LogitLensError, first_line
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

CHECKPOINT = "checkpoint.pt"
_LENS_FILES = ("config.json", "translators.safetensors", "params.pt")
_FORMAT = "logitlens.tuned_lens_checkpoint"
# Settings that define a run's trajectory: a resumed run must match them.
_DEFINING = (
    "model",
    "unembed_hash",
    "data",
    "data_hash",
    "sequences",
    "split_seed",
    "steps",
    "seq_len",
    "batch_tokens",
    "lr",
    "momentum",
    "weight_decay",
    "warmup_steps",
    "clip",
    "seed",
)


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C during training; ``step`` is the step of the last checkpoint in ``out`` (None: none yet)."""

    def __init__(self, out: Path, step: int | None):
        super().__init__(f"interrupted; last checkpoint: step {step}")
        self.out = out
        self.step = step


# ---- the output folder --------------------------------------------------------------------------------
def check_out(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> bool:
    """Refuse (one line) an ``out`` folder that does not fit ``resume`` / ``overwrite``; True when there
    is a checkpoint to resume from. Cheap: reads no file, imports no model."""
    from logitlens.core.files import check_writable

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise LogitLensError(f"--out {path} is a file; give a folder for the tuned lens")
    check_writable(path, "--out", folder_ok=True)  # before any training: the lens could not be saved
    if resume and overwrite:
        raise LogitLensError("give --resume (continue a run) or --overwrite (start over), not both")
    has_checkpoint = (path / CHECKPOINT).is_file()
    finished = (path / "config.json").is_file() and any((path / f).is_file() for f in _LENS_FILES[1:])
    if resume:
        if has_checkpoint:
            return True
        if finished:
            raise LogitLensError(
                f"{path} holds a finished tuned lens and no checkpoint: there is nothing to resume; train "
                "into another --out, or pass --overwrite instead of --resume to train it again"
            )
        raise LogitLensError(
            f"--resume: {path} holds no checkpoint ({CHECKPOINT}) to continue from; run without --resume"
        )
    if not overwrite and finished:
        raise LogitLensError(
            f"{path} already holds a trained tuned lens; give another --out, or --overwrite to replace it"
        )
    if not overwrite and has_checkpoint:
        raise LogitLensError(
            f"{path} holds the checkpoint of an unfinished run; add --resume to continue it, or --overwrite "
            "to start over"
        )
    return False


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
    import torch

    from logitlens.engine.tuned import TunedLens

    _check_args(
        steps,
        seq_len,
        batch_tokens,
        lr,
        warmup_steps,
        weight_decay,
        momentum,
        clip,
        checkpoint_every,
        eval_tokens,
    )
    out = Path(out)
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
    corpus = _corpus(data, lines, field)
    held_out: Corpus | None = None
    if corpus.split_name == "all":
        train = corpus.split("train", seed=split_seed)
        with contextlib.suppress(LogitLensError):  # a corpus of one document has no validation split
            held_out = corpus.split("validation", seed=split_seed)
    else:
        train = corpus
    train_ids = train.sequences(lens.tokenizer, seq_len)  # (n, T)
    n_seq = train_ids.shape[0]
    if n_seq < per_step:
        raise LogitLensError(
            f"the corpus is too small for one step: the train split of '{corpus.name}' packs into {n_seq} "
            f"sequences of {seq_len} tokens ({n_seq * seq_len:,} tokens), one step needs {per_step} "
            f"(--batch-tokens {batch_tokens}); lower --batch-tokens or --seq-len, or add text"
        )
    dev = lens.decoder.device
    tuned = TunedLens.for_model(lens).to(dev)
    settings: dict[str, Any] = {
        "model": str(lens.name),
        "unembed_hash": tuned.meta.get("unembed_hash"),
        "data": corpus.name,
        "data_hash": _data_hash(train_ids),
        "sequences": n_seq,
        "split_seed": split_seed,
        "steps": steps,
        "seq_len": seq_len,
        "batch_tokens": per_step * seq_len,
        "lr": float(lr),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "warmup_steps": warmup_steps,
        "clip": float(clip),
        "seed": seed,
        "dtype": "bfloat16" if compute is not None else "float32",
    }
    params = [p for p in (tuned.weight, tuned.bias) if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=lr * (1 - momentum), momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(steps, warmup_steps))
    start, seconds = 0, 0.0
    losses: list[float] = []
    if has_checkpoint:
        start, losses, seconds = _load_checkpoint(out, settings, tuned, opt, sched)
    elif overwrite:
        for name in (*_LENS_FILES, CHECKPOINT):
            (out / name).unlink(missing_ok=True)
    autocast = _autocast(dev, compute)
    micro = _micro_batch(lens.decoder, seq_len, lens.n_layers, lens.budget_bytes)
    chunk = _token_chunk(lens.decoder, lens.n_layers, lens.budget_bytes)
    step_tokens = per_step * seq_len
    last_saved = start if has_checkpoint else None
    t0, done_here = time.perf_counter(), 0
    try:
        with progress_bar(steps, "steps", enabled=progress, description="train", completed=start) as advance:
            for step in range(start, steps):
                ids = train_ids[batch_indices(n_seq, step, per_step, seed)]  # (per_step, T)
                opt.zero_grad(set_to_none=True)
                per_row = torch.zeros(lens.n_layers, dtype=torch.float64)
                for batch in ids.split(micro):
                    h, final = _capture(lens, batch, autocast)  # (n, L, d), (n, V)
                    x = _translate(tuned, h)  # (n, L, d), one product for all tokens and rows
                    flat, grad_x = x.detach(), torch.zeros_like(x)
                    kls = []
                    for s in range(0, x.shape[0], chunk):  # decode chunk by chunk, gradients up to x
                        xc = flat[s : s + chunk].requires_grad_()
                        # the loss: the sum over rows of each row's mean KL over the step's tokens
                        kl, grad = _row_kl(
                            lens.decoder, xc, final[s : s + chunk], autocast, scale=1 / step_tokens
                        )
                        assert grad is not None
                        grad_x[s : s + chunk] = grad
                        kls.append(kl.detach())
                    for kl in kls:  # to the host after the loop: one wait for the device, not one per chunk
                        per_row += kl.double().sum(0).cpu()
                    x.backward(grad_x, inputs=params)  # then through the translators, once
                    del h, final, x, flat, grad_x
                torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                sched.step()
                loss = float(per_row.mean()) / step_tokens
                losses.append(loss)
                done_here += step_tokens
                elapsed = time.perf_counter() - t0
                advance(1, status=f"loss {loss:.4f} nats · {done_here / max(elapsed, 1e-9):,.0f} tokens/s")
                if callback is not None:
                    callback(step + 1, loss)
                if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                    _save_checkpoint(
                        out, step + 1, per_step, settings, tuned, opt, sched, losses, seconds + elapsed
                    )
                    last_saved = step + 1
    except KeyboardInterrupt:
        raise Interrupted(out, last_saved) from None
    seconds += time.perf_counter() - t0
    facts: dict[str, Any] = {
        **{k: v for k, v in settings.items() if k not in ("model", "unembed_hash", "data_hash")},
        "split": train.split_name,
        "sequences_per_step": per_step,
        "tokens_seen": steps * step_tokens,
        "optimizer": f"SGD, Nesterov momentum {momentum}",
        "final_loss": losses[-1] if losses else None,
        "losses": [round(x, 6) for x in losses],
        "seconds": round(seconds, 2),
        "tokens_per_s": round(done_here / max(1e-9, time.perf_counter() - t0), 2) if done_here else None,
        "device": str(dev),
        "recipe": "Belrose et al. 2023; defaults of the tuned-lens package (scripts/train_loop.py)",
    }
    if eval_tokens and held_out is not None:
        facts["held_out"] = _held_out(lens, tuned, held_out, seq_len, eval_tokens, dtype)
    tuned.meta["training"] = facts
    tuned.save(out)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return tuned


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


# ---- checkpoints ----------------------------------------------------------------------------------------
def _save_checkpoint(out: Path, step, per_step, settings, tuned, opt, sched, losses, seconds) -> None:
    import torch

    from logitlens.core.files import write_atomic

    state = {
        "format": _FORMAT,
        "version": 1,
        "step": step,
        "next_sequence": step * per_step,  # the data position: index into the stream of sequences
        "settings": settings,
        "weight": tuned.weight.detach().cpu().clone(),
        "bias": tuned.bias.detach().cpu().clone(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "losses": list(losses),
        "seconds": seconds,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CHECKPOINT, lambda tmp: torch.save(state, tmp), "the training checkpoint")


def _load_checkpoint(out: Path, settings, tuned, opt, sched) -> tuple[int, list[float], float]:
    import torch

    file = out / CHECKPOINT
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file
        raise LogitLensError(
            f"cannot read the checkpoint {file} ({first_line(exc)}); start over with --overwrite"
        ) from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise LogitLensError(f"{file} is not a logitlens training checkpoint; start over with --overwrite")
    saved = state["settings"]
    for key in _DEFINING:
        if saved.get(key) != settings.get(key):
            raise LogitLensError(
                f"cannot resume: the checkpoint in {out} was made with {key} = {saved.get(key)!r}, this run "
                f"has {settings.get(key)!r}; resume with the same model, data and options, or start over "
                "with --overwrite"
            )
    with torch.no_grad():
        tuned.weight.copy_(state["weight"])
        tuned.bias.copy_(state["bias"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"]), [float(x) for x in state["losses"]], float(state["seconds"])
