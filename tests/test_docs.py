"""The docs site cannot drift from the code: the CLI page holds every option, the API reference every public
name, the nav every page, and the notebooks are committed executed and offline. (Fast: no model loads;
`make docs-test` builds the site strictly and runs the notebooks.)"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

import logitlens
from logitlens.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_cli_page_has_every_command_and_option():
    page = load_script("docs_hooks").cli_markdown()
    parser = build_parser()
    commands = subparsers(parser)
    assert set(commands) >= {"run", "compare", "eval", "attribute", "train-lens", "serve"}
    for name, sub in {"": parser, **commands}.items():
        if name:
            assert f"## logitlens {name}\n" in page, name
            section = page.split(f"## logitlens {name}\n")[1].split("\n## logitlens ")[0]
        else:
            section = page
        for action in sub._actions:
            for option in action.option_strings:
                assert re.search(rf"(`|, ){re.escape(option)}[ ,`]", section), f"logitlens {name} {option}"
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert (action.metavar or action.dest.upper()) in section, f"logitlens {name} {action.dest}"


def test_cli_page_shows_help_and_defaults():
    page = load_script("docs_hooks").cli_markdown()
    assert "tokens kept per cell" in page  # run --top-k's help text
    assert "| `--memory-budget MB` |" in page
    assert "(default: cpu)" in page  # a default argparse does not spell out in the help text


API_DIRECTIVE = re.compile(r"^::: (logitlens(?:\.\w+)+)\s*$", re.M)


def test_api_reference_documents_every_public_name():
    """Every name of logitlens.__all__ has a `::: module.Name` directive that resolves to that same object."""
    documented = {}
    for path in DOCS.glob("api*.md"):
        for target in API_DIRECTIVE.findall(path.read_text()):
            module, _, name = target.rpartition(".")
            documented.setdefault(name, (module, path.name))
    missing = sorted(set(logitlens.__all__) - set(documented))
    assert missing == [], f"add ::: directives for these to docs/api.md: {missing}"
    for name in logitlens.__all__:
        module, page = documented[name]
        obj = getattr(importlib.import_module(module), name)
        assert obj is getattr(logitlens, name) or name == "__version__", f"{page}: {module}.{name}"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    entries = set(re.findall(r"([\w/.-]+\.(?:md|ipynb))\s*$", nav, re.M))
    generated = {"cli.md"}  # scripts/docs_hooks.py adds it at build time
    for entry in entries - generated:
        assert (DOCS / entry).is_file(), f"mkdocs.yml nav: {entry} does not exist"
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.glob("*.md")}
    pages |= {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.ipynb")}
    assert pages - entries == set(), "put these pages in mkdocs.yml's nav"


NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


def test_there_are_five_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_and_offline(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "run `make notebooks` and commit the outputs"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), "no picture"
    assert 'LogitLens.from_pretrained("default")' in "".join("".join(c["source"]) for c in code)

    class Nb:  # the attribute access run_notebooks.cdn_urls expects
        cells = nb["cells"]

    assert load_script("run_notebooks").cdn_urls(Nb) == []


def test_the_offline_check_catches_a_cdn_figure():
    """Guards the check itself: plotly's "notebook_connected" renderer loads plotly.js from its CDN."""

    class Nb:
        cells = [
            {"outputs": [{"data": {"text/html": "<script src='https://cdn.plot.ly/plotly-3.0.1.min.js'>"}}]}
        ]

    assert load_script("run_notebooks").cdn_urls(Nb) == ["https://cdn."]
