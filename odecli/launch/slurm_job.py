"""Inside a Slurm job of a sweep: stop signals, resuming after a requeue, requeueing itself.

submitit's own handler for the warning before the time limit (USR2) raises inside whatever
runs, so training died without metrics, and its SIGTERM handler only logs. Here, from the
job's first line, USR2 and SIGTERM are stop requests the engine honours at the next step
boundary (`engine.signals.job_stop_signals`): checkpoint, `status: interrupted`, figures.
Then, after USR2, the job asks Slurm to requeue it the way submitit's checkpointing does (a
new submission pickled in place of the old one, `scontrol requeue`), at most
`max_num_timeout` times for time limits, and the next run resumes from the checkpoint. A
job that cannot requeue (no requeues left, requeue refused) returns `interrupted`, and the
sweep's summary says how to continue it on Slurm.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from odecli.engine.rundir import CHECKPOINT
from odecli.errors import Interrupted

log = logging.getLogger("odecli")


def timed_out(started: float, timeout_min: int) -> bool:
    """submitit's rule: a warning late in the allocation is the time limit, an early one a
    preemption (which does not use up `max_num_timeout`)."""
    limit = timeout_min * 60
    return time.time() - started >= min(limit * 0.8, limit - 10 * 60)


def resume_overrides(command: str, overrides: list[str], run_dir: Path) -> list[str]:
    """A requeued job's overrides: its own, the run's own values where odecli's defaults
    changed while the job waited in the queue (an upgrade: own_values.py), and `resume=` its
    folder."""
    from odecli import registry
    from odecli.engine.checkpoint import RESUMABLE_KEYS
    from odecli.launch import own_values
    from odecli.launch.overrides import key, quote
    from odecli.launch.resume import read_checkpoint

    job = [o for o in overrides if key(o) != "resume"]
    resume = f"resume={quote(str(run_dir))}"
    if not (run_dir / CHECKPOINT).is_file():  # nothing to hold: resume= starts it afresh
        return [*job, resume]
    state = read_checkpoint(run_dir)
    own = own_values.for_run(registry.get(command), job, state["config"], RESUMABLE_KEYS, [])
    return [*job, *own, resume]


def run(launcher: Any, sweep_overrides: list[str], job_dir_key: str, job_num: int,
        job_id: str, singleton_state: dict[Any, Any], resume_dir: str | None) -> Any:
    """One sweep job under Slurm (what Hydra's submitit launcher's `__call__` does, plus the
    stop signals, resume and requeue)."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
    from omegaconf import open_dict

    from odecli.engine import signals
    from odecli.launch import resume as resume_mod

    started = time.time()
    env = submitit.JobEnvironment()
    warning = env._usr_sig()
    with signals.job_stop_signals((warning,)):
        Singleton.set_state(singleton_state)
        setup_globals()
        overrides = list(sweep_overrides)

        def compose(overrides: list[str]) -> Any:
            cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config,
                                                                         overrides)
            with open_dict(cfg.hydra.job) as job:
                job.id = env.job_id
                cfg.hydra.job.num = job_num
            return cfg

        cfg = compose(overrides)
        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        if resume_dir or (restarted and (run_dir / CHECKPOINT).is_file()
                          and not cfg.get("resume")):
            # a requeued (or Slurm-restarted) job: continue from its checkpoint
            resume_mod.backup_hydra_files(run_dir)
            command = str(launcher.config.hydra.job.name).replace("_", "-")
            overrides = resume_overrides(command, overrides, run_dir)
            cfg = compose(overrides)
            log.info("Slurm job %s: resuming %s", env.job_id, run_dir)
        try:
            return run_job(hydra_context=launcher.hydra_context,
                           task_function=launcher.task_function, config=cfg,
                           job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")
        except BaseException as exc:
            stop = getattr(exc, "exc", None)  # the bridge's _Stop carries an Interrupted
            if not isinstance(stop, Interrupted):
                raise
        if stop.signum == warning:
            why = requeue(launcher, env, started, run_dir)
            log.warning("%s: not requeued (%s); continue the sweep with resume=", env.job_id,
                        why)
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED,
                         _return_value={"status": "interrupted", "run_dir": str(run_dir),
                                        "signal": stop.signum})


def requeue(launcher: Any, env: Any, started: float, run_dir: Path) -> str:
    """Requeue this job to resume `run_dir` (submitit's checkpoint mechanism); exits the
    process when Slurm took it. Returns why it did not requeue otherwise."""
    from submitit.core.utils import DelayedSubmission, temporary_save_path

    pickle = env.paths.submitted_pickle
    delayed = DelayedSubmission.load(pickle)
    countdown = delayed._timeout_countdown - timed_out(started, delayed._timeout_min)
    if countdown < 0:
        return f"it reached its time limit {delayed._timeout_min} min after the " \
               f"hydra.launcher.max_num_timeout requeues it was allowed"
    fresh = launcher.checkpoint(*delayed.args, **{**delayed.kwargs,
                                                 "resume_dir": str(run_dir)})
    fresh.set_timeout(delayed._timeout_min, countdown)
    with temporary_save_path(pickle) as tmp:
        fresh.dump(tmp)
    try:
        subprocess.run(["scontrol", "requeue", env.job_id], check=True, capture_output=True,
                       text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        said = getattr(exc, "stderr", "") or str(exc)
        return f"scontrol requeue failed: {' '.join(said.split())}"
    log.warning("Slurm job %s: checkpoint written, requeued to resume %s (%d more requeue(s) "
                "at the time limit allowed)", env.job_id, run_dir, countdown)
    logging.shutdown()
    sys.exit(-1)  # no result file: the driver waits for the requeued run's
