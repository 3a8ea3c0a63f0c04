"""`hydra/launcher=slurm`: Hydra's submitit launcher, made to lose nothing on a real cluster.

Driver side (`SlurmLauncher.launch`): `preflight()` asks `sbatch --test-only` about the exact
request before any folder is made (a GPU on a CPU partition, more CPUs or memory than a node
has, an unknown partition: one line, exit 2); the jobs go out as one array; `slurm_queue.Watch`
follows every job to its end (a cancelled, preempted or node-failed job is reported, the others
are still collected); Ctrl-C cancels the sweep's jobs, which checkpoint, and waits for them to
stop (a second Ctrl-C leaves at once).

Job side (`SlurmLauncher.__call__`, in the Slurm job): Slurm's warning before the time limit
(submitit's `--signal=USR2@signal_delay_s`) and SIGTERM stop training through the engine's
signal flag (checkpoint, `status: interrupted`) instead of submitit's handler, which raises
inside the training loop. After the warning the job requeues itself the way submitit's
checkpointing does (`checkpoint()` -> `scontrol requeue`, at most `max_num_timeout` times for
time limits) and the next run resumes from the checkpoint; a job Slurm itself restarted
(preemption, node failure) resumes too.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as _SubmititSlurmLauncher,
)

from odecli.errors import ConfigError, Interrupted, OdecliError, one_line
from odecli.launch import slurm_queue

log = logging.getLogger("odecli")

# -- before anything is written --------------------------------------------------------------
def _setting(node: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(node, key, throw_on_resolution_failure=True)
    except Exception:
        return None
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _executor_parameters(launcher: Any) -> tuple[dict[str, Any], int]:
    """The launcher node (a config or its resolved dict) as Hydra's submitit launcher hands
    it to submitit: sbatch options, and the requeues allowed at a time limit."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    skip = {"_target_", "submitit_folder", "name", "max_num_timeout"}
    values = ({k: _setting(launcher, k) for k in launcher} if OmegaConf.is_config(launcher)
              else dict(launcher))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {(k if k in base else f"slurm_{k}"): v for k, v in values.items() if k not in skip}
    return params, int(values.get("max_num_timeout") or 0)


def sbatch_script(launcher: Any, n_jobs: int, folder: Path) -> str:
    """The sbatch script submitit would submit for this sweep (logs under `folder`)."""
    import submitit
    from submitit.slurm.slurm import _make_sbatch_string

    params, _ = _executor_parameters(launcher)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**params)
    parameters = dict(executor._executor.parameters)
    if n_jobs > 1:
        parameters["map_count"] = n_jobs
    return _make_sbatch_string(command="true", folder=folder, **parameters)


def preflight(launcher: Any, n_jobs: int, job_cfg: Any) -> None:
    """Refuse, before any folder exists, a sweep Slurm would refuse or never start."""
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise OdecliError("hydra/launcher=slurm needs Slurm's sbatch and srun on PATH; run "
                          "the sweep on a login node of the cluster")
    gpus = [_setting(launcher, k) for k in ("gpus_per_node", "gpus_per_task", "gres")]
    if str(job_cfg.get("device", {}).get("name", "")) == "cuda" and not any(gpus):
        raise ConfigError("device=cuda on Slurm needs a GPU per job: set "
                          "hydra.launcher.gpus_per_node=1 (and a GPU partition)")
    with tempfile.TemporaryDirectory(prefix="odecli-sbatch-") as tmp:
        try:
            script = sbatch_script(launcher, n_jobs, Path(tmp))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"hydra.launcher: {one_line(exc)}") from None
        path = Path(tmp) / "test.sh"
        path.write_text(script)
        try:
            proc = subprocess.run(["sbatch", "--test-only", str(path)], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise OdecliError(f"sbatch --test-only failed: {one_line(exc)}") from None
    if proc.returncode != 0:
        said = [ln.split("error:", 1)[-1].strip() for ln in proc.stderr.splitlines()
                if "error" in ln.lower() or "failure" in ln.lower()] or [proc.stderr.strip()]
        text = "; ".join(dict.fromkeys(s for s in said if s)) or "no reason given"
        hint = _refusal_hint(text, launcher)
        raise OdecliError(f"Slurm refuses the sweep's jobs: {text}. {hint}")


def _refusal_hint(text: str, launcher: Any) -> str:
    low = text.lower()
    part = _setting(launcher, "partition") or "the default partition"
    if "gres" in low or "generic resource" in low:
        return (f"{part} has no such GPUs: drop hydra.launcher.gpus_per_node (CPU jobs) or "
                f"choose a GPU partition with hydra.launcher.partition")
    if "partition" in low:
        return "`sinfo -s` lists the partitions; set hydra.launcher.partition"
    if "node configuration" in low or "memory" in low or "cpu" in low:
        return (f"no node of {part} has cpus_per_task={_setting(launcher, 'cpus_per_task')}, "
                f"mem_gb={_setting(launcher, 'mem_gb')}: lower them (`sinfo -o '%P %c %m %G'` "
                f"lists each partition's nodes)")
    if "time" in low:
        return "lower hydra.launcher.timeout_min (`sinfo -s` shows each partition's limit)"
    return "check the hydra.launcher settings (`odecli train --cfg hydra -p hydra.launcher`)"


# -- the launcher --------------------------------------------------------------------------
@contextlib.contextmanager
def _deferred_sigint() -> Iterator[list[int]]:
    """Hold Ctrl-C while sbatch runs, so every submitted job is known and can be cancelled."""
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda s, f: caught.append(s))
    except ValueError:  # not the main thread
        yield caught
        return
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def _job_num(overrides: Sequence[str], default: int) -> int:
    """A job's number: its `hydra.sweep.subdir` when a continued sweep set one."""
    for o in overrides:
        if o.startswith("hydra.sweep.subdir="):
            with contextlib.suppress(ValueError):
                return int(o.split("=", 1)[1])
    return default


