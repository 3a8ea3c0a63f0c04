"""Sweeps on a real Slurm cluster: a single-node one on localhost (tests/slurm_cluster.py:
munged, MariaDB, slurmdbd, slurmctld, slurmd), no mock. What is refused before any folder
exists, a happy sweep as a non-root user, a failing value, jobs cancelled or killed midway,
Ctrl-C on the driver, and jobs at their one-minute time limit (Slurm's minimum) with and
without torch.compile, continued by requeue and by the printed `resume=`.

The time-limit sweeps take minutes: the first test starts them, the others run meanwhile,
and the last one checks them. Skipped only where Slurm is not installed or cannot start
(CI installs it and fails on any such skip).
"""

from __future__ import annotations

import csv
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import slurm_cluster
from conftest import REPO, read_metrics

pytestmark = pytest.mark.slow

SLURM = ["hydra/launcher=slurm", "hydra.launcher.mem_gb=1"]
BASE = ["gradient=direct", "quiet=true", "plots.enabled=false", "system.data_size=60"]
TINY = [*BASE, "train.niters=4", "train.test_freq=2", "solver.compile=false"]
RUNNING = [*BASE, "train.niters=150", "train.test_freq=25", "solver.compile=false"]
LONG = [*BASE, "train.niters=100000", "train.test_freq=50"]


