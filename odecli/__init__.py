"""odecli: an experiment runner for neural ODEs, from the shell and from Python.

    import odecli
    run = odecli.run("train", ["system=lotka"])      # train, as `odecli train system=lotka`
    model = odecli.load(run.run_dir)                  # any run folder, later
    model.predict([[1.0, 1.0]], [0.0, 1.0, 2.0])      # trajectories, numpy in and out

`import odecli` is light: torch and Hydra load on the first call that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from odecli.errors import CheckpointError, ConfigError, Interrupted, OdecliError, RunFailed
from odecli.version import __version__

__all__ = ["CheckpointError", "ConfigError", "Interrupted", "OdecliError", "Result",
           "RunFailed", "__version__", "compose", "load", "run"]

if TYPE_CHECKING:
    from odecli.api import Result, compose, load, run


def __getattr__(name: str) -> Any:
    """The API's functions, imported on first use (they bring torch)."""
    if name in ("run", "load", "compose", "Result"):
        from odecli import api

        return getattr(api, name)
    raise AttributeError(f"module 'odecli' has no attribute {name!r}")
