"""One progress bar for every long task (evaluation, streamed runs, training): rich, on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(
    total: int,
    unit: str,
    *,
    enabled: bool = True,
    description: str = "",
    completed: int = 0,
    delay: float = 0.0,
    transient: bool = False,
) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr (done/total, rate in ``unit``/s, elapsed, ETA); yields ``advance(n,
    status=None)``, where ``status`` (e.g. the last training loss) replaces the text after the rate.

    Args:
        total: the amount of work, in ``unit``.
        unit: what is counted ("tokens", "prompts", "steps").
        enabled: False shows nothing (the yielded function does nothing).
        description: the text before the bar.
        completed: already done before (a resumed run).
        delay: show the bar only once an ``advance`` comes this many seconds after the start (a quick task
            shows nothing).
        transient: remove the bar when the task ends.
    """
    if not enabled:
        yield lambda n, status=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            if not speed and task.elapsed:  # batches slower than rich's window: the average since the start
                speed = (task.completed - task.fields["first"]) / task.elapsed
            return Text(f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        _Rate(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    # a window of 10 minutes: a batch of a large model on a CPU can take minutes (the ETA needs a rate)
    bar = Progress(*columns, console=_console(), transient=transient, speed_estimate_period=600)
    task = bar.add_task(description, total=total, completed=completed, first=completed, status="")
    start = time.perf_counter()
    if delay <= 0:
        bar.start()

    def advance(n: int, status: str | None = None) -> None:
        bar.update(task, advance=n, **({} if status is None else {"status": status}))
        if not bar.live.is_started and time.perf_counter() - start > delay:
            bar.start()

    try:
        yield advance
    finally:
        bar.stop()


def _console():
    """Where the bar is drawn: stderr."""
    from rich.console import Console

    return Console(stderr=True)
