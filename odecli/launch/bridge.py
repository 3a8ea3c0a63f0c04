"""Hydra behind Typer: hand an argument list to Hydra's own CLI driver.

`hydra.compose` cannot do multirun or launchers, and `@hydra.main` needs `sys.argv`; Hydra's
internal `_run_hydra` (what `@hydra.main` calls) takes a parsed argument list and supports
single runs, `-m` with any launcher, `--cfg` and `--info`. It is private API, hence the
`hydra-core>=1.3.2,<1.5` pin and the tests in tests/test_cli.py. See DESIGN.md for the facts
behind each workaround here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odecli import registry
from odecli.engine.rundir import notice, outputs_root
from odecli.errors import Interrupted, OdecliError, WriteError
from odecli.launch import claims, continuation, presets
from odecli.launch import overrides as ov
from odecli.launch.composing import compose, hydra_call_state, validate
from odecli.launch.derived import Composer
from odecli.launch.output_dir import check_writable, default_hydra_overrides
from odecli.launch.run_folders import stored_command
from odecli.launch.sweeps import (
    MultirunFailed,
    _SweepRecorder,
    claim_dir,
    failure_message,
    launcher_preflight,
    objective_value,
    register_plugins,
    searching,
    sweep_failures,
    sweep_jobs,
    thread_share,
    worst_value,
)
from odecli.paths import config_dir, resolved

log = logging.getLogger("odecli")


@dataclass
class Outcome:
    """What a CLI call produced: run folders and their statuses (filled in-process)."""

    run_dirs: list[Path] = field(default_factory=list)
    sweep_dir: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    errors: list[OdecliError] = field(default_factory=list)
    # (run folder, metrics, trained experiment) of each job run in this process, kept only
    # for a caller that asked (odecli.run): a sweep would otherwise hold every job's model
    keep_trained: bool = False
    trained: list[tuple[Path, dict[str, Any], Any]] = field(default_factory=list)


_OUTCOME = Outcome()


def _job(cmd_name: str) -> Callable[[Any], Any]:
    """The task function Hydra runs once per job (in-process or in a launcher worker)."""
    # A module-level factory keeps the function picklable for joblib/submitit.
    return _JobFunction(cmd_name)


class _JobFunction:
    def __init__(self, cmd_name: str) -> None:
        self.cmd_name = cmd_name
        # Hydra reads these to name the task and find the calling module.
        self.__module__ = __name__
        self.__name__ = "odecli_job"
        self.__qualname__ = "odecli_job"

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        run_dir = self.start()
        experiment_cls = registry.get(self.cmd_name).experiment_class()

        def train() -> tuple[dict[str, Any], Any]:
            from odecli.engine import loop
            from odecli.numerics import device as device_mod

            with device_mod.thread_cap(thread_share(HydraConfig.get().launcher)):
                return loop.train(experiment_cls, cfg, run_dir)

        return self.report(cfg, run_dir, train)

    def start(self) -> Path:
        """The job's run folder, with the terminal left to the progress bar and summary."""
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # The progress bar and the CLI's one-line summary or error own the terminal; log
        # records (evaluations, failures with their iteration) go to the run's log file.
        for h in logging.getLogger().handlers:
            if type(h) is logging.StreamHandler:
                h.setLevel(logging.CRITICAL + 1)
        _OUTCOME.run_dirs.append(run_dir)
        return run_dir

    def report(self, cfg: Any, run_dir: Path, train: Callable[[], tuple[dict[str, Any], Any]]
               ) -> Any:
        """Run `train` (the job's training, or the ensemble's result for this member) and
        turn its outcome into what Hydra gets back: the status, or a search's objective."""
        from odecli.engine import rundir as runs

        cmd = registry.get(self.cmd_name)
        experiment_cls = cmd.experiment_class()
        try:
            metrics, trained = train()
            if _OUTCOME.keep_trained:
                _OUTCOME.trained.append((run_dir, metrics, trained))
        except Interrupted as exc:
            # Past Hydra's per-job `except Exception`: Ctrl-C stops the whole sweep.
            raise _Stop(exc) from None
        except OdecliError as exc:
            metrics_path = run_dir / runs.METRICS
            if not metrics_path.exists():
                with contextlib.suppress(OSError):  # a full disk: the error line says it
                    runs.write_json(metrics_path, {"status": f"failed: {exc}"})
            _OUTCOME.errors.append(exc)
            log.error("%s", exc)
            # Returned, not raised: Hydra would print its own "Error executing job" line. The
            # CLI reads failures from metrics.json (sweeps) or from _OUTCOME (single runs).
            if searching():  # a failed trial is a bad value, not a crashed study
                return worst_value()
            return {"status": f"failed: {exc}", "run_dir": str(run_dir)}
        if not bool(cfg.get("quiet", False)):
            line = summary(metrics, summary_keys(experiment_cls))
            print(f"{cmd.name}: {metrics.get('status')}  {line}\n  run folder: {run_dir}")
        if searching():
            return objective_value(metrics, str(cfg.get("objective") or
                                                 experiment_cls.objectives[0]))
        return {"status": metrics.get("status"), "run_dir": str(run_dir)}


