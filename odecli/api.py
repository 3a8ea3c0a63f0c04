"""odecli from Python: `run` a command, `load` a run folder, `compose` a config.

These do exactly what the shell does (the same composition and checks, the same run folder,
its claim and lock, the same engine), so a notebook and a batch script get the same runs.
Problems are `odecli.OdecliError` exceptions with the one-line message the CLI prints
(`OdecliError` for bad input, `ConfigError` among it for a value out of range, `RunFailed`
for a run that failed, `Interrupted` for Ctrl-C).

    >>> import odecli
    >>> run = odecli.run("train", ["system=lotka", "train.niters=20", "quiet=true"])
    >>> sorted(k for k in run.metrics if k.startswith("error"))
    ['error_abs', 'error_rel']
    >>> odecli.load(run.run_dir).predict([[1.0, 1.0]], [0.0, 1.0, 2.0]).shape
    (3, 1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odecli import registry
from odecli.errors import OdecliError


@dataclass
class Result:
    """A finished run: its folder, its metrics.json and the trained model."""

    run_dir: Path
    metrics: dict[str, Any]
    model: Any  # the family's odecli.engine.trained.TrainedModel

    def __repr__(self) -> str:
        return f"<odecli run {self.metrics.get('command')} {self.metrics.get('status')}: " \
               f"{self.run_dir}>"


def run(command: str, overrides: Sequence[str] = (), run_dir: str | Path | None = None
        ) -> Result:
    """Train one run of `command` ("train", "cnf", ...) with Hydra `overrides` such as
    ["system=lotka", "train.niters=500"]; `run_dir`: the folder to write (default: a new
    one under ./outputs or $ODECLI_OUTPUTS). `resume=FOLDER` continues a run."""
    from odecli.launch import bridge
    from odecli.launch import overrides as ov

    cmd = registry.get(command)
    args = _overrides(overrides)
    if any(a.startswith("-") for a in args):
        raise OdecliError(f"odecli.run takes overrides, not flags: {args!r}; a sweep is "
                          "odecli COMMAND -m from the shell")
    if run_dir is not None:
        if "hydra.run.dir" in ov.keys(args):
            raise OdecliError("give the run folder as run_dir or as hydra.run.dir, not both")
        folder = str(Path(run_dir).expanduser().resolve())
        if "${" in folder:  # Hydra stores the folder in its config, where `${` interpolates
            raise OdecliError(f"run_dir cannot hold '${{' (Hydra would read an "
                              f"interpolation in it): {folder}")
        args.append(f"hydra.run.dir={ov.quote(folder)}")
    outcome = bridge.launch(cmd.name, args, keep_trained=True)
    if not outcome.trained:  # cannot happen for a run that finished in this process
        raise OdecliError(f"odecli {cmd.name} produced no trained model")
    folder, metrics, experiment = outcome.trained[-1]
    return Result(Path(folder), dict(metrics), experiment.trained_model(experiment, folder))


def load(run_dir: str | Path, overrides: Sequence[str] = ()) -> Any:
    """The model a run folder holds (finished or interrupted; the best state where the run
    keeps one), rebuilt with its config. `overrides` may change how it is integrated and
    where: solver=..., solver.rtol=..., device=cuda, data.dir=...; never the model."""
    from odecli.launch.loading import load_run

    loaded = load_run(run_dir, _overrides(overrides), what="odecli.load")
    return loaded.experiment.trained_model(loaded.experiment, loaded.run_dir)


def compose(command: str, overrides: Sequence[str] = ()) -> Any:
    """The config `odecli COMMAND OVERRIDES` would run with (an OmegaConf DictConfig, checked
    by the command's schemas), without running or writing anything."""
    from omegaconf import open_dict

    from odecli.launch import bridge

    cfg = bridge.validate(registry.get(command), _overrides(overrides))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def _overrides(overrides: Sequence[str]) -> list[str]:
    if isinstance(overrides, str):
        raise OdecliError(f"overrides must be a list of strings such as ['{overrides}'], "
                          "not one string")
    bad = [o for o in overrides if not isinstance(o, str)]
    if bad:
        raise OdecliError(f"overrides must be strings, got {bad[0]!r}")
    return list(overrides)
