"""MkDocs hooks (``hooks:`` in mkdocs.yml): the command-line reference, generated from the parsers.

``cli_markdown()`` walks ``logitlens.cli.build_parser()`` (every command, every option, its metavar,
choices, default and help) and the hook adds the page as ``cli.md`` at build time, so the page cannot
drift from the code; ``tests/test_docs.py`` checks that every option appears in it.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INTRO = """# Command line

`logitlens COMMAND ...` (or `python -m logitlens COMMAND ...`). This page is generated from the parsers
themselves (`logitlens.cli.build_parser()`), so every command and option below is exactly what the installed
version accepts; `logitlens COMMAND --help` prints the same.

Bad input exits with status 2 and one line saying what to fix, before any model loads; Ctrl-C exits with
status 130 and one line. A mistyped command or option gets a "did you mean".
"""


def _cell(text: str) -> str:
    """Text for one Markdown table cell: no newlines, no bare pipes, HTML escaped."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _option_name(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        return f"{name} ..." if action.nargs in ("*", "+") else name
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices is not None and action.metavar is None:
        return f"{names} {{{','.join(str(c) for c in action.choices)}}}"
    metavar = action.metavar if action.metavar is not None else action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.nargs == "?":
        metavar = f"[{metavar}]"
    elif action.nargs in ("*", "+"):
        metavar = f"{metavar} ..."
    return f"{names} {metavar}"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    if "%" in text:
        text = parser._get_formatter()._expand_help(action)  # noqa: SLF001 - %(default)s as --help shows it
    if (
        action.default not in (None, False, True, argparse.SUPPRESS, [])
        and action.option_strings
        and "default" not in text
    ):
        text += f" (default: {action.default})"
    return text


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk over sub-parsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {a.dest: a.help or "" for a in action._choices_actions}  # noqa: SLF001
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _table(parser: argparse.ArgumentParser) -> list[str]:
    lines = ["| option | meaning |", "| --- | --- |"]
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:  # noqa: SLF001
            continue
        lines.append(f"| `{_cell(_option_name(action))}` | {_cell(_help(parser, action))} |")
    return lines


def cli_markdown() -> str:
    """The command-line reference page, as Markdown, from ``logitlens.cli.build_parser()``."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from logitlens.cli import build_parser

    parser = build_parser()
    out = [INTRO, "## logitlens", "", "```", parser.format_usage().strip(), "```", "", *_table(parser), ""]
    commands = _subcommands(parser)
    out += ["| command | what it does |", "| --- | --- |"]
    out += [f"| [`{name}`](#logitlens-{name}) | {_cell(text)} |" for name, text, _ in commands]
    out.append("")
    for name, text, sub in commands:
        out += [f"## logitlens {name}", "", _cell(sub.description or text), "", "```"]
        out += [sub.format_usage().strip(), "```", "", *_table(sub), ""]
        if sub.epilog:
            out += ["```", sub.epilog.strip(), "```", ""]
    return "\n".join(out)


def on_files(files, config):
    """MkDocs event: add the generated ``cli.md`` to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "cli.md", content=cli_markdown()))
    return files
