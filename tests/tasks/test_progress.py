"""The one progress bar of every long task (``tasks.progress.progress_bar``): what it shows and when."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from logitlens.tasks import progress


@pytest.fixture
def terminal(monkeypatch):
    """stderr as a wide terminal whose text the test can read."""
    out = io.StringIO()
    monkeypatch.setattr(progress, "_console", lambda: Console(file=out, force_terminal=True, width=160))
    return out


def test_the_bar_counts_the_unit_and_shows_the_status(terminal):
    with progress.progress_bar(10, "tokens", description="eval m") as advance:
        advance(4)
        advance(6, status="loss 1.25")
    text = terminal.getvalue()
    assert "eval m" in text and "10/10" in text and "tokens" in text and "loss 1.25" in text


def test_disabled_shows_nothing(terminal):
    with progress.progress_bar(3, "steps", enabled=False) as advance:
        advance(3, status="x")
    assert terminal.getvalue() == ""


def test_a_delay_hides_a_quick_task_and_shows_a_slow_one(terminal):
    with progress.progress_bar(2, "prompts", delay=60.0) as advance:
        advance(1)
        advance(1)
    assert terminal.getvalue() == ""  # done within the delay: nothing drawn
    with progress.progress_bar(2, "prompts", delay=0.05) as advance:
        advance(1)
        time.sleep(0.1)
        advance(1, status="9 tokens/s")
    assert "2/2" in terminal.getvalue() and "9 tokens/s" in terminal.getvalue()


def test_resumed_work_starts_from_completed(terminal):
    with progress.progress_bar(10, "tokens", completed=7) as advance:
        advance(1)
    assert "8/10" in terminal.getvalue()
