"""Old import paths, kept for a deprecation period: ``import logitlens.lens`` still works and warns.

Version 0.2 moved the modules into layers (``core``, ``model``, ``engine``, ``views``, ``tasks``, ``cli``;
see ARCHITECTURE.md). An old path whose code now lives in one module is an alias of that module (the same
object: private names and monkeypatching keep working); one that gathered names from several modules is a
module of their public names. Each import warns once with a ``DeprecationWarning`` naming the new home.
The aliases go in logitlens 0.4 (CHANGELOG.md).
"""

from __future__ import annotations

import sys

# Nothing heavy here: this module is imported with the package, before the CLI's Ctrl-C handler, and
# importlib.abc would pull in typing. The finder and loader follow the protocols without the base classes.

__all__ = ["MOVED", "install"]

MOVED: dict[str, tuple[str, ...]] = {
    "rows": ("core.rows",),
    "stats": ("core.stats",),
    "tokens": ("core.tokens",),
    "kernels": ("core.kernels",),
    "files": ("core.files",),
    "architectures": ("model.architectures", "model.decoder", "model.discovery"),
    "loading": ("model.loading",),
    "sources": ("model.sources",),
    "default_model": ("model.default_model",),
    "remote": ("model.ndif",),
    "backends": ("model.backends",),
    "backends.hooks": ("model.backends.hooks",),
    "backends.nnsight": ("model.backends.nnsight",),
    "lens": ("engine.lens",),
    "lenses": ("engine.lenses", "engine.tuned"),
    "tuned": ("engine.tuned",),
    "reduce": ("engine.reduce",),
    "result": ("engine.result",),
    "data": ("tasks.data",),
    "evaluation": ("tasks.evaluation",),
    "stream": ("tasks.stream",),
    "attribution": ("tasks.attribution",),
    "concepts": ("tasks.concepts",),
    "comparison": ("tasks.comparison",),
    "training": ("tasks.training",),
    "cli_attribute": ("cli.attribute",),
    "cli_corpus": ("cli.eval",),
    "cli_train": ("cli.train",),
    "png": ("views.png",),
    "terminal": ("views.terminal",),
    "plots": ("views.plotly", "views.model"),
    "report": ("views.report", "tasks.comparison"),
}


class _Alias:
    def __init__(self, old: str, homes: tuple[str, ...]) -> None:
        self.old, self.homes = old, homes

    def create_module(self, spec):
        import importlib
        import types
        import warnings

        names = " and ".join(f"logitlens.{h}" for h in self.homes)
        warnings.warn(
            f"logitlens.{self.old} moved to {names}; import it from there (the old path goes in 0.4)",
            DeprecationWarning,
            stacklevel=2,
        )
        modules = [importlib.import_module(f"logitlens.{h}") for h in self.homes]
        if len(modules) == 1:
            return modules[0]
        merged = types.ModuleType(spec.name, modules[0].__doc__)
        for module in reversed(modules):  # the first home wins a clash
            public = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
            merged.__dict__.update({n: getattr(module, n) for n in public})
        merged.__all__ = sorted({n for n in vars(merged) if not n.startswith("_")})
        return merged

    def exec_module(self, module) -> None:
        pass


class _Finder:
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("logitlens."):
            return None
        old = fullname[len("logitlens.") :]
        homes = MOVED.get(old)
        if homes is None:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, _Alias(old, homes))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
