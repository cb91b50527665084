"""The ``logitlens`` command: a router over one module per sub-command.

    logitlens run "The Eiffel Tower is in the city of" --target " Paris"
    logitlens run --prompts-file prompts.txt --positions=-1 --json out.json
    logitlens compare --model default --model ./my-finetune "The capital of France is" --html cmp.html
    echo "Hello" | logitlens run --prompts-file -

Bad input exits with status 2 and one line on stderr saying what was wrong and how to fix it; Ctrl-C exits
130 with one line. A new command is a module here with ``add_parser(subparsers)`` and ``run(args) -> int``,
named in ``COMMANDS``; it imports only ``logitlens.cli.common`` from this package.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from logitlens.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Parser, one_line_warning
from logitlens.errors import LogitLensError

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "build_parser", "main"]

# sub-command -> its module in logitlens.cli, in the order of ``logitlens --help``
COMMANDS = {
    "run": "run",
    "compare": "compare",
    "eval": "eval",
    "attribute": "attribute",
    "train-lens": "train",
    "serve": "serve",
}


def build_parser() -> Parser:
    """The whole ``logitlens`` parser; each sub-command's ``run`` is its ``func`` default."""
    from logitlens.core.version import package_version

    parser = Parser(prog="logitlens", description="The logit lens: what every layer predicts.")
    parser.add_argument("--version", action="version", version=f"logitlens {package_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for module_name in COMMANDS.values():
        module = importlib.import_module(f"logitlens.cli.{module_name}")
        module.add_parser(sub).set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command; returns the exit status.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the whole command runs inside ``distributed.together``: the
    process group is joined first, an error on one rank ends every rank, and it is printed (one line, with
    the failing rank's number) by the failing rank and by rank 0; only rank 0 prints warnings and output.
    """
    from logitlens.tasks import distributed

    parser = build_parser()
    group = distributed.Group()
    try:
        group = distributed.from_env()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        with warnings.catch_warnings():
            warnings.simplefilter("default" if group.is_main else "ignore", UserWarning)
            warnings.showwarning = one_line_warning
            if not group.distributed:
                return args.func(args)
            try:
                with distributed.together(f"logitlens {args.command}"):
                    return args.func(args)
            finally:
                distributed.teardown()
    except distributed.RankFailed as exc:
        if group.is_main:
            print(f"logitlens: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LogitLensError as exc:
        where = f"rank {group.rank}: " if group.distributed else ""
        print(f"logitlens: error: {where}{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if group.is_main:
            print("logitlens: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
