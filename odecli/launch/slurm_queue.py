"""Watching a sweep's Slurm jobs from the driver until every one has ended.

submitit waits on each job in turn and raises when one has no result (a cancelled job
aborts the whole sweep), and it reads states only through `sacct`, which needs accounting.
Here every job is followed through `squeue` (any cluster) and its result file, `sacct` only
tells the final state of a job that already left the queue: a job that dies without a result
is reported (cancelled, preempted, node failure, time limit, out of memory) and the others
are still collected; a pending reason that can never clear stops the sweep at once; and the
driver returns only when no job of the sweep is left in the queue.

`<sweep>/slurm_jobs.json` records each job's Slurm id and final state for the summary and for
`resume=`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from odecli.engine.rundir import write_json

log = logging.getLogger("odecli")

RECORD = "slurm_jobs.json"
# States of a job still in the queue (it may yet run, or run again after a requeue).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
          "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD",
          "STOPPED", "SPECIAL_EXIT"}
# Why Slurm keeps a job pending when the request itself can never be met.
NEVER = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
         "DependencyNeverSatisfied", "InvalidAccount", "InvalidQOS", "AccountNotAllowed",
         "QOSNotAllowed"}
STATE_WORDS = {
    "CANCELLED": "cancelled", "TIMEOUT": "stopped at its time limit",
    "PREEMPTED": "preempted", "NODE_FAIL": "its node failed",
    "BOOT_FAIL": "its node failed to boot",
    "OUT_OF_MEMORY": "out of memory", "FAILED": "the job failed", "DEADLINE": "past its deadline",
    "COMPLETED": "ended without a result",
}
GRACE_S = 15.0  # a result file may appear late on a network filesystem (submitit waits 15 s)


def never_clears(reason: str) -> bool:
    """True for a pending reason the job itself causes: no wait will ever start it."""
    return reason in NEVER or "PerJob" in reason or reason.startswith("Invalid")


def _run(argv: list[str], timeout: float = 30) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def queue_states(array_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """`job id -> (state, reason)` for the jobs still known to slurmctld (finished ones stay
    there for MinJobAge, 300 s by default); None when squeue cannot be reached."""
    if not array_ids:
        return {}
    out = _run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r",
                "--jobs", ",".join(sorted(set(array_ids)))])
    if out is None:
        return None
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def accounted_state(job_id: str) -> str | None:
    """The final state from accounting (`sacct`), or None where accounting is off."""
    out = _run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                "--jobs", job_id])
    for line in (out or "").splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id and state:
            return state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return None


def cancel(job_ids: Sequence[str]) -> None:
    """scancel: running jobs get SIGTERM (they checkpoint and stop), pending ones never start."""
    if job_ids:
        _run(["scancel", *sorted({j.split("_")[0] for j in job_ids})])


@dataclass
class Ended:
    """How one job of the sweep ended, as the driver saw it."""

    num: int
    slurm_id: str
    state: str = ""        # Slurm's final state, or "" when unknown
    result: str = ""       # "ok", "failed: ...", "interrupted", "none" (no result), "error"
    detail: str = ""       # the failure's text (a crash's last line, sbatch's words)
    value: Any = None      # what the job returned (the task function's value)

    def reason(self) -> str:
        """This job's part of the "N job(s) failed" summary."""
        where = f"Slurm job {self.slurm_id}" + (f" {self.state}" if self.state else "")
        if self.result == "none":
            words = STATE_WORDS.get(self.state, "left the queue without a result "
                                    "(Slurm accounting is off, so its final state is unknown)")
            return f"{words}, no result ({where})"
        return f"{self.detail or self.result} ({where})"


