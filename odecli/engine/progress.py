"""The progress bar every training command shows (rich), or nothing with quiet=true."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def progress(total: int, description: str, quiet: bool = False, start: int = 0
             ) -> Iterator[Any]:
    """A rich progress bar; `update(n, **fields)` sets the iteration and shown numbers."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if quiet or not sys.stdout.isatty():  # a log file gets the summary, not bar redraws
        yield _NullProgress()
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, completed=start, info="")
        yield _RichProgress(bar, task)


class _RichProgress:
    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def update(self, completed: int, **fields: Any) -> None:
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
        self.bar.update(self.task, completed=completed, info=info)


class _NullProgress:
    def update(self, completed: int, **fields: Any) -> None:
        pass


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
