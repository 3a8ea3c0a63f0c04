"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""

from __future__ import annotations


class OdecliError(Exception):
    """A problem the user can fix (bad input, missing data, unusable device)."""

    exit_code = 2


class ConfigError(OdecliError):
    """A config value that is of the wrong type or out of range."""


class SolverError(OdecliError):
    """The ODE solver failed (step size underflow, non-finite state); carries a hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class RunFailed(OdecliError):
    """A run started but did not finish successfully; its folder records why."""

    exit_code = 1


class WriteError(RunFailed, OSError):
    """A file could not be written (disk full, no permission, quota, read-only filesystem):
    a failure of the machine, not bad input, so exit 1; the message names the path. It is an
    OSError too, so code that already handles OS errors still catches it."""

    exit_code = 1

    @classmethod
    def of(cls, path: object, exc: OSError) -> WriteError:
        """`cannot write PATH: <reason>` from the OSError that stopped the write."""
        if isinstance(exc, WriteError):
            return exc
        return cls(f"cannot write {path}: {exc.strerror or one_line(exc)}")


class CheckpointError(OdecliError):
    """A checkpoint that is missing, corrupt or from an incompatible config."""


class Interrupted(OdecliError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; the run can resume.

    The exit code follows the shell convention 128 + signal number (130 for Ctrl-C, 143 for
    SIGTERM). Arguments stay in `args` so the exception survives pickling from a worker.
    """

    def __init__(self, message: str, signum: int = 2, run_dir: str = "") -> None:
        super().__init__(message, signum, run_dir)
        self.signum = signum
        self.run_dir = run_dir
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        return str(self.args[0])


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, shortened: user errors must never print a traceback
    or a wall of text (library messages often span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
