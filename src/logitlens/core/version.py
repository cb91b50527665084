"""The one place that says which logitlens this is."""

from __future__ import annotations

__all__ = ["__version__", "package_version"]

__version__ = "0.1.0"  # keep equal to pyproject's version (tests/core/test_version.py checks it)


def package_version() -> str:
    """The installed distribution's version, or the source tree's ``__version__`` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("logitlens")
    except PackageNotFoundError:  # running from a source tree
        return __version__
