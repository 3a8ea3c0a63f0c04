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


def thread_share(launcher: Any) -> int | None:
    """CPU threads one job may use: cores // parallel jobs under joblib (jobs must not fight
    over cores), the allocation under submitit, no cap for the sequential basic launcher."""
    target = str(launcher.get("_target_", "")).lower() if launcher is not None else ""
    cpus = os.cpu_count() or 1
    if "joblib" in target:
        n = launcher.get("n_jobs", -1)
        n = cpus if n is None else (max(1, cpus + 1 + n) if n < 0 else max(1, n))
        return max(1, cpus // min(n, cpus))
    if "submitit" in target:
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
    """Jobs of a sweep whose metrics.json is missing or not 'ok'."""
    from odecli.engine import rundir as runs

    failures = []
    for job in sorted((p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()),
                      key=lambda p: (len(p.name), p.name)):
        metrics = job / runs.METRICS
        if not metrics.exists():
            failures.append((str(job), "no metrics.json (the job crashed)"))
            continue
        status = str(runs.read_json(metrics).get("status", "unknown"))
        if status != "ok":
            failures.append((str(job), status))
    return failures


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
