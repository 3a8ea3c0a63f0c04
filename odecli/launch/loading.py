"""Rebuild a finished (or stopped) run's experiment with its reported model loaded.

`odecli eval`, `odecli sample` and `odecli.load` all start here: the run's stored overrides
are composed again with the caller's on top (only keys that change how the model is
integrated or where, never what it is), checked like any run, and the checkpoint's modules
(the best state where one is kept) are loaded into a freshly built experiment. Nothing is
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odecli import registry
from odecli.errors import OdecliError
from odecli.launch import overrides as ov
from odecli.launch import own_values
from odecli.launch import resume as resume_mod

# Keys that describe a run, not its model: they may differ between a stored run and now.
BOOKKEEPING = ("plots", "quiet", "resume")
# What a loaded model may change: how it is integrated and where, never the model itself.
# (`resume`, `quiet`, `plots` and the training cadence describe the run, not the model.)
LOAD_KEYS = ("solver", "gradient", "device", "plots", "resume", "quiet", "train.niters",
             "train.test_freq", "train.checkpoint_every", "train.checkpoint_seconds", "logger",
             "data.dir", "data.cache_dir")


@dataclass
class LoadedRun:
    """A run rebuilt in memory: its command, checkpoint, checked config and experiment."""

    run_dir: Path
    command: registry.Command
    state: dict[str, Any]   # the checkpoint as read
    cfg: Any                # the composed config, without its `hydra` node
    experiment: Any         # odecli.engine.experiment.Experiment, reported model loaded

    @property
    def model_kind(self) -> str:
        """Which state was loaded: "best" (a tracked best) or "final"."""
        return "best" if self.state.get("best") else "final"


def load_run(path: str | Path, overrides: Sequence[str] = (), *,
             allowed: Sequence[str] | None = None, what: str = "odecli.load",
             command: str | None = None, work_dir: Path | None = None) -> LoadedRun:
    """The run at `path` rebuilt with `overrides` (each within `allowed`, by default
    LOAD_KEYS and the command's own `eval_keys`, else a one-line error naming `what`
    refused it); `command`: refuse a run of any other command.
    `work_dir` is the folder the experiment is told is its own (figures of an evaluation);
    by default the run folder itself, which loading never writes to."""
    from omegaconf import OmegaConf, open_dict

    from odecli.engine import checkpoint
    from odecli.launch import bridge
    from odecli.numerics import device as device_mod

    ov.check_sizes(list(overrides))
    run_dir = resume_mod.run_folder(str(path), purpose=f"for {what}")
    state = resume_mod.read_checkpoint(run_dir)
    made_by = str(state.get("command", "train"))
    cmd = registry.COMMANDS.get(made_by)
    if cmd is None:
        raise OdecliError(f"{run_dir} was written by an unknown command '{made_by}'")
    if command is not None and cmd.name != command:
        raise OdecliError(f"{run_dir} is a '{cmd.name}' run; {what} takes `odecli {command}` "
                          "runs")
    if allowed is None:
        allowed = LOAD_KEYS + cmd.eval_keys
    refused = [o for o in overrides if "=" not in o or not ov.within(ov.key(o), allowed)]
    if refused:
        raise OdecliError(f"{what} cannot change '{refused[0]}'; it takes overrides of "
                          f"{', '.join(allowed_names(allowed))}")
    own = own_values.for_run(cmd, resume_mod.stored_overrides(run_dir), state["config"],
                             (*allowed, *BOOKKEEPING), list(overrides))
    merged = [o for o in resume_mod.merged_overrides(run_dir, [*own, *overrides])
              if not o.startswith("resume=")]
    cfg = bridge.validate(cmd, merged)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    device_mod.quiet_warnings()
    experiment = cmd.experiment_class()(cfg, work_dir or run_dir)
    checkpoint.check_compatible(state["config"], OmegaConf.to_container(cfg, resolve=True),
                                f"checkpoint {run_dir}", (*allowed, *BOOKKEEPING),
                                given_keys=ov.keys(merged) - ov.keys(own))
    checkpoint.load_modules(experiment.modules(), state.get("best") or state["modules"],
                            run_dir)
    return LoadedRun(run_dir, cmd, state, cfg, experiment)


def allowed_names(allowed: Sequence[str]) -> list[str]:
    """The keys a user may give, as an error message lists them (no bookkeeping keys)."""
    hidden = {"resume", "quiet", "logger", "train.niters", "train.test_freq",
              "train.checkpoint_every", "train.checkpoint_seconds", "data.cache_dir",
              "gradient"}
    return [k for k in allowed if k not in hidden]
