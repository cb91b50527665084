"""Writing output files whole or not at all: a temporary file in the same folder, renamed into place.

Every file logitlens writes (results, HTML pages, images) goes through ``write_atomic``, so that a failure
or an interruption never leaves a cut-off file behind, and a place that cannot be written gives one
``LogitLensError`` line that says why.

Example:
    >>> write_atomic("out/report.html", lambda tmp: tmp.write_text(page), "the HTML report")
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from logitlens.errors import LogitLensError

__all__ = ["write_atomic"]


def write_atomic(path: str | Path, write: Callable[[Path], object], what: str) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    what: how the message names the file ("the HTML report"). A missing folder, a directory in the way or
    a place without write permission raises one LogitLensError line; the temporary file is removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise LogitLensError(f"cannot write {what} to {path}: it is a directory; give a file name")
    if not folder.is_dir():
        raise LogitLensError(
            f"cannot write {what} to {path}: the folder {folder} does not exist; create it first"
        )
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise LogitLensError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise LogitLensError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    finally:  # an error or an interruption (Ctrl-C) leaves nothing half-written behind
        if tmp.exists():
            tmp.unlink()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STREAM_SUFFIXES = (".parquet", ".jsonl")  # the files a streamed run writes (logitlens.stream)


def check_stream_output(path: str | Path) -> Path:
    """A streamed run's output path, refused (one line) unless it ends in .parquet/.jsonl and its folder
    exists. Here, not in ``stream`` (which imports torch), so that the CLI checks it before any import."""
    path = Path(path)
    if path.suffix.lower() not in STREAM_SUFFIXES:
        raise LogitLensError(f"cannot stream to {path}: the file name must end in .parquet or .jsonl")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise LogitLensError(f"cannot write {path}: the folder '{folder}' does not exist; create it first")
    if path.is_dir():
        raise LogitLensError(f"cannot write {path}: it is a folder; give a file name")
    return path
