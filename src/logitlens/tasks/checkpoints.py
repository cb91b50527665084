"""A tuned-lens training run's files: the output folder's checks (``check_out``) and the atomic checkpoints
a resumed run continues from exactly (``save_checkpoint``, ``load_checkpoint``)."""

from __future__ import annotations

import os
from pathlib import Path

from logitlens.errors import LogitLensError, first_line

__all__ = ["CHECKPOINT", "DEFINING", "LENS_FILES", "check_out", "load_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"
LENS_FILES = ("config.json", "translators.safetensors", "params.pt")
_FORMAT = "logitlens.tuned_lens_checkpoint"
# Settings that define a run's trajectory: a resumed run must match them.
DEFINING = (
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
    finished = (path / "config.json").is_file() and any((path / f).is_file() for f in LENS_FILES[1:])
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


# ---- checkpoints ----------------------------------------------------------------------------------------
def save_checkpoint(out: Path, step, per_step, settings, tuned, opt, sched, losses, seconds) -> None:
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


def load_checkpoint(out: Path, settings, tuned, opt, sched) -> tuple[int, list[float], float]:
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
    for key in DEFINING:
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
