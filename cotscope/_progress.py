"""Progress on stderr that reads well anywhere: a rich bar on a terminal; plain, newline-terminated lines when
stderr is a file or a pipe (a log, CI, a notebook), where a bar redrawn with carriage returns runs into one line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["count_line", "progress", "quiet_weight_loading", "stderr_is_terminal", "step"]

PLAIN_EVERY_S = 5.0
"""Plain lines: at most one per this many seconds while a count advances (and always the last)."""


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (a bar redrawn in place), not a file or a pipe (plain lines)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def step(message: str) -> None:
    """Say that a step of a few seconds or more starts (one line on stderr)."""
    _line(message)


def count_line(text: str, *, last: bool) -> None:
    """A count such as ``scored 3/10 traces``: redrawn in place on a terminal (a newline after the ``last``), one
    line per call elsewhere."""
    if stderr_is_terminal():
        print(f"\r{text}", end="\n" if last else "", file=sys.stderr, flush=True)
    else:
        _line(text)


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress report for ``total`` items; yields ``advance(n)``. Nothing when ``total`` is 0."""
    if not total:
        yield lambda n: None
        return
    if not stderr_is_terminal():
        state = {"done": 0, "last": time.monotonic()}
        _line(f"{label}: 0/{total}")

        def advance(n: int) -> None:
            state["done"] += n
            now = time.monotonic()
            if state["done"] >= total or now - state["last"] >= PLAIN_EVERY_S:
                state["last"] = now
                _line(f"{label}: {state['done']}/{total}")

        yield advance
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def quiet_weight_loading() -> None:
    """No "Loading weights" bars from transformers (a carriage-return bar, unreadable in a log): the commands print
    their own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