class SlurmLauncher(_SubmititSlurmLauncher):  # type: ignore[misc]
    """Hydra's submitit Slurm launcher with odecli's submission, watching and job handling."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides

        assert self.config is not None
        params, max_timeouts = _executor_parameters(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=max_timeouts)
        executor.update_parameters(**params)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = [_job_num(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        args = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
                for o, n in zip(job_overrides, nums, strict=True)]
        for o, n in zip(job_overrides, nums, strict=True):
            log.info("\t#%d : %s", n, " ".join(filter_overrides(o)))
        with _deferred_sigint() as ctrl_c:
            try:
                jobs = executor.map_array(self, *zip(*args, strict=True))
            except Exception as exc:
                raise OdecliError(f"sbatch refused the sweep's jobs: {_last_line(exc)}") from None
        print(f"note: submitted {len(jobs)} Slurm job(s) ({jobs[0].job_id.split('_')[0]}); "
              f"Ctrl-C cancels them", file=sys.stderr, flush=True)
        quiet = bool(self.config.get("quiet", False))
        watch = slurm_queue.Watch(jobs, nums, _read_result, sweep_dir,
                                  on_end=None if quiet else _tell_end)
        try:
            if ctrl_c:
                raise KeyboardInterrupt
            ended = watch.run()
        except KeyboardInterrupt:
            self._cancel_and_wait(watch, sweep_dir)
        return [self._job_return(ended[n], o) for n, o in zip(nums, job_overrides, strict=True)]

    def _cancel_and_wait(self, watch: slurm_queue.Watch, sweep_dir: Path) -> None:
        """First Ctrl-C: cancel the jobs and wait for them to checkpoint and stop."""
        ids = watch.ids()
        slurm_queue.cancel(ids)
        print(f"note: Ctrl-C: cancelled {len(ids)} Slurm job(s) of the sweep; waiting for them "
              f"to checkpoint and stop (Ctrl-C again to leave now)", file=sys.stderr, flush=True)
        try:
            watch.run()
        except KeyboardInterrupt:
            pass
        stopped = sum(1 for n in watch.jobs
                      if n not in watch.ended or watch.ended[n].result != "ok")
        raise Interrupted(f"interrupted: the sweep's Slurm jobs are cancelled ({stopped} job(s) "
                          f"unfinished); continue them with: odecli {self._command()} "
                          f"resume={sweep_dir}", signal.SIGINT, str(sweep_dir))

    def _command(self) -> str:
        assert self.config is not None
        return str(self.config.hydra.job.name).replace("_", "-")

    def _job_return(self, ended: slurm_queue.Ended, overrides: Sequence[str]) -> Any:
        from hydra.core.utils import JobReturn, JobStatus

        if isinstance(ended.value, JobReturn) and ended.value.status == JobStatus.COMPLETED:
            return ended.value
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        assert self.config is not None
        sweeper = self.config.hydra.sweeper
        if "optuna" in str(sweeper.get("_target_", "")).lower():  # a failed trial: worst value
            ret.return_value = (-float("inf") if "max" in str(sweeper.get("direction", ""))
                                else float("inf"))
        else:
            ret.return_value = {"status": f"failed: {ended.reason()}"}
        return ret

    # -- in the Slurm job ------------------------------------------------------------------
    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[Any, Any], resume_dir: str | None = None) -> Any:
        from odecli.launch import slurm_job

        return slurm_job.run(self, sweep_overrides, job_dir_key, job_num, job_id,
                             singleton_state, resume_dir)


def _tell_end(ended: slurm_queue.Ended, done: int, total: int) -> None:
    """One line per job as it ends, so a long sweep is never a silent wait."""
    if ended.result == "none":
        text = ended.reason()
    else:
        text = re.sub(r"^(failed: )+", "failed: ", ended.detail or ended.result)
        if ended.state and ended.state != "COMPLETED":
            text += f" (Slurm: {ended.state})"
    print(f"note: job {ended.num} ({ended.slurm_id}) ended: {one_line(text, 160)}; {done} of "
          f"{total} ended", file=sys.stderr, flush=True)


def _read_result(job: Any) -> slurm_queue.Ended:
    """A finished job's result file as an `Ended` (the job's JobReturn, or its crash)."""
    ended = slurm_queue.Ended(-1, job.job_id)
    try:
        ended.value = job.results()[0]
    except Exception as exc:  # the job raised: submitit's text carries the traceback
        ended.result, ended.detail = "error", f"the job crashed: {_last_line(exc)}"
        return ended
    from hydra.core.utils import JobStatus

    value = getattr(ended.value, "_return_value", None)
    if getattr(ended.value, "status", JobStatus.COMPLETED) != JobStatus.COMPLETED:
        # the task function raised (a bug, not bad input): Hydra kept the exception
        ended.result, ended.detail = "error", f"the job crashed: {one_line(value)}"
        return ended
    status = value.get("status") if isinstance(value, dict) else None
    ended.result = "interrupted" if status == "interrupted" else str(status or "ok")
    return ended


def _last_line(exc: BaseException) -> str:
    """The telling line of a submitit error: the last non-separator line of its trace."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not set(ln.strip()) <= {"-"}
             and not ln.strip().startswith(("You can check", "or at paths", "- /"))]
    return one_line(lines[-1] if lines else exc)
