"""SIGINT/SIGTERM as a flag: the loop finishes its step, checkpoints and stops cleanly.

A step still running `STEP_GRACE_SECONDS` after the signal is abandoned (the solver's field
checks `StopFlag.overdue`), so a diverged run crawling through tiny steps still stops.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

STEP_GRACE_SECONDS = 5.0


class StopFlag:
    """Set by SIGINT/SIGTERM inside `stop_signals()`; the loop checks it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.since = 0.0

    def __bool__(self) -> bool:
        return self.signum is not None

    def overdue(self, grace: float = STEP_GRACE_SECONDS) -> bool:
        """True once a stop was asked for more than `grace` seconds ago: a step (or rollout)
        still running then is stuck, e.g. a diverged field crawling through tiny steps."""
        return self.signum is not None and time.monotonic() - self.since > grace

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def _handlers_allowed() -> bool:
    """Only the main thread of a job's own process: not a joblib (loky) worker, which the
    launcher stops itself, and not a thread, where `signal.signal` is refused."""
    import multiprocessing

    if threading.current_thread() is not threading.main_thread():
        return False
    return not multiprocessing.current_process().name.startswith("LokyProcess")


@contextlib.contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """Turn the first SIGINT/SIGTERM into a flag (finish the step, checkpoint, stop); a second
    one raises KeyboardInterrupt at once. Previous handlers come back afterwards."""
    flag = StopFlag()
    if not _handlers_allowed():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.signum is not None:
            raise KeyboardInterrupt
        flag.signum = signum
        flag.since = time.monotonic()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
