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
