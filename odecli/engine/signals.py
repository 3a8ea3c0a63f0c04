"""SIGINT/SIGTERM as a flag: the loop finishes its step, checkpoints and stops cleanly.

A step still running `STEP_GRACE_SECONDS` after the signal is abandoned (the solver's field
checks `StopFlag.overdue`), so a diverged run crawling through tiny steps still stops.

A launcher may add stop signals for the whole job process (`job_stop_signals`: Slurm's
warning before a time limit, USR2 under submitit), caught from the job's start: one that
arrives before training begins (imports, data, compilation) stops the run at its first step.
Only a second Ctrl-C leaves at once; a repeated SIGTERM (Slurm sends two at a time limit,
8 ms apart: slurmstepd's and srun's) changes nothing while the run is already stopping.
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


_JOB_SIGNALS: tuple[int, ...] = ()  # extra stop signals of this job process (a launcher's)
_JOB_FLAG: StopFlag | None = None  # what they caught before training began


def _handlers_allowed() -> bool:
    """Only the main thread of a job's own process: not a joblib (loky) worker, which the
    launcher stops itself, and not a thread, where `signal.signal` is refused."""
    import multiprocessing

    if threading.current_thread() is not threading.main_thread():
        return False
    return not multiprocessing.current_process().name.startswith("LokyProcess")


def _handler(flag: StopFlag) -> Any:
    def handler(signum: int, frame: Any) -> None:
        if flag.signum is None:
            flag.signum = signum
            flag.since = time.monotonic()
        elif signum == signal.SIGINT:  # the user asks again: leave now
            raise KeyboardInterrupt
        # a repeated SIGTERM or warning signal: already stopping, nothing more to do

    return handler


@contextlib.contextmanager
def job_stop_signals(signums: tuple[int, ...]) -> Iterator[StopFlag]:
    """For a launcher's job process: `signums` (and SIGTERM) become stop requests from now on,
    kept in the flag that `stop_signals()` starts from; previous handlers come back after."""
    global _JOB_SIGNALS, _JOB_FLAG
    flag = StopFlag()
    if not _handlers_allowed():
        yield flag
        return
    wanted = tuple(dict.fromkeys((*signums, signal.SIGTERM)))
    previous = {s: signal.signal(s, _handler(flag)) for s in wanted}
    saved = _JOB_SIGNALS, _JOB_FLAG
    _JOB_SIGNALS, _JOB_FLAG = tuple(signums), flag
    try:
        yield flag
    finally:
        _JOB_SIGNALS, _JOB_FLAG = saved
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """Turn the first SIGINT/SIGTERM (or a job stop signal) into a flag: finish the step,
    checkpoint, stop. A second SIGINT raises KeyboardInterrupt at once. Previous handlers come
    back afterwards."""
    flag = _JOB_FLAG if _JOB_FLAG is not None else StopFlag()
    if flag.signum is not None:  # asked before training began: the grace starts now
        flag.since = time.monotonic()
    if not _handlers_allowed():
        yield flag
        return
    handler = _handler(flag)
    wanted = dict.fromkeys((signal.SIGINT, signal.SIGTERM, *_JOB_SIGNALS))
    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
