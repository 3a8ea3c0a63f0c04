"""`hydra/launcher=ensemble`: a sweep's same-shaped jobs trained together as one batched model.

The launcher composes every job's config (once per kind of job, the others derived from it:
odecli.launch.derived, shared with Hydra's sweeper through its config loader), groups the jobs
by everything but what members may differ in (the family's `member_keys`: seed, lr, weight
decay, noise level, tolerances...), and prints the grouping. A group of one, or a job the
family cannot batch (its `unfit` reason is printed), runs as with the basic launcher. A
bigger group first gets its run folders exactly as Hydra makes them (`run_job`: `.hydra/`,
the job's log), then trains in one process through `engine.ensemble.Members`, and each
member's outcome goes back to Hydra through the job function's own `report`, so the sweep
folder, the summary lines, failures and `resume=` read as with any launcher. Continuing a
sweep (`resume=<sweep>`, or the same command again) hands this launcher only the unfinished
jobs, each with `resume=` where it has a checkpoint: the groups resume.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odecli import registry
from odecli.errors import OdecliError

log = logging.getLogger("odecli")


def _is_member_key(key: str, member_keys: Sequence[str]) -> bool:
    return any(key == m or key.startswith(m + ".") for m in member_keys)


def group_key(plain: dict[str, Any], member_keys: Sequence[str]) -> str:
    """What must be equal for two jobs to train as one batched model."""
    from odecli.engine.checkpoint import flatten  # torch: only once a sweep is grouped

    shared = {k: v for k, v in flatten(plain).items() if not _is_member_key(k, member_keys)}
    return json.dumps(shared, sort_keys=True, default=str)


def differing(plains: list[dict[str, Any]]) -> list[str]:
    """The keys whose values differ between a group's members."""
    from odecli.engine.checkpoint import flatten

    flats = [flatten(p) for p in plains]
    keys = sorted(set().union(*flats))
    return [k for k in keys if k != "resume"  # each member's own folder
            and len({json.dumps(f.get(k), default=str) for f in flats}) > 1]


class Job:
    """One sweep job: its composed config, number, overrides and (after run_job) folder."""

    def __init__(self, num: int, overrides: Sequence[str], sweep_config: Any) -> None:
        from omegaconf import OmegaConf, open_dict

        self.num, self.overrides, self.sweep_config = num, list(overrides), sweep_config
        job = sweep_config.copy()
        with open_dict(job):
            job.pop("hydra", None)
        self.plain: dict[str, Any] = OmegaConf.to_container(job, resolve=True)  # type: ignore
        self.cfg: Any = None
        self.run_dir: Path | None = None
        self.ret: Any = None


def plan(jobs: list[Job], experiment_cls: Any, max_members: int
         ) -> list[tuple[list[Job], str | None]]:
    """Groups of jobs in sweep order, each with the reason it runs alone (or None)."""
    from omegaconf import OmegaConf

    batch_cls = getattr(experiment_cls, "ensemble", None)
    groups: dict[str, list[Job]] = {}
    alone: list[tuple[list[Job], str | None]] = []
    for job in jobs:
        if batch_cls is None:
            alone.append(([job], "this command has no batched training"))
            continue
        why = batch_cls.unfit(OmegaConf.create(job.plain))
        if why is not None:
            alone.append(([job], why))
            continue
        groups.setdefault(group_key(job.plain, batch_cls.member_keys), []).append(job)
    out: list[tuple[list[Job], str | None]] = []
    for members in groups.values():
        for i in range(0, len(members), max_members):
            out.append((members[i:i + max_members], None))
    out.extend(alone)
    return sorted(out, key=lambda g: g[0][0].num)


