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

__all__ = ["STREAM_SUFFIXES", "check_stream_output", "check_writable", "write_atomic"]


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


def check_writable(
    path: str | Path, option: str, suffixes: tuple[str, ...] | None = None, *, folder_ok: bool = False
) -> Path:
    """Refuse, in one line and before any long work, an output that could not be written: a suffix that is
    not one of ``suffixes`` (the suffix picks the format), a folder in the way of a file, a missing folder,
    or a folder where no file can be created (read-only, no permission: a probe file is created and removed
    there). ``folder_ok``: the output is a folder (made with its parents when written). ``option`` names
    the output in the message ("--json").
    """
    path = Path(path)
    if path.is_dir() and not folder_ok:
        raise LogitLensError(f"{option} {path} is a directory: give a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise LogitLensError(
            f"{option} {path}: the file name must end in {', '.join(suffixes)} (the suffix picks the format)"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if folder_ok:  # a folder output, made with its parents on write: the nearest existing one must take it
        folder = path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.is_dir():
        raise LogitLensError(f"{option} {path}: the folder {folder} does not exist; create it first")
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".logitlens-probe-", suffix=".tmp")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LogitLensError(
            f"{option} {path}: cannot write in the folder {folder} ({reason}); choose another place"
        ) from None
    os.close(fd)
    os.unlink(name)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STREAM_SUFFIXES = (".parquet", ".jsonl")  # the files a streamed run writes (logitlens.tasks.stream)


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
    return check_writable(path, "--out")