@pytest.fixture(scope="session")
def slurm():
    """The cluster for the whole session, its SLURM_CONF in os.environ. Its folder is one
    that every user can reach (jobs also run as a non-root user)."""
    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="odecli-slurm-"))
    try:
        cluster = slurm_cluster.start(folder)
    except RuntimeError as exc:
        pytest.skip(f"the Slurm test cluster cannot start here: {exc}")
    quick = slurm_cluster.QuickRequeue(cluster)
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    quick.stop()
    subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)
    slurm_cluster.stop(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved


def drive(outputs: Path, *args: str, env: dict[str, str] | None = None,
          user: str | None = None) -> subprocess.Popen:
    """`python -m odecli ARGS` as its own process (a sweep driver), as `user` if given."""
    argv = [sys.executable, "-m", "odecli", *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.Popen(argv, env={**os.environ, "ODECLI_OUTPUTS": str(outputs),
                                       **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the driver did not finish in {timeout} s: {err[-2000:]}")
    return proc.returncode, err


def error_line(err: str) -> str:
    """The one `error:` line a failed command prints (notes may come before it)."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("note:", "["))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


def wait_for(predicate, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def iterations(run: Path) -> list[int]:
    with open(run / "history.csv", newline="") as fh:
        return [int(row["iteration"]) for row in csv.DictReader(fh)]


def continuous(run: Path, niters: int, every: int) -> bool:
    """history.csv holds each evaluation once, none missing: nothing lost or repeated."""
    return iterations(run) == sorted(set(range(0, niters, every)) | {niters})


def queued(*array_ids: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"],
                         capture_output=True, text=True).stdout.split()
    return [j for j in out if j.split("_")[0] in array_ids]


def slurm_ids(sweep: Path) -> dict[int, str]:
    import json

    data = json.loads((sweep / "slurm_jobs.json").read_text())["jobs"]
    return {int(k): v["slurm_id"] for k, v in data.items()}


@pytest.fixture(scope="module")
def time_limits(slurm, tmp_path_factory):
    """Two sweeps whose job reaches its one-minute time limit: `warned` (Slurm warns 20 s
    ahead, often while torch.compile compiles the first step; the job may requeue once) and
    `hard` (no warning: the limit's own SIGTERM, twice; without torch.compile)."""
    out = tmp_path_factory.mktemp("time-limits")
    limit = [*SLURM, *LONG, "hydra.launcher.timeout_min=1"]
    procs = {
        "warned": drive(out, "train", "-m", "solver.compile=true", *limit,
                        "hydra.launcher.signal_delay_s=20", "hydra.launcher.max_num_timeout=1",
                        f"hydra.sweep.dir={out / 'warned'}"),
        "hard": drive(out, "train", "-m", "solver.compile=false", *limit,
                      "hydra.launcher.signal_delay_s=0", "hydra.launcher.max_num_timeout=0",
                      f"hydra.sweep.dir={out / 'hard'}"),
    }
    yield out, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_the_time_limit_sweeps_start(time_limits):
    out, procs = time_limits
    wait_for(lambda: all((out / name / "slurm_jobs.json").exists() for name in procs) or
             any(p.poll() is not None for p in procs.values()), 120, "submission")
    assert all(p.poll() is None for p in procs.values())


def test_the_shipped_slurm_config_fits_a_cpu_node(slurm, tmp_path):
    from omegaconf import OmegaConf

    from odecli.launch.slurm import sbatch_script

    launcher = OmegaConf.load(REPO / "configs" / "hydra" / "launcher" / "slurm.yaml")
    launcher.pop("defaults")
    script = sbatch_script(launcher, 2, tmp_path)
    assert "gpus" not in script and "gres" not in script and "--partition" not in script
    for flag in ("--cpus-per-task=1", "--mem=4GB", "--time=60", "--signal=USR2@120",
                 "--array=0-1%2"):
        assert f"#SBATCH {flag}" in script, script


@pytest.mark.parametrize("override,message", [
    ("hydra.launcher.gpus_per_node=1", "Invalid generic resource (gres) specification"),
    ("hydra.launcher.cpus_per_task=64", "Requested node configuration is not available"),
    ("hydra.launcher.partition=gpu", "invalid partition specified: gpu"),
    ("device=cuda", "device=cuda on Slurm needs a GPU per job"),
])
def test_what_slurm_refuses_is_one_line_before_any_folder(slurm, cli, outputs, override,
                                                         message):
    res = cli("train", "-m", "seed=0,1", *SLURM, override, *TINY)
    assert res.exit_code == 2
    assert message in error_line(res.stderr)
    assert not outputs.exists() or not any(outputs.rglob("*"))


def test_a_pending_reason_that_never_clears_is_an_error_at_once(slurm, cli, outputs):
    # the short partition allows one minute: sbatch accepts the job, Slurm never starts it
    start = time.monotonic()
    res = cli("train", "-m", "seed=0,1", *SLURM, "hydra.launcher.partition=short",
              "hydra.launcher.timeout_min=5", *TINY)
    assert res.exit_code == 2, res.stderr
    line = error_line(res.stderr)
    assert re.search(r"pending with reason Partition(TimeLimit|Config)", line), line
    assert "the sweep's jobs are cancelled" in line and "timeout_min" in line
    assert time.monotonic() - start < 60
    (sweep,) = (p.parent for p in outputs.rglob("slurm_jobs.json"))
    array = slurm_ids(sweep)[0].split("_")[0]
    wait_for(lambda: not queued(array), 30, "the cancelled jobs to leave the queue")


def test_a_sweep_run_by_a_non_root_user(slurm, cli, tmp_path):
    user = slurm_cluster.ensure_user()
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    os.chown(outputs, user.pw_uid, user.pw_gid)
    with slurm_cluster.reachable_by(user.pw_name, [Path(sys.executable), REPO, outputs]):
        proc = drive(outputs, "train", "-m", "seed=0,1", *SLURM, *TINY, user=user.pw_name)
        rc, err = finish(proc)
    assert rc == 0, err
    (sweep,) = (p.parent for p in outputs.rglob("slurm_jobs.json"))
    ids = slurm_ids(sweep)
    assert len({i.split("_")[0] for i in ids.values()}) == 1 and len(ids) == 2  # one array
    for job in ("0", "1"):
        run = sweep / job
        assert read_metrics(run)["status"] == "ok" and continuous(run, 4, 2)
        for name in ("metrics.json", "history.csv", "checkpoint.pt"):
            st = (run / name).stat()
            assert st.st_uid == user.pw_uid and st.st_mode & 0o777 == 0o644, name
    res = cli("report", str(sweep), "--no-plots")
    assert res.exit_code == 0, res.stderr
    assert len((sweep / "report.csv").read_text().splitlines()) == 3


def test_a_failing_value_fails_its_job_only(slurm, cli, outputs):
    res = cli("train", "-m", "+solver.options.max_num_steps=10000,1", *SLURM, *TINY)
    assert res.exit_code == 1
    line = error_line(res.stderr)
    assert line.startswith("error: 1 job(s) failed: job 1: failed: solver failed")
    assert "max_num_steps exceeded" in line and "resume=" not in line
    assert "Error executing job" not in res.stderr and "Traceback" not in res.stderr
    (sweep,) = (p.parent for p in outputs.rglob("slurm_jobs.json"))
    assert read_metrics(sweep / "0")["status"] == "ok"


def test_cancelled_and_killed_jobs_do_not_stop_the_sweep(slurm, tmp_path):
    """Job 0 is cancelled (scancel: it checkpoints), job 1's process is killed (no result,
    and no accounting to ask: a fake sacct fails), job 2 runs on and is collected; the lock
    is held until it ends. resume= then finishes 0 and 1 on Slurm."""
    outputs, sweep = tmp_path / "outputs", tmp_path / "sweep"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is "
                                "disabled' >&2\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    proc = drive(outputs, "train", "-m", "seed=0,1,2", *SLURM, *RUNNING,
                 f"hydra.sweep.dir={sweep}", env=env)
    wait_for(lambda: all((sweep / j / "history.csv").exists() for j in "012")
             or proc.poll() is not None, 180, "the three jobs to train")
    ids = slurm_ids(sweep)
    subprocess.run(["scancel", ids[0]], check=True)
    pids = slurm_cluster.job_pids(slurm, ids[1])
    assert pids
    for pid in pids:  # as the kernel's OOM killer or a crashed node would
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (sweep / "0" / "metrics.json").exists(), 60, "job 0 to checkpoint")
    assert read_metrics(sweep / "0")["status"] == "interrupted"
    assert proc.poll() is None and not (sweep / "2" / "metrics.json").exists()
    with open(sweep / ".odecli.lock") as fh, pytest.raises(OSError):  # held by the driver
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    rc, err = finish(proc)
    assert rc == 1, err
    line = error_line(err)
    assert "2 job(s) failed: job 0: interrupted by SIGTERM" in line
    assert f"job 1: the job failed, no result (Slurm job {ids[1]} FAILED)" in line
    assert f"resume={sweep}" in line and "Traceback" not in err
    assert read_metrics(sweep / "2")["status"] == "ok"
    done = (sweep / "2" / "metrics.json").read_bytes()

    rc, err = finish(drive(outputs, "train", f"resume={sweep}"))
    assert rc == 0, err
    assert "job(s) resume from their checkpoint" in err
    for job in ("0", "1"):
        assert read_metrics(sweep / job)["status"] == "ok" and continuous(sweep / job, 150, 25)
    assert (sweep / "2" / "metrics.json").read_bytes() == done
    new = slurm_ids(sweep)
    assert new[2] == ids[2] and new[0] != ids[0]  # resumed as new Slurm jobs, 2 untouched


def test_ctrl_c_on_the_driver_cancels_the_sweeps_jobs(slurm, tmp_path):
    outputs, sweep = tmp_path / "outputs", tmp_path / "sweep"
    proc = drive(outputs, "train", "-m", "seed=0,1", *SLURM, *LONG, "solver.compile=false",
                 f"hydra.sweep.dir={sweep}")
    wait_for(lambda: all((sweep / j / "history.csv").exists() for j in "01")
             or proc.poll() is not None, 180, "both jobs to train")
    array = slurm_ids(sweep)[0].split("_")[0]
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc, 120)
    assert rc == 130, err
    assert "cancelled 2 Slurm job(s)" in err and f"resume={sweep}" in err
    assert "Traceback" not in err and not queued(array)  # every job ended before the exit
    for job in ("0", "1"):
        m = read_metrics(sweep / job)
        assert m["status"] == "interrupted" and m["interrupted_by"] == "SIGTERM"
        assert (sweep / job / "checkpoint.pt").is_file()

    # A second Ctrl-C leaves at once; the jobs are cancelled all the same.
    proc = drive(outputs, "train", f"resume={sweep}")
    wait_for(lambda: slurm_ids(sweep)[0].split("_")[0] != array or proc.poll() is not None,
             120, "the continued sweep to be submitted")
    array = slurm_ids(sweep)[0].split("_")[0]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc, 10)
    assert rc == 130 and "Traceback" not in err, err
    pending_or_running = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=PENDING,RUNNING", "--format=%i"],
        capture_output=True, text=True).stdout.split()
    assert not [j for j in pending_or_running if j.startswith(f"{array}_")]


