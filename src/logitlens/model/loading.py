"""How a big model is loaded: device maps (accelerate), CPU/disk offload and quantised weights.

``load_options`` turns the user's choices into the keyword arguments of ``from_pretrained`` (transformers'
or nnsight's), checking them first so that a bad combination fails in one line before any download:

- ``device_map``: "auto", "balanced", "balanced_low_0", "sequential" or a dict {module path: device}
  (accelerate spreads the blocks over the GPUs, then CPU, then disk); ``max_memory`` {device: "20GiB"};
  ``offload_folder`` where disk-offloaded weights go. The lens reads each row where its block ran and
  decodes on the unembedding's execution device.
- ``quantization``: "int8" (torchao int8 weight-only: CPU or GPU), "bnb-8bit" / "bnb-4bit" (bitsandbytes,
  CUDA only), or any transformers quantisation config object, passed as it is. The lens decodes through
  the model's own (quantised) modules; statistics stay fp32.

Example:
    >>> LogitLens.from_pretrained("meta-llama/Llama-3.1-8B", device_map="auto", quantization="bnb-4bit")
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import Iterator
from typing import Any

from logitlens.errors import LogitLensError

__all__ = ["DEVICE_MAPS", "QUANTIZATIONS", "import_transformers", "load_options", "quiet_import"]

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
QUANTIZATIONS = ("int8", "bnb-8bit", "bnb-4bit")


def load_options(
    *,
    device: str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    quantization: Any = None,
) -> dict[str, Any]:
    """The ``from_pretrained`` keyword arguments for these choices (see the module docstring)."""
    out: dict[str, Any] = {}
    if device == "auto":
        device_map = device_map or "auto"
    elif device is not None and device_map is not None:
        raise LogitLensError(
            f"give either device={device!r} (one device) or device_map={device_map!r} (spread), not both"
        )
    if device_map is not None:
        if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
            raise LogitLensError(
                f"unknown device map {device_map!r}; choose one of: {', '.join(DEVICE_MAPS)} "
                "(or pass a dict {module path: device} in Python)"
            )
        if not isinstance(device_map, str | dict):
            raise LogitLensError(f"device_map must be a string or a dict, got {type(device_map).__name__}")
        _need("accelerate", "a device map", "pip install accelerate")
        out["device_map"] = device_map
    for what, value in (("max_memory", max_memory), ("offload_folder", offload_folder)):
        if value is not None:
            if device_map is None:
                raise LogitLensError(f"{what} needs a device map: add device_map='auto' (--device-map auto)")
            out[what] = value
    if quantization is not None:
        out["quantization_config"] = _quantization_config(quantization, device, device_map)
    return out


def _quantization_config(quantization: Any, device: str | None, device_map: Any) -> Any:
    if not isinstance(quantization, str):
        return quantization  # a transformers quantisation config, used as it is
    if quantization not in QUANTIZATIONS:
        raise LogitLensError(
            f"unknown quantization {quantization!r}; choose one of: {', '.join(QUANTIZATIONS)} "
            "(or pass a transformers quantization config object in Python)"
        )
    if quantization == "int8":
        _need("torchao", "int8 weight-only quantisation", "pip install torchao")
        _import_torchao_quantizer()
        with quiet_import():
            from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    import torch

    if not torch.cuda.is_available():
        raise LogitLensError(
            f"quantization {quantization!r} (bitsandbytes) needs a CUDA GPU; on CPU use quantization='int8'"
        )
    if device not in (None, "auto") and not str(device).startswith("cuda"):
        raise LogitLensError(f"quantization {quantization!r} runs on CUDA, not on device {device!r}")
    _need("bitsandbytes", f"quantization {quantization!r}", "pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization == "bnb-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )


def import_transformers(quantization: Any = None) -> None:
    """Import transformers' model code, leaving torchao out unless ``quantization`` is asked.

    transformers imports torchao with its quantiser registry whenever torchao is installed (2-4 s, and a
    warning for each GPU kernel library torchao cannot load), though only a torchao-quantised model uses
    it. Here torchao looks absent while that registry is imported, and present again right after:
    ``quantization="int8"`` imports it then (``_quantization_config``). Nothing is hidden once transformers'
    models are imported (by us or by the caller); an unexpected transformers layout imports it plainly.
    """
    with quiet_import(), contextlib.suppress(ImportError):
        if quantization is not None or "transformers.quantizers" in sys.modules:
            import transformers.quantizers  # noqa: F401

            return
        import transformers.utils as hf_utils
        import transformers.utils.import_utils as hf_import_utils

        real = getattr(hf_utils, "is_torchao_available", None)
        if real is None:
            import transformers.quantizers  # noqa: F401

            return
        absent = lambda *args, **kwargs: False  # noqa: E731
        hf_utils.is_torchao_available = hf_import_utils.is_torchao_available = absent
        try:
            import transformers.quantizers  # noqa: F401
        finally:
            hf_utils.is_torchao_available = hf_import_utils.is_torchao_available = real
            for name, module in list(sys.modules.items()):  # later checks (TorchAoConfig...) see torchao
                # as it is; __dict__, not getattr: a lazy module would import on an unknown name
                if name.startswith("transformers") and vars(module).get("is_torchao_available") is absent:
                    module.is_torchao_available = real


def _import_torchao_quantizer() -> None:
    """torchao and the names transformers' torchao quantiser takes from it, when ``import_transformers``
    left them out."""
    with quiet_import():
        import torchao  # noqa: F401
        import transformers.quantizers.quantizer_torchao as hf_torchao

        if not hasattr(hf_torchao, "flatten_tensor_state_dict"):
            from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

            hf_torchao.flatten_tensor_state_dict = flatten_tensor_state_dict


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Import-time warnings of torchao (kernel libraries for absent GPUs) and torch's pytree, silenced."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _need(module: str, what: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise LogitLensError(f"{what} needs the {module} package: {install}")
