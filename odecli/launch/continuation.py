"""Continuing a sweep in its own folder: the unfinished jobs run again, the finished stay.

Three ways in, one plan: `resume=<sweep folder>` (the stored sweep, with the user's resumable
changes on top, e.g. a longer `hydra.launcher.timeout_min`); `resume=<job folder>` of a Slurm
sweep (that job, on Slurm, not on the login node); and the same sweep command again with the
same `hydra.sweep.dir`. A job is finished when its metrics say `ok` or `failed: ...`; an
interrupted job (or one that left no metrics: cancelled, node failure) resumes from its
checkpoint, and one without a checkpoint starts again. Only those jobs are launched, on the
sweep's launcher, each in its own folder (`hydra.sweep.subdir`), by `ContinueSweeper`
(hydra_plugins/odecli_plugins/continue_sweeper.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odecli.engine.rundir import CHECKPOINT, METRICS
from odecli.errors import OdecliError
from odecli.launch import overrides as ov
from odecli.paths import resolved

MULTIRUN = "multirun.yaml"
SWEEPER = "hydra_plugins.odecli_plugins.continue_sweeper.ContinueSweeper"
# hydra.* overrides the bridge sets itself on every call (never taken from a stored sweep)
BRIDGE_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.job.chdir",
               "hydra.job.name", "hydra.callbacks.odecli_sweep._target_",
               "hydra.sweeper._target_")


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / MULTIRUN).is_file()


def _stored(sweep_dir: Path) -> tuple[list[str], list[str], str, str]:
    """The stored sweep's task overrides, its own hydra overrides, launcher target and
    command."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(sweep_dir / MULTIRUN)["hydra"],
                                     resolve=False)
        task = [str(o) for o in cfg["overrides"]["task"]]
        hydra = [str(o) for o in cfg["overrides"]["hydra"] if ov.key(o) not in BRIDGE_KEYS]
        target = str((cfg.get("launcher") or {}).get("_target_") or "")
        sweeper = str((cfg.get("sweeper") or {}).get("_target_") or "")
        command = str((cfg.get("job") or {}).get("name") or "")
    except Exception as exc:
        raise OdecliError(f"{sweep_dir}/{MULTIRUN} is unreadable: {ov.hydra_message(exc)}"
                          ) from None
    if "optuna" in sweeper.lower():
        raise OdecliError(f"{sweep_dir} is a search (Optuna); a search cannot be continued: "
                          f"start a new one, or resume= its single trials")
    return task, hydra, target, command.replace("_", "-")


def _merge(stored: list[str], user: list[str]) -> list[str]:
    keys = ov.keys(user)
    return [o for o in stored if ov.key(o) not in keys] + user


def from_resume(command: str, args: list[str], target: str) -> Continuation | None:
    """`resume=` of a sweep folder, or of a job of a Slurm sweep: the continuation, or None
    for an ordinary run folder (resumed in place by `launch.resume`)."""
    from odecli.engine.checkpoint import RESUMABLE_KEYS
    from odecli.launch.targets import SLURM_TARGET

    path = resolved(target)
    only = None
    user = [o for o in args if ov.key(o) != "resume"]
    if not is_sweep(path):
        if not (path.parent / MULTIRUN).is_file() or not path.name.isdigit():
            return None
        if _stored(path.parent)[2] != SLURM_TARGET or "hydra/launcher" in ov.keys(user):
            return None  # a local sweep's job resumes locally, as it always did
        path, only = path.parent, int(path.name)
    bad = [o for o in user if not (ov.within(ov.key(o), RESUMABLE_KEYS) or
                                   ov.key(o).startswith(("hydra.", "hydra/")))]
    if bad:
        raise OdecliError(f"resume of the sweep {path} cannot change {ov.key(bad[0])}: only "
                          f"{', '.join(k for k in RESUMABLE_KEYS if k != 'resume')} and "
                          f"hydra.launcher.* may change")
    task, hydra, _, made_by = _stored(path)
    if made_by and made_by != command:
        raise OdecliError(f"{path} is a sweep of '{made_by}'; continue it with "
                          f"odecli {made_by} resume={path}")
    return Continuation(command, path, _merge(task + hydra, user), only)


def from_rerun(command: str, sweep_dir: Path, args: list[str]) -> Continuation | None:
    """The same sweep again in a folder that holds its jobs: the continuation, or None when
    the folder holds another sweep (then the claim refuses it as before)."""
    if not is_sweep(sweep_dir):
        return None
    cont = Continuation(command, Path(sweep_dir), list(args))
    try:
        cont.match()
    except OdecliError:
        return None
    return cont


