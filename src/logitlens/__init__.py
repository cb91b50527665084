"""logitlens: what every layer of a causal language model predicts.

Example:
    >>> import logitlens
    >>> lens = logitlens.LogitLens.from_pretrained("default")
    >>> res = lens.run("The Eiffel Tower is in the city of", targets=[" Paris"])
"""

from __future__ import annotations

from logitlens._compat import install as install_compat
from logitlens.core.version import __version__
from logitlens.errors import LogitLensError

# Not ``from typing import TYPE_CHECKING``: importing typing costs ~20 ms at start-up, a window in which a
# Ctrl-C would still land before the ``logitlens`` command's handler (logitlens/_entry.py).
TYPE_CHECKING = False
if TYPE_CHECKING:  # imported on first use: ``logitlens --help`` and ``--version`` never load torch
    from typing import Any

    from logitlens.core.rows import Row
    from logitlens.core.stats import Statistic, register_statistic
    from logitlens.engine.lens import LogitLens, Target
    from logitlens.engine.lenses import FunctionLens, IdentityLens, Lens
    from logitlens.engine.result import LensResult
    from logitlens.engine.tuned import TunedLens
    from logitlens.model.architectures import ARCHITECTURES, Architecture, register_architecture
    from logitlens.tasks.comparison import compare
    from logitlens.tasks.concepts import concept
    from logitlens.tasks.data import Corpus
    from logitlens.tasks.evaluation import evaluate
    from logitlens.tasks.training import train_tuned_lens

_LAZY = {  # public name -> its home
    "ARCHITECTURES": "model.architectures",
    "Architecture": "model.architectures",
    "register_architecture": "model.architectures",
    "LogitLens": "engine.lens",
    "Target": "engine.lens",
    "LensResult": "engine.result",
    "TunedLens": "engine.tuned",
    "Lens": "engine.lenses",
    "FunctionLens": "engine.lenses",
    "IdentityLens": "engine.lenses",
    "Statistic": "core.stats",
    "register_statistic": "core.stats",
    "Row": "core.rows",
    "compare": "tasks.comparison",
    "concept": "tasks.concepts",
    "Corpus": "tasks.data",
    "evaluate": "tasks.evaluation",
    "train_tuned_lens": "tasks.training",
}

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Corpus",
    "FunctionLens",
    "IdentityLens",
    "Lens",
    "LensResult",
    "LogitLens",
    "LogitLensError",
    "Row",
    "Statistic",
    "Target",
    "TunedLens",
    "__version__",
    "compare",
    "concept",
    "evaluate",
    "register_architecture",
    "register_statistic",
    "train_tuned_lens",
]

install_compat()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"logitlens.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'logitlens' has no attribute {name!r}")
