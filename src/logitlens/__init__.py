"""logitlens: what every layer of a causal language model predicts.

Example:
    >>> import logitlens
    >>> lens = logitlens.LogitLens.from_pretrained("default")
    >>> res = lens.run("The Eiffel Tower is in the city of", targets=[" Paris"])
"""

from __future__ import annotations

from .errors import LogitLensError

# Not ``from typing import TYPE_CHECKING``: importing typing costs ~20 ms at start-up, a window in which a
# Ctrl-C would still land before the ``logitlens`` command's handler (logitlens/_entry.py).
TYPE_CHECKING = False
if TYPE_CHECKING:  # imported on first use: ``logitlens --help`` and ``--version`` never load torch
    from typing import Any

    from .architectures import ARCHITECTURES, Architecture, register_architecture
    from .comparison import compare
    from .concepts import concept
    from .data import Corpus
    from .evaluation import evaluate
    from .lens import LogitLens
    from .result import LensResult
    from .tuned import TunedLens

_LAZY = {
    "ARCHITECTURES": "architectures",
    "Architecture": "architectures",
    "register_architecture": "architectures",
    "compare": "comparison",
    "concept": "concepts",
    "Corpus": "data",
    "evaluate": "evaluation",
    "LogitLens": "lens",
    "LensResult": "result",
    "TunedLens": "tuned",
}

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Corpus",
    "LensResult",
    "LogitLens",
    "LogitLensError",
    "TunedLens",
    "compare",
    "concept",
    "evaluate",
    "register_architecture",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'logitlens' has no attribute {name!r}")
