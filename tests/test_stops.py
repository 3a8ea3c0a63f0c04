"""Stopping without losing anything: repeated signals, a launcher's early stop signal, and
file modes that colleagues can read."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import read_metrics

from odecli.engine import rundir, signals

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