class Watch:
    """Follows the jobs until each has left the queue, with its result or without one."""

    def __init__(self, jobs: Sequence[Any], nums: Sequence[int],
                 read_result: Callable[[Any], Ended], sweep_dir: Path, poll_s: float = 1.0,
                 max_queue_poll_s: float = 30.0,
                 on_end: Callable[[Ended, int, int], None] | None = None) -> None:
        self.jobs = dict(zip(nums, jobs, strict=True))
        self.on_end = on_end  # told of each job that ended: (job, how many ended, of how many)
        self.read_result = read_result
        self.sweep_dir = Path(sweep_dir)
        self.poll_s, self.max_queue_poll_s = poll_s, max_queue_poll_s
        self.ended: dict[int, Ended] = {}      # final: the job left the queue
        self.results: dict[int, tuple[Ended, float]] = {}  # a result, the job still ending
        self.last_state: dict[int, tuple[str, str]] = {}
        self.gone_since: dict[int, float] = {}
        self.started = time.monotonic()
        self.record()

    def ids(self, only_open: bool = True) -> list[str]:
        return [j.job_id for n, j in self.jobs.items() if not only_open or n not in self.ended]

    def record(self) -> None:
        """slurm_jobs.json: this launch's jobs, beside those of earlier launches (a continued
        sweep runs only some of its jobs)."""
        data = {str(n): v for n, v in read_record(self.sweep_dir).items()}
        for n, job in self.jobs.items():
            ended = asdict(self.ended[n]) if n in self.ended else {}
            data[str(n)] = {"slurm_id": job.job_id, **{k: ended.get(k, "") for k in
                                                       ("state", "result", "detail")}}
        with contextlib.suppress(OSError):
            write_json(self.sweep_dir / RECORD, {"jobs": dict(sorted(data.items(),
                                                                     key=lambda kv: int(kv[0])))})

    def _queue_every(self) -> float:
        if all(n in self.results for n in self.jobs if n not in self.ended):
            return 1.0  # only waiting for jobs that have their result to leave the queue
        return min(self.max_queue_poll_s, max(2.0, (time.monotonic() - self.started) / 10))

    def run(self) -> dict[int, Ended]:
        """Block until every job has ended; raises OdecliError, after cancelling the sweep's
        jobs, for a request Slurm never starts."""
        from odecli.errors import OdecliError

        last_queue = -math.inf
        while len(self.ended) < len(self.jobs):
            for num, job in self.jobs.items():
                if (num not in self.ended and num not in self.results
                        and job.paths.result_pickle.exists()):
                    self.results[num] = (self.read_result(job), time.monotonic())
            now = time.monotonic()
            if now - last_queue >= self._queue_every():
                last_queue = now
                blocked = self._check_queue(now)
                if blocked is not None:
                    num, reason = blocked
                    cancel(self.ids(only_open=False))
                    raise OdecliError(
                        f"Slurm will never start job {num} ({self.jobs[num].job_id}): it is "
                        f"pending with reason {reason}, a request the partition cannot meet; "
                        f"the sweep's jobs are cancelled. {_pending_hint(reason)}")
            if len(self.ended) < len(self.jobs):
                time.sleep(self.poll_s)
        self.record()
        return self.ended

    def _end(self, num: int, ended: Ended, state: str) -> None:
        final = state if state and state not in ACTIVE else ""
        if not final:  # no longer in the queue: accounting knows, where there is accounting
            final = accounted_state(self.jobs[num].job_id) or ""
        ended.num, ended.slurm_id = num, self.jobs[num].job_id
        ended.state = "" if final in ACTIVE else final
        self.ended[num] = ended
        self.results.pop(num, None)
        self.record()
        if self.on_end is not None:
            self.on_end(ended, len(self.ended), len(self.jobs))

    def _check_queue(self, now: float) -> tuple[int, str] | None:
        states = queue_states(self.ids())
        if states is None:  # slurmctld unreachable: keep waiting, it may come back
            log.warning("squeue failed; still waiting for the sweep's jobs")
            return None
        for num, job in self.jobs.items():
            if num in self.ended:
                continue
            state, reason = states.get(job.job_id, ("", ""))
            if state:
                self.last_state[num] = (state, reason)
            if num in self.results:
                result, since = self.results[num]
                if result.result == "interrupted" and state in ("PENDING", "REQUEUED"):
                    # Slurm requeued it after it stopped (preemption with requeue): the next
                    # run resumes from the checkpoint and writes a new result
                    with contextlib.suppress(OSError):
                        job.paths.result_pickle.unlink()
                    del self.results[num]
                elif state not in ACTIVE or now - since >= GRACE_S:
                    self._end(num, result, state)
                continue
            if state == "PENDING" and never_clears(reason):
                return num, reason
            if state in ACTIVE:
                self.gone_since.pop(num, None)
                continue
            # ended, or aged out of the queue: its result file may still be on its way
            since = self.gone_since.setdefault(num, now)
            if now - since >= GRACE_S and not job.paths.result_pickle.exists():
                self._end(num, Ended(num, job.job_id, result="none"),
                          state or self.last_state.get(num, ("", ""))[0])
        return None


def _pending_hint(reason: str) -> str:
    if reason == "PartitionTimeLimit" or "WallDuration" in reason:
        return "Lower hydra.launcher.timeout_min (`sinfo -s` shows each partition's limit)"
    if reason in ("PartitionConfig", "PartitionNodeLimit") or "PerJob" in reason:
        return ("Ask for what the partition allows: hydra.launcher.timeout_min, cpus_per_task, "
                "mem_gb, gpus_per_node (`sinfo -o '%P %l %c %m %G'` lists them)")
    if "Account" in reason or "QOS" in reason:
        return "Check hydra.launcher.additional_parameters (account, qos) with your admins"
    return "`scontrol show partition` and `sinfo -s` show what the cluster allows"


def read_record(sweep_dir: Path) -> dict[int, dict[str, str]]:
    """What `slurm_jobs.json` says about each job number (empty when there is none)."""
    try:
        data = json.loads((Path(sweep_dir) / RECORD).read_text())
        return {int(k): dict(v) for k, v in data.get("jobs", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}
