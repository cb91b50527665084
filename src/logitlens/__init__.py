"""logitlens: what every layer of a causal language model predicts.

Example:
    >>> import logitlens
    >>> lens = logitlens.LogitLens.from_pretrained("default")
    >>> res = lens.run("The Eiffel Tower is in the city of", targets=[" Paris"])
"""

from .architectures import ARCHITECTURES, Architecture, register_architecture
from .compare import compare
from .errors import LogitLensError
from .lens import LogitLens
from .result import LensResult

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "LensResult",
    "LogitLens",
    "LogitLensError",
    "compare",
    "register_architecture",
]
__version__ = "0.1.0"