class _Stop(BaseException):
    """Carries an Interrupted out of Hydra's job runner, which catches every Exception."""

    def __init__(self, exc: Interrupted) -> None:
        super().__init__(exc)
        self.exc = exc


def summary_keys(experiment_cls: Any) -> tuple[str, ...]:
    """The metrics a finished run's one-line summary shows: the family's, then timing."""
    return (*experiment_cls.summary_keys, "seconds_per_iter", "wall_seconds")


def summary(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    """'key value, ...' of the numbers and yes/no answers among `keys` that `metrics` has."""
    def shown(v: float) -> str:
        return ("yes" if v else "no") if isinstance(v, bool) else format(v, ".4g")

    return ", ".join(f"{k} {shown(metrics[k])}" for k in keys
                     if isinstance(metrics.get(k), (int, float)))


def launch(cmd_name: str, overrides: list[str], multirun: bool = False,
           cfg: str | None = None, package: str | None = None, resolve: bool = False,
           info: str | None = None, overwrite: bool = False, keep_trained: bool = False
           ) -> Outcome:
    """Run a command through Hydra's CLI driver; raises OdecliError with a one-line message.

    Before Hydra runs, every job's config is validated (bad input writes nothing), `resume=`
    is turned into a run in the stored folder, and the run's folder (or the sweep's) is
    claimed for the whole command (odecli.launch.claims): a folder that holds a run is refused
    unless resumed or `overwrite` moves it aside, and no two processes share one.
    """
    from hydra import version as hydra_version
    from hydra._internal.utils import _run_hydra, get_args_parser

    from odecli.launch import resume as resume_mod

    cmd = registry.get(cmd_name)
    if multirun and (cfg or info):
        raise OdecliError("-m/--multirun cannot be combined with --cfg or --info; "
                          "drop -m to see the composed config")
    hydra_version.setbase("1.3")
    ov.check_sizes(list(overrides))
    flags = [o for o in overrides if o.startswith("-")]  # the CLI took the options it knows
    if flags:
        raise OdecliError(f"no such option: {flags[0]} (see `odecli {cmd_name} --help`; "
                          f"a config setting is written key=value)")
    args = list(overrides)
    showing = bool(cfg or info)
    given = ov.keys(args)
    resume_dir = resume_mod.target(args)
    target: Path | None = None  # the folder this command claims
    extra: list[str] = []
    own: list[str] = []  # resume=: overrides keeping the run's own values (own_values.py)
    state: dict[str, Any] | None = None  # resume=: the checkpoint, read once
    # resume= of a sweep folder (or of a Slurm sweep's job): continue the sweep in place
    cont = (continuation.from_resume(cmd.name, args, resume_dir)
            if resume_dir is not None and not showing else None)
    if cont is not None:
        args, multirun, resume_dir = cont.args, True, None
    fresh = (resume_mod.never_trained(resume_dir)
             if resume_dir is not None and not showing and not multirun else None)
    if fresh is not None:  # nothing to continue: a new run in the same folder
        made_by = stored_command(fresh)
        if made_by not in (None, cmd.name):
            raise OdecliError(f"{fresh} is a '{made_by}' run; restart it with "
                              f"odecli {made_by} resume={fresh}")
        if not claims.holds_run(fresh):
            notice(log, f"{fresh} holds no run yet (stopped during start-up, before its "
                        f"overrides were saved): starting afresh there with the overrides "
                        f"given now")
        args, resume_dir = resume_mod.restart_overrides(fresh, args), None
        given = ov.keys(args)
    if resume_dir is not None:
        if multirun:
            raise OdecliError("resume= continues one run and cannot be combined with -m")
        run_dir = resume_mod.run_folder(resume_dir)
        made_by = stored_command(run_dir)
        if made_by not in (None, cmd.name):
            raise OdecliError(f"{run_dir} is a '{made_by}' run; continue it with "
                              f"odecli {made_by} resume={run_dir}")
        # the run's own values where odecli's defaults changed since it ran
        from odecli.engine.checkpoint import RESUMABLE_KEYS
        from odecli.launch import own_values

        state = resume_mod.read_checkpoint(run_dir)
        own = own_values.for_run(cmd, resume_mod.stored_overrides(run_dir), state["config"],
                                 RESUMABLE_KEYS, args)
        args = resume_mod.merged_overrides(run_dir, [*own, *args])
    args = [ov.absolute_path(o) for o in args]
    if not showing:
        jobs = [] if cont is not None else sweep_jobs(args) if multirun else [args]
        # a sweep's jobs composed once per kind, the others derived (odecli.launch.derived)
        composer = Composer(lambda job: compose(cmd, job, with_hydra=True))
        composed = (cont.plan(lambda job: validate(cmd, job, composer)) if cont is not None
                    else None)
        notes: list[str] = []
        for i, job in enumerate(jobs):
            try:
                composed = validate(cmd, job, composer)
            except OdecliError as exc:
                if len(jobs) == 1:
                    raise
                swept = " ".join(o for o in job if o not in args)
                raise type(exc)(f"sweep job {i} ({swept}): {exc}") from None
            told = presets.note(cmd_name, composed, job)
            if told and told not in notes:
                notes.append(told)
        for told in notes:
            notice(log, told)
        if multirun:  # what the cluster would refuse, before any folder exists
            launcher_preflight(composed, len(cont.batch) if cont is not None else len(jobs))
        check_writable(args, multirun)  # after validating: bad input creates no folder
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        if resume_dir is not None:
            pinned = ov.keys(own)  # the check judges what was set, not the pins
            resume_mod.check(run_dir, composed,
                             [o for o in args if ov.key(o) not in pinned], state)
            target = run_dir
        elif cont is not None:
            target = cont.sweep_dir
        elif key in given:
            # the folder as it resolves now (it may hold ${now:...}), passed on resolved so
            # Hydra writes where the claim is
            target = resolved(str(composed.hydra.sweep.dir if multirun
                                  else composed.hydra.run.dir))
            args = [o for o in args if ov.key(o) != key]
            if multirun and not overwrite:  # the same sweep again: continue it
                cont = continuation.from_rerun(cmd.name, target, args)
                if cont is not None:
                    cont.plan(lambda job: validate(cmd, job, composer))
        elif multirun:
            target = claim_dir(outputs_root() / "multirun", "")
        else:
            tag = ""
            if cmd.tag_group and composed is not None:
                tag = "_" + str(composed.hydra.runtime.choices.get(cmd.tag_group))
            target = claim_dir(outputs_root() / cmd.name, tag)
        extra.append(f"{key}={ov.quote(str(target))}")
    if cont is not None:
        args = cont.hydra_args()
    argv = args + extra + default_hydra_overrides(cmd, args + extra)
    if multirun:
        argv.insert(0, "--multirun")
    if cfg:
        argv[:0] = ["--cfg", cfg]
        if package:
            argv[:0] = ["--package", package]
        if resolve:
            argv.insert(0, "--resolve")
    if info:
        argv[:0] = ["--info", info]
    parser = get_args_parser()
    parsed = parser.parse_args(argv)
    outcome = Outcome(keep_trained=keep_trained)
    global _OUTCOME
    _OUTCOME = outcome
    sweep_recorder = _SweepRecorder()
    holding = (claims.claim(target, cmd.name, resume=resume_dir is not None or cont is not None,
                            overwrite=overwrite, sweep=multirun)
               if target is not None else contextlib.nullcontext())
    with holding, hydra_call_state(), sweep_recorder:
        if resume_dir is not None:
            resume_mod.backup_hydra_files(run_dir)
        if cont is not None:
            cont.prepare()
        if multirun:
            register_plugins()
        try:
            _run_hydra(args=parsed, args_parser=parser, task_function=_job(cmd_name),
                       config_path=str(config_dir()), config_name=cmd.config)
        except _Stop as stop:
            if multirun and sweep_recorder.sweep_dir is not None:  # say how to go on
                raise Interrupted(f"{stop.exc}; continue the whole sweep with: odecli "
                                  f"{cmd.name} resume={sweep_recorder.sweep_dir}",
                                  stop.exc.signum, stop.exc.run_dir) from None
            raise stop.exc from None
        except OdecliError:
            raise
        except OSError as exc:  # Hydra writing .hydra/ or the log: disk full, permission
            raise WriteError.of(exc.filename or target or "the run folder", exc) from None
        except Exception as exc:  # Hydra / OmegaConf errors: one line, no traceback
            raise OdecliError(ov.hydra_message(exc)) from exc
    outcome.sweep_dir = sweep_recorder.sweep_dir
    if not multirun and outcome.errors:
        raise outcome.errors[0]
    if multirun:
        outcome.failures = sweep_failures(outcome.sweep_dir) if outcome.sweep_dir else []
        if outcome.failures:
            raise MultirunFailed(failure_message(cmd.name, outcome.sweep_dir,
                                                 outcome.failures))
    return outcome