def describe(groups: list[tuple[list[Job], str | None]]) -> str:
    """The grouping, printed before training."""
    n_jobs = sum(len(g) for g, _ in groups)
    lines = [f"note: ensemble launcher: {n_jobs} job(s) in {len(groups)} group(s)"]
    for k, (members, why) in enumerate(groups, 1):
        nums = ",".join(str(j.num) for j in members)
        if len(members) == 1:
            text = f"1 member (job {nums}), runs alone" + (f": {why}" if why else "")
        else:
            diff = differing([j.plain for j in members])
            text = (f"{len(members)} members (jobs {nums}), one batched model; they differ "
                    f"in {', '.join(diff) if diff else 'nothing'}")
        lines.append(f"  group {k}: {text}")
    return "\n".join(lines)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
           ) -> list[Any]:
    """`EnsembleLauncher.launch` (hydra_plugins/odecli_plugins): the JobReturn of every job,
    in the order given."""
    from hydra.core.utils import configure_log, run_job, setup_globals
    from omegaconf import open_dict

    setup_globals()
    config, task = launcher.config, launcher.task_function
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    cmd = registry.get(getattr(task, "cmd_name", "train"))
    experiment_cls = cmd.experiment_class()
    loader = share_compositions(launcher.hydra_context)
    jobs = []
    for i, overrides in enumerate(job_overrides):
        num = initial_job_idx + i
        sweep_config = loader.take(config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = num
            sweep_config.hydra.job.num = num
        jobs.append(Job(num, overrides, sweep_config))
    groups = plan(jobs, experiment_cls, int(launcher.max_members))
    print(describe(groups), file=sys.stderr, flush=True)

    def run(job: Job, function: Any) -> None:
        job.ret = run_job(hydra_context=launcher.hydra_context, task_function=function,
                          config=job.sweep_config, job_dir_key="hydra.sweep.dir",
                          job_subdir_key="hydra.sweep.subdir")
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)

    for members, _ in groups:
        if len(members) == 1:
            run(members[0], task)
            continue
        for job in members:
            run(job, _Collect(task, job))
        _train_group(task, experiment_cls, members, bool(config.get("quiet", False)))
    return [j.ret for j in jobs]


def share_compositions(hydra_context: Any) -> Any:
    """Hydra's config loader for this sweep (the sweeper's check and this launcher) made to
    compose once per kind of job (odecli.launch.derived); returns it."""
    from odecli.launch.derived import DerivingLoader

    if not isinstance(hydra_context.config_loader, DerivingLoader):
        hydra_context.config_loader = DerivingLoader(hydra_context.config_loader)
    return hydra_context.config_loader


class _Collect:
    """The task function of a batched member's `run_job`: Hydra makes its folder; training
    waits for the whole group."""

    def __init__(self, task: Any, job: Job) -> None:
        self.task, self.job = task, job
        self.__module__ = __name__
        self.__name__ = self.__qualname__ = "odecli_job"

    def __call__(self, cfg: Any) -> Any:
        from omegaconf import OmegaConf

        self.job.run_dir = self.task.start()
        OmegaConf.resolve(cfg)  # while this job's Hydra config is set
        self.job.cfg = cfg
        return {"status": "pending", "run_dir": str(self.job.run_dir)}


def _train_group(task: Any, experiment_cls: Any, members: list[Job], quiet: bool) -> None:
    """Build every member, train them together, report each member's outcome to Hydra."""
    from odecli.engine import ensemble, rundir
    from odecli.engine.loop import Engine
    from odecli.engine.outcome import RunFailedWithMetrics
    from odecli.numerics import device as device_mod

    device_mod.quiet_warnings()
    for h in logging.getLogger().handlers:  # the progress bar and summaries own the terminal
        if type(h) is logging.StreamHandler:
            h.setLevel(logging.CRITICAL + 1)
    built: list[tuple[Job, Engine]] = []
    for job in members:
        assert job.run_dir is not None
        try:
            exp = experiment_cls(job.cfg, job.run_dir)
            engine = Engine(exp, job.run_dir)
            if job.cfg.get("resume"):
                engine.resume(job.run_dir / rundir.CHECKPOINT)
            ensemble.own_torch_rng(exp)
        except OdecliError as exc:
            _report(task, job, exc)
            continue
        built.append((job, engine))
    if not built:
        return
    batch = experiment_cls.ensemble([e.exp for _, e in built])
    group = ensemble.Members(batch, [e for _, e in built], quiet)
    metrics = group.run()
    stop = group.interrupted(metrics)
    for (job, engine), m in zip(built, metrics, strict=True):
        if m["status"] == "interrupted":  # checkpointed; the sweep stops below
            job.ret.return_value = {"status": "interrupted", "run_dir": str(job.run_dir)}
            continue
        _report(task, job, (m, engine.exp) if m["status"] == "ok" else RunFailedWithMetrics(m))
    if stop is not None:
        _report(task, built[0][0], stop)  # raises: Ctrl-C stops the whole sweep


def _report(task: Any, job: Job, outcome: Any) -> None:
    """Hand a member's outcome to the job function's `report` as if it had trained it."""
    assert job.run_dir is not None

    def result() -> tuple[dict[str, Any], Any]:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(job.sweep_config)
    job.ret.return_value = task.report(job.cfg, job.run_dir, result)
