"""The ``logitlens`` console script: Ctrl-C at any moment, even while the command's modules are still being
imported, exits 130 with one line (``cli.main`` handles it once the command runs).

This module imports nothing at load time, so the window in which a SIGINT can land before our handler is
as small as Python allows: only the interpreter's own start-up and the console-script stub (``from
logitlens._entry import main``) come before it.

A Ctrl-C that lands while the interpreter runs a callback whose errors it ignores (a weak-reference
callback in ``importlib``'s module locks, a ``__del__``) would be swallowed there, with an "Exception
ignored" traceback on stderr, and the command would run to its end. ``main`` installs an unraisable hook
that catches exactly that case and raises the interrupt again in the main thread, where it can propagate.
"""

import sys

__all__ = ["main", "reraise_swallowed_interrupts"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _unraisable(unraisable) -> None:
    """``sys.unraisablehook``: a swallowed ``KeyboardInterrupt`` is raised again; everything else as usual."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread
        import threading

        # Not from here: this hook runs inside the callback whose exceptions are ignored. A moment later, from
        # another thread, the main thread gets the interrupt at its next bytecode; if that lands in such a
        # callback again, this hook runs again, so the interrupt is never lost.
        threading.Timer(0.005, _thread.interrupt_main).start()
        return
    sys.__unraisablehook__(unraisable)


def reraise_swallowed_interrupts() -> None:
    """Make a Ctrl-C that lands in a callback whose errors Python ignores reach the main thread anyway."""
    sys.unraisablehook = _unraisable


def main() -> int:
    reraise_swallowed_interrupts()
    try:
        from logitlens.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        import contextlib

        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while printing: still no traceback
            print("logitlens: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
