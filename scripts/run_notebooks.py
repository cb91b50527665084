"""Execute the example notebooks (examples/*.ipynb), each within a time bound, and check them.

    python scripts/run_notebooks.py                    # run every notebook in a scratch folder (CI)
    python scripts/run_notebooks.py --write            # and save the outputs back into the notebooks
    python scripts/run_notebooks.py examples/01_first_lens.ipynb --timeout 300

Each notebook runs in a fresh kernel (the interpreter running this script, so the same environment) whose
working folder is a scratch folder: nothing is written beside the notebooks. A notebook fails when a cell
raises, when it runs past ``--timeout`` seconds in all, or when an output holds a URL to a CDN (figures must
render offline: plotly.js is embedded, never fetched). Exit status: 0 when every notebook passed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# A script or stylesheet a page would fetch from a CDN (an offline notebook has none of them).
CDN = re.compile(r"https?://(?:cdn\.|cdnjs\.|unpkg\.com|code\.jquery|ajax\.googleapis)")


def cdn_urls(nb) -> list[str]:
    """The CDN URLs found in a notebook's outputs (an empty list for an offline notebook)."""
    found: list[str] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for value in output.get("data", {}).values():
                text = value if isinstance(value, str) else "".join(value) if isinstance(value, list) else ""
                found += [m.group(0) for m in CDN.finditer(text)]
    return found


def run_notebook(path: Path, timeout: float, write: bool) -> tuple[float, str | None]:
    """Execute ``path``; returns (seconds, None) on success or (seconds, the reason it failed)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="logitlens-nb-") as work:
        client = NotebookClient(
            nb,
            timeout=int(timeout),  # per cell; the whole notebook is checked against the same bound below
            kernel_name="python3",
            resources={"metadata": {"path": work}},
            record_timing=False,
        )
        try:
            client.execute()
        except CellTimeoutError:
            return time.perf_counter() - t0, f"a cell ran past {timeout:.0f} s"
        except CellExecutionError as exc:
            return time.perf_counter() - t0, str(exc).strip().splitlines()[-1]
    seconds = time.perf_counter() - t0
    if seconds > timeout:
        return seconds, f"took {seconds:.0f} s, over the {timeout:.0f} s bound"
    urls = cdn_urls(nb)
    if urls:
        return seconds, f"outputs load from a CDN: {sorted(set(urls))}"
    if write:
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, path)
    return seconds, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: examples/*.ipynb")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per notebook (default 300)")
    parser.add_argument("--write", action="store_true", help="save the outputs back into the notebooks")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(EXAMPLES.glob("*.ipynb"))
    if not notebooks:
        print("run_notebooks: no notebook found", file=sys.stderr)
        return 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if sys.platform == "win32":  # pragma: no cover - zmq needs the selector loop there
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())
    failed = 0
    for path in notebooks:
        seconds, error = run_notebook(path, args.timeout, args.write)
        status = "ok" if error is None else f"FAILED: {error}"
        print(f"{path.name}: {seconds:.0f} s, {status}", flush=True)
        failed += error is not None
    print(f"{len(notebooks) - failed} of {len(notebooks)} notebooks ran clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
