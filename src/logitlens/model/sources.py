"""Where a model comes from, checked before transformers is asked to load it.

``check_source`` answers in a second or two, with one line, the questions a failed load would otherwise
answer after a minute of hub retries: is it a local folder, and does that folder hold a model (which file
is missing)? Is it in the Hugging Face cache? Does the hub have it, or is the hub unreachable?

Example:
    >>> check_source("./my-finetune")        # raises LogitLensError: folder ... has no config.json
"""

from __future__ import annotations

import os
from pathlib import Path

from logitlens.errors import LogitLensError, first_line

__all__ = ["HUB_TIMEOUT_S", "check_source"]

HUB_TIMEOUT_S = 5.0  # seconds to wait for the hub's answer about a model not in the cache
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def check_source(name: str, revision: str | None = None) -> None:
    """Raise one LogitLensError line when ``name`` cannot be a model; return when loading may proceed."""
    path = Path(name).expanduser()
    if path.is_dir():
        _check_folder(path, name)
        return
    if path.exists():
        raise LogitLensError(f"'{name}' is a file, not a model folder: give the folder with config.json")
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        raise LogitLensError(
            f"there is no folder '{name}': give an existing model folder, or a Hugging Face id such as "
            "HuggingFaceTB/SmolLM2-135M"
        )
    _check_hub(name, revision)


def _check_folder(path: Path, name: str) -> None:
    if not (path / "config.json").is_file():
        raise LogitLensError(f"folder '{name}' is not a model: it has no config.json")
    if not any(any(path.glob(pattern)) for pattern in _WEIGHTS):
        raise LogitLensError(
            f"folder '{name}' has config.json but no weights (model.safetensors or pytorch_model.bin)"
        )
    if not any((path / f).is_file() for f in _TOKENIZER):
        raise LogitLensError(
            f"folder '{name}' has no tokenizer (tokenizer.json or tokenizer_config.json); save the "
            "tokenizer next to the model"
        )


def _check_hub(name: str, revision: str | None) -> None:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except HFValidationError:
        raise LogitLensError(
            f"'{name}' is neither a local folder nor a valid Hugging Face id (such as "
            "HuggingFaceTB/SmolLM2-135M)"
        ) from None
    if isinstance(cached, str):
        return  # in the local cache: transformers loads it from there
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise LogitLensError(
            f"model '{name}' is not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE is "
            "set; unset it to download the model, or give a local folder"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(name, revision=revision, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        raise LogitLensError(
            f"model '{name}' is gated on the Hugging Face hub: accept its licence there and log in "
            "(`hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise LogitLensError(
            f"the Hugging Face hub has model '{name}' but no revision '{revision}'"
        ) from None
    except RepositoryNotFoundError:
        raise LogitLensError(
            f"the Hugging Face hub has no model '{name}' (or it is private: log in with `hf auth login`); "
            "check the name, or give a local folder"
        ) from None
    except Exception as exc:  # network errors come from several libraries (httpx, requests, ssl, os)
        reason = first_line(exc)
        raise LogitLensError(
            f"cannot reach the Hugging Face hub to fetch model '{name}' ({reason[:120]}); check the network "
            "or proxy, or give a local folder"
        ) from None
