"""The ``logitlens`` console script: Ctrl-C at any moment, even while the command's modules are still being
imported, exits 130 with one line (``cli.main`` handles it once the command runs).

This module imports nothing at load time, so the window in which a SIGINT can land before our handler is
as small as Python allows: only the interpreter's own start-up and the console-script stub (``from
logitlens._entry import main``) come before it.
"""

import sys

__all__ = ["main"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def main() -> int:
    try:
        from logitlens.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        import contextlib

        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while printing: still no traceback
            print("logitlens: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