def _pairs(overrides: list[str]) -> dict[str, str]:
    """What makes a job that job: its overrides as key -> value, read the way Hydra reads
    them ('true' == 'True'), without the keys a resumed run may change."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from odecli.engine.checkpoint import RESUMABLE_KEYS

    wanted = [o for o in overrides if not ov.within(ov.key(o), RESUMABLE_KEYS)
              and not ov.key(o).startswith("hydra")]
    parsed = OverridesParser.create().parse_overrides(wanted)
    return {o.get_key_element(): o.get_value_element_as_str() for o in parsed}


def _holds(folder: dict[str, str], job: dict[str, str]) -> bool:
    return all(folder.get(k) == v for k, v in job.items())


@dataclass
class Continuation:
    command: str
    sweep_dir: Path
    args: list[str]                 # the sweep's overrides (with sweep syntax), for Hydra
    only: int | None = None         # one job of it (resume=<job folder>)
    batch: list[list[str]] = field(default_factory=list)   # what ContinueSweeper launches
    resumed: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def jobs(self) -> list[list[str]]:
        """Every job's overrides, exactly as Hydra's basic sweeper expands them."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        task = [o for o in self.args if not ov.key(o).startswith("hydra")]
        try:
            parsed = OverridesParser.create().parse_overrides(task)
            return BasicSweeper.split_arguments(parsed, None)[0]
        except Exception as exc:
            raise OdecliError(ov.hydra_message(exc)) from None

    def match(self) -> list[list[str]]:
        """The jobs, after checking each existing job folder holds that job."""
        jobs = self.jobs()
        for folder in self.sweep_dir.iterdir():
            if not (folder / ".hydra").is_dir():
                continue
            num = int(folder.name) if folder.name.isdigit() else len(jobs)
            # a folder may hold more than its job's overrides: a resume pins the run's own
            # values where defaults changed (own_values.py), and changes nothing else
            if num >= len(jobs) or not _holds(_pairs(_job_overrides(folder)), _pairs(jobs[num])):
                raise OdecliError(f"{folder} does not hold job {folder.name} of this sweep")
        return jobs

    def plan(self, validate: Callable[[list[str]], Any]) -> Any:
        """Choose the jobs to run and check each (a resumed job against its checkpoint)
        before anything is written; returns the last composed config."""
        from odecli import registry
        from odecli.engine.checkpoint import RESUMABLE_KEYS
        from odecli.launch import own_values
        from odecli.launch import resume as resume_mod

        jobs, composed = self.match(), None
        self.counts = {"finished": 0, "resumed": 0, "started": 0}
        for num, job in enumerate(jobs):
            if self.only is not None and num != self.only:
                continue
            folder = self.sweep_dir / str(num)
            status = _status(folder)
            if status == "ok" or status.startswith("failed"):
                self.counts["finished"] += 1
                continue
            extra = [f"hydra.sweep.subdir={num}"]
            resumed = (folder / CHECKPOINT).is_file()
            own: list[str] = []  # the job's own values where defaults changed since it ran
            try:
                if resumed:
                    extra.append(f"resume={ov.quote(str(folder))}")
                    state = resume_mod.read_checkpoint(folder)
                    own = own_values.for_run(registry.get(self.command), job,
                                             state["config"], RESUMABLE_KEYS, [])
                composed = validate(job + own + extra)
                if resumed:
                    resume_mod.check(folder, composed, job + extra, state)
            except OdecliError as exc:
                raise type(exc)(f"sweep job {num}: {exc}") from None
            self.counts["resumed" if resumed else "started"] += 1
            if resumed:
                self.resumed.append(folder)
            self.batch.append(job + own + extra)
        if not self.batch:
            which = f"job {self.only} of " if self.only is not None else "every job of "
            raise OdecliError(f"{which}the sweep in {self.sweep_dir} has finished; "
                              f"`odecli report {self.sweep_dir}` shows the results")
        return composed

    def hydra_args(self) -> list[str]:
        return self.args + [f"hydra.sweeper._target_={SWEEPER}"]

    def prepare(self) -> None:
        """With the sweep folder claimed: keep each resumed job's .hydra files, hand the
        batch to the sweeper, and say what runs."""
        from odecli.launch import resume as resume_mod

        for folder in self.resumed:
            resume_mod.backup_hydra_files(folder)
        _PLAN[:] = [self.batch]
        c = self.counts
        print(f"note: continuing the sweep in {self.sweep_dir}: {c['resumed']} job(s) resume "
              f"from their checkpoint, {c['started']} start again, {c['finished']} finished "
              f"job(s) stay as they are", file=sys.stderr, flush=True)


def _job_overrides(folder: Path) -> list[str]:
    import yaml

    try:
        return [str(o) for o in yaml.safe_load((folder / ".hydra" / "overrides.yaml"
                                                ).read_text()) or []]
    except (OSError, yaml.YAMLError):
        return []


def _status(folder: Path) -> str:
    try:
        return str(json.loads((folder / METRICS).read_text()).get("status", ""))
    except (OSError, ValueError, AttributeError):
        return ""


_PLAN: list[list[list[str]]] = []


def sweep(sweeper: Any) -> Any:
    """`ContinueSweeper.sweep` (hydra_plugins/odecli_plugins): launch the continuation's
    jobs, not the whole product, and keep the sweep's multirun.yaml as it was."""
    assert sweeper.launcher is not None
    batch = _PLAN[0] if _PLAN else []
    sweeper.validate_batch_is_legal(batch)
    results = sweeper.launcher.launch(batch, initial_job_idx=0)
    for r in results:
        _ = r.return_value
    return [results]