def test_jobs_at_their_time_limit_lose_nothing(time_limits, tmp_path):
    out, procs = time_limits
    rc, err = finish(procs["warned"], 420)
    assert rc == 1, err
    line = error_line(err)
    warned = out / "warned"
    assert line.startswith("error: 1 job(s) failed: job 0: interrupted by SIGUSR2")
    assert f"resume={warned}" in line and "Traceback" not in err
    m = read_metrics(warned / "0")
    assert m["status"] == "interrupted" and m["interrupted_by"] == "SIGUSR2"
    assert (warned / "0" / ".hydra" / "before-resume-1").is_dir()  # requeued, resumed
    log = (warned / "0" / "train.log").read_text()
    assert "requeued to resume" in log and "not requeued" in log

    rc, err = finish(procs["hard"], 300)
    assert rc == 1, err
    hard = out / "hard"
    line = error_line(err)
    assert line.startswith("error: 1 job(s) failed: job 0: interrupted by SIGTERM (Slurm job")
    assert "TIMEOUT)" in line
    m = read_metrics(hard / "0")
    assert m["status"] == "interrupted" and m["iterations"] > 0 and "error_rel" in m
    errors = "".join(p.read_text() for p in (hard / ".submitit").rglob("*_log.err"))
    assert "KeyboardInterrupt" not in errors and "Traceback" not in errors

    # the printed command continues each sweep on Slurm, to a few iterations further
    resumed = {}
    for name, sweep in (("warned", warned), ("hard", hard)):
        reached = max(read_metrics(run)["iterations"] for run in sweep.glob("[0-9]"))
        resumed[name] = (reached + 60, drive(out, "train", f"resume={sweep}",
                                             f"train.niters={reached + 60}",
                                             "hydra.launcher.timeout_min=5"))
    for name, (niters, proc) in resumed.items():
        rc, err = finish(proc)
        assert rc == 0, err
        for run in (out / name).glob("[0-9]"):
            m = read_metrics(run)
            assert m["status"] == "ok" and m["iterations"] == niters
            assert continuous(run, niters, 50), iterations(run)
