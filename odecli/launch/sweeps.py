"""Sweeps and run folders: expanding `-m` jobs up front, claiming folders, thread shares, and
reading which jobs of a sweep failed.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odecli.errors import OdecliError
from odecli.launch.overrides import hydra_message
from odecli.launch.targets import SLURM_TARGET


def register_plugins() -> None:
    """Make odecli's launcher and sweeper (hydra_plugins/odecli_plugins) known to Hydra, whose
    plugin scan misses them in an editable install."""
    import importlib

    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # scans first: our classes must subclass what it loaded
    for name in ("slurm_launcher.SlurmLauncher", "continue_sweeper.ContinueSweeper",
                 "ensemble_launcher.EnsembleLauncher"):
        module, _, cls = name.partition(".")
        with contextlib.suppress(ImportError):
            found = getattr(importlib.import_module(f"hydra_plugins.odecli_plugins.{module}"),
                            cls, None)
            if found is not None:
                plugins.register(found)


def thread_share(launcher: Any) -> int | None:
    """CPU threads one job may use: cores // parallel jobs under joblib (jobs must not fight
    over cores), the allocation under submitit, no cap for the sequential basic launcher."""
    target = str(launcher.get("_target_", "")).lower() if launcher is not None else ""
    cpus = os.cpu_count() or 1
    if "joblib" in target:
        n = launcher.get("n_jobs", -1)
        n = cpus if n is None else (max(1, cpus + 1 + n) if n < 0 else max(1, n))
        return max(1, cpus // min(n, cpus))
    if "submitit" in target or target == SLURM_TARGET.lower():
        per_task = launcher.get("cpus_per_task")
        return int(per_task) if isinstance(per_task, int) and per_task > 0 else None
    return None


def claim_dir(parent: Path, tag: str) -> Path:
    """<parent>/<date>/<time with microseconds><tag>, created with an exclusive mkdir: two
    processes started in the same microsecond still get two folders."""
    from datetime import datetime

    while True:
        now = datetime.now()
        path = parent / now.strftime("%Y-%m-%d") / (now.strftime("%H-%M-%S-%f") + tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise OdecliError(f"cannot create the run folder {path}: "
                              f"{exc.strerror or exc}") from exc
        return path


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Expand a sweep the way Hydra's basic sweeper does (cartesian product of a,b,c lists),
    so every job's config can be checked before any job runs; a search interval
    (`interval(a,b)`, Optuna) contributes its two ends."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise OdecliError(hydra_message(exc)) from exc
    axes = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            if o.is_interval_sweep():  # a search space (Optuna): check both ends
                ends = (o.value().start, o.value().end)
                axes.append([f"{key}={v}" for v in ends])
                continue
            try:
                axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            except Exception as exc:
                raise OdecliError(hydra_message(exc)) from exc
        else:
            axes.append([o.input_line])
    return [list(job) for job in itertools.product(*axes)]


class MultirunFailed(OdecliError):
    exit_code = 1


def sweep_failures(sweep_dir: Path) -> list[tuple[str, str]]:
    """Jobs of a sweep whose metrics.json is missing or not 'ok' (with how their Slurm job
    ended, where the sweep ran on Slurm), and Slurm jobs that never ran."""
    from odecli.engine import rundir as runs
    from odecli.launch.slurm_queue import Ended, read_record

    slurm = read_record(sweep_dir)
    failures = []
    seen = set()
    for job in sorted((p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()),
                      key=lambda p: (len(p.name), p.name)):
        seen.add(job.name)
        info = slurm.get(int(job.name)) if job.name.isdigit() else None
        ended = Ended(-1, **{k: info.get(k, "") for k in ("slurm_id", "state", "result",
                                                            "detail")}) if info else None
        metrics = job / runs.METRICS
        if not metrics.exists():
            failures.append((str(job), ended.reason() if ended and ended.result else
                             "no metrics.json (the job crashed)"))
            continue
        stored = runs.read_json(metrics)
        status = str(stored.get("status", "unknown"))
        if status == "interrupted" and stored.get("interrupted_by"):
            status += f" by {stored['interrupted_by']}"
        if status != "ok":
            if ended and ended.state not in ("", "COMPLETED"):
                status += f" (Slurm job {ended.slurm_id} {ended.state})"
            failures.append((str(job), status))
    for num, info in sorted(slurm.items()):
        if str(num) not in seen and info.get("result") not in (None, "", "ok"):
            ended = Ended(num, **{k: info.get(k, "") for k in ("slurm_id", "state", "result",
                                                                "detail")})
            failures.append((str(Path(sweep_dir) / str(num)), "never ran: " + ended.reason()))
    return failures


def failure_message(command: str, sweep_dir: Path | None, failures: list[tuple[str, str]]
                    ) -> str:
    """The one line naming every failed job, and how to continue the unfinished ones."""
    names = "; ".join(f"job {Path(d).name}: {r}" for d, r in failures)
    text = f"{len(failures)} job(s) failed: {names}"
    unfinished = [r for _, r in failures if not r.startswith("failed")]
    if unfinished and sweep_dir is not None:
        text += f"; continue the unfinished job(s) with: odecli {command} resume={sweep_dir}"
    return text


def launcher_preflight(composed: Any, n_jobs: int) -> None:
    """Ask the sweep's launcher, before any folder exists, whether it can run these jobs
    (Slurm: `sbatch --test-only`)."""
    launcher = None
    with contextlib.suppress(Exception):
        launcher = composed.hydra.launcher
    if launcher is None or str(launcher.get("_target_", "")) != SLURM_TARGET:
        return
    from omegaconf import open_dict

    from odecli.launch import slurm

    job = composed.copy()
    with open_dict(job):
        job.pop("hydra", None)
    slurm.preflight(launcher, n_jobs, job)


class _SweepRecorder:
    """Learns the sweep folder from the multirun config Hydra composes in this process."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def _hook(self, config: Any) -> None:
        with contextlib.suppress(Exception):
            self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def __enter__(self) -> _SweepRecorder:
        _SWEEP_HOOKS.append(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        _SWEEP_HOOKS.remove(self._hook)


_SWEEP_HOOKS: list[Callable[[Any], None]] = []


def _callback_base() -> type:
    from hydra.experimental.callback import Callback

    return Callback


class SweepDirCallback(_callback_base()):  # type: ignore[misc]
    """Hydra callback (added by the bridge's overrides): tells the CLI the sweep folder."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        for hook in list(_SWEEP_HOOKS):
            hook(config)


def searching() -> bool:
    """True inside a job of a search sweeper (Optuna), which wants the objective returned."""
    from hydra.core.hydra_config import HydraConfig

    sweeper = HydraConfig.get().get("sweeper") or {}
    return "optuna" in str(sweeper.get("_target_", "")).lower()


def worst_value() -> float:
    """What a failed trial reports: the worst value for the search's direction."""
    from hydra.core.hydra_config import HydraConfig

    direction = str(HydraConfig.get().sweeper.get("direction", "minimize"))
    return -math.inf if "max" in direction else math.inf


def objective_value(metrics: dict[str, Any], name: str) -> float:
    """The metric a search minimises; a missing or non-finite value counts as the worst."""
    value = metrics.get(name)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return worst_value()
