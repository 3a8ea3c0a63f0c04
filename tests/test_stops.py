"""Stopping without losing anything, on any launcher: repeated signals, a launcher's early stop
signal, file modes that colleagues can read, and continuing a sweep in its own folder.
(The same behaviours against a real Slurm cluster: tests/test_slurm.py.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import read_metrics

from odecli.engine import rundir, signals
from odecli.launch.slurm_queue import never_clears
from odecli.launch.sweeps import failure_message

QUICK = ["train.niters=4", "train.test_freq=2", "gradient=direct", "quiet=true",
         "plots.enabled=false", "system.data_size=60"]


def test_a_repeated_sigterm_is_no_keyboard_interrupt_but_a_second_ctrl_c_is():
    with signals.stop_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm's second SIGTERM, 8 ms later
        assert stop.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_job_stop_signal_before_training_stops_at_the_first_step(cli, outputs):
    with signals.job_stop_signals((signal.SIGUSR2,)):
        os.kill(os.getpid(), signal.SIGUSR2)  # Slurm's warning, while the job still imports
        res = cli("train", *QUICK)
    assert res.exit_code == 128 + signal.SIGUSR2, res.stderr
    assert "interrupted by SIGUSR2 at iteration 0" in res.stderr
    (run,) = (p.parent for p in outputs.rglob("metrics.json"))
    m = read_metrics(run)
    assert m["status"] == "interrupted" and m["interrupted_by"] == "SIGUSR2"
    assert m["iterations"] == 0 and (run / "checkpoint.pt").is_file()
    # outside a job, USR2 is no stop signal: the engine leaves its handler alone
    assert signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None)
    # resumed from iteration 0, the run evaluates iteration 0 once, not again
    assert cli("train", f"resume={run}").exit_code == 0
    assert [row["iteration"] for row in rundir.History.read(run / "history.csv")] == [0, 2, 4]


def _broken_by_the_signal(monkeypatch, method: str, when: int) -> None:
    """`DynamicsExperiment.METHOD`'s call number `when` gets Slurm's warning and then fails,
    as torch.compile does when the same signal killed the C++ compiler it had started."""
    from odecli.dynamics.experiment import DynamicsExperiment

    original, calls = getattr(DynamicsExperiment, method), []

    def broken(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == when:
            os.kill(os.getpid(), signal.SIGUSR2)
            raise RuntimeError("CppCompileError: C++ compile error (g++ killed by SIGUSR2)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamicsExperiment, method, broken)


@pytest.mark.parametrize("method,when,reached", [
    ("loss", 3, 2),  # the third training step breaks
    ("evaluate", 3, 4),  # the evaluation at iteration 4 (test_freq 2) breaks
])
def test_a_step_the_stop_signal_broke_is_an_interruption_resume_continues(
        cli, outputs, monkeypatch, method, when, reached):
    quick = [o for o in QUICK if not o.startswith("train.niters")] + ["train.niters=6"]
    with monkeypatch.context() as patch:
        _broken_by_the_signal(patch, method, when)
        with signals.job_stop_signals((signal.SIGUSR2,)):
            res = cli("train", *quick)
    assert res.exit_code == 128 + signal.SIGUSR2, res.stderr
    assert f"interrupted by SIGUSR2 at iteration {reached} of 6" in res.stderr
    (run,) = (p.parent for p in outputs.rglob("metrics.json"))
    m = read_metrics(run)
    assert m["status"] == "interrupted" and m["iterations"] == reached
    log = (run / "train.log").read_text()
    assert "abandoned (RuntimeError: CppCompileError" in log
    assert cli("train", f"resume={run}").exit_code == 0
    assert read_metrics(run)["status"] == "ok"
    # every evaluation is there once, as in a run never stopped
    assert [row["iteration"] for row in rundir.History.read(run / "history.csv")] == [
        0, 2, 4, 6]


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_run_files_get_the_users_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        assert rundir.current_umask() == mask
        rundir.write_json(tmp_path / "metrics.json", {"status": "ok"})
        rundir.atomic_write_bytes(tmp_path / "checkpoint.pt", b"x")
    finally:
        os.umask(old)
    for name in ("metrics.json", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_runs_files_are_readable_by_the_group_and_others_at_umask_022(cli, outputs):
    old = os.umask(0o022)
    try:
        assert cli("train", *QUICK).exit_code == 0
    finally:
        os.umask(old)
    (run,) = (p.parent for p in outputs.rglob("metrics.json"))
    for name in ("metrics.json", "history.csv", "checkpoint.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("reason,never", [
    ("PartitionConfig", True), ("PartitionTimeLimit", True), ("BadConstraints", True),
    ("QOSMaxCpuPerJobLimit", True), ("AssocMaxWallDurationPerJobLimit", True),
    ("InvalidQOS", True), ("Resources", False), ("Priority", False), ("BeginTime", False),
    ("ReqNodeNotAvail, UnavailableNodes:vm", False), ("AssocGrpCpuLimit", False),
])
def test_pending_reasons_that_never_clear(reason, never):
    assert never_clears(reason) is never


def test_the_failure_line_says_how_to_continue_unfinished_jobs(tmp_path):
    failed = [(str(tmp_path / "1"), "failed: solver failed: max_num_steps exceeded")]
    assert "resume=" not in failure_message("train", tmp_path, failed)
    stopped = failed + [(str(tmp_path / "2"), "interrupted by SIGTERM (Slurm job 7_2 "
                                              "CANCELLED)")]
    text = failure_message("train", tmp_path, stopped)
    assert text.startswith("2 job(s) failed: job 1: failed: solver failed")
    assert text.endswith(f"continue the unfinished job(s) with: odecli train resume={tmp_path}")


def _status(run: Path, status: str) -> None:
    m = read_metrics(run)
    m["status"] = status
    (run / "metrics.json").write_text(json.dumps(m))


@pytest.mark.slow
def test_a_sweep_continues_in_its_own_folder(cli, outputs, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", *QUICK, f"hydra.sweep.dir={sweep}"]
    assert cli("train", *args).exit_code == 0
    kept = {p: p.read_bytes() for p in (sweep / "0").rglob("*") if p.is_file()}
    _status(sweep / "1", "interrupted")  # stopped with a checkpoint (scancel, a time limit)
    for name in ("metrics.json", "checkpoint.pt", "history.csv"):  # cancelled early
        (sweep / "2" / name).unlink()

    res = cli("train", *args)  # the same command again: the unfinished jobs run
    assert res.exit_code == 0, res.stderr
    assert "1 job(s) resume from their checkpoint, 1 start again, 1 finished" in res.stderr
    assert {p: p.read_bytes() for p in (sweep / "0").rglob("*") if p.is_file()} == kept
    assert (sweep / "1" / ".hydra" / "before-resume-1").is_dir()
    assert not (sweep / "2" / ".hydra" / "before-resume-1").exists()
    for job in ("1", "2"):
        m = read_metrics(sweep / job)
        assert m["status"] == "ok" and m["iterations"] == 4

    _status(sweep / "2", "interrupted")
    res = cli("train", f"resume={sweep}", "quiet=true")  # or resume= on the sweep folder
    assert res.exit_code == 0, res.stderr
    assert "1 job(s) resume from their checkpoint, 0 start again, 2 finished" in res.stderr
    assert read_metrics(sweep / "2")["status"] == "ok"


@pytest.mark.parametrize("args,message", [
    ([], "every job of the sweep in"),
    (["model=deep"], "cannot change model"),
])
def test_a_sweep_resume_refuses_what_it_cannot_do(cli, outputs, tmp_path, args, message):
    sweep = tmp_path / "sweep"
    assert cli("train", "-m", "seed=0,1", *QUICK, f"hydra.sweep.dir={sweep}").exit_code == 0
    res = cli("train", f"resume={sweep}", *args)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_another_sweep_in_a_used_sweep_folder_is_still_refused(cli, outputs, tmp_path):
    sweep = tmp_path / "sweep"
    assert cli("train", "-m", "seed=0,1", *QUICK, f"hydra.sweep.dir={sweep}").exit_code == 0
    res = cli("train", "-m", "seed=0,2", *QUICK, f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 2 and "already holds 2 job folder(s)" in res.stderr, res.stderr
