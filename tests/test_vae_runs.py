"""spiral-vae and ecg-vae on the shared engine: stop signals, bit-exact resume, eval, and one
report over every kind of run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ECG_DIR, FAST, read_metrics, run_dirs

from odecli.cli import report

TINY = ["quiet=true", "train.batch_size=12", "model.latent_dim=2", "model.encoder_width=8",
        "model.ode_width=8", "model.decoder_width=8", "plots.n_examples=2",
        "solver=rk4", "solver.step_size=0.25"]
SPIRAL = [*TINY, "data.n_spirals=24", "data.n_points=30"]
ECG = [*TINY, f"data.dir={ECG_DIR}", "data.max_beats=80", "data.n_points=24"]
FIGURE = {"spiral-vae": "spiral_vae.png", "ecg-vae": "ecg_reconstruction.png"}


def _start(outputs: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}
    return subprocess.Popen([sys.executable, "-m", "odecli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _history(run: Path) -> list[dict[str, str]]:
    """history.csv without the timing column (the only one a resumed run may change)."""
    with open(run / "history.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    return {**state["modules"]["model"], **{f"best.{k}": v
                                             for k, v in state["best"]["model"].items()}}


NITERS = 60  # the signal comes at the first evaluation (iteration 10): 50 iterations (~7 s) of room


@pytest.mark.slow
@pytest.mark.parametrize("command,args,sig,code", [
    ("spiral-vae", SPIRAL, signal.SIGINT, 130),
    ("ecg-vae", ECG, signal.SIGTERM, 143),
])
def test_signal_leaves_a_run_that_resumes_bit_exact(cli, outputs, command, args, sig, code):
    args = [*args, f"train.niters={NITERS}", "train.test_freq=10"]
    proc = _start(outputs, command, *args)
    end = time.monotonic() + 120
    while not list(outputs.rglob("history.csv")):  # the first evaluation has happened
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "training did not start"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"odecli {command} resume=" in err
    (run,) = run_dirs(outputs, command)
    m = read_metrics(run)
    assert m["status"] == "interrupted" and m["interrupted_by"] == signal.Signals(sig).name
    assert 10 <= m["iterations"] < NITERS and m["resume"] == f"odecli {command} resume={run}"
    assert m["reconstruction_mse"] > 0  # the best state so far, tested on held-out data
    for name in ("loss.png", FIGURE[command]):
        assert (run / name).stat().st_size > 1000, name
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == m["iterations"]

    res = cli(command, f"resume={run}")
    assert res.exit_code == 0, res.stderr
    done = read_metrics(run)
    assert done["status"] == "ok" and done["iterations"] == NITERS
    # The interrupted-and-resumed run ends exactly where an uninterrupted one does.
    assert cli(command, *args).exit_code == 0
    (straight,) = [d for d in run_dirs(outputs, command) if d != run]
    assert _history(run) == _history(straight)
    a, b = _weights(run), _weights(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    same = read_metrics(straight)
    for key in ("reconstruction_mse", "best_iteration", "final_loss", "nfe_forward_per_iter"):
        assert done[key] == same[key], key


def test_eval_rescores_a_vae_run_with_another_solver(cli, outputs):
    assert cli("spiral-vae", *SPIRAL, "train.niters=20", "train.test_freq=5").exit_code == 0
    (run,) = run_dirs(outputs, "spiral-vae")
    stored = read_metrics(run)
    res = cli("eval", str(run))
    assert res.exit_code == 0, res.stderr
    assert "reconstruction_mse" in res.stdout
    (same,) = [p.parent for p in run.rglob("eval.json")]
    ev = json.loads((same / "eval.json").read_text())
    # the best state, the same solver, the same held-out spirals: the same numbers
    assert ev["model"] == "best" and ev["best_iteration"] == stored["best_iteration"]
    for key in ("reconstruction_mse", "extrapolation_forward_mse", "extrapolation_backward_mse"):
        assert ev[key] == stored[key], key
    assert (same / "spiral_vae.png").is_file() and (same / "loss.png").is_file()
    res = cli("eval", str(run), "solver=dopri5", "--out", str(outputs / "ev2"))
    assert res.exit_code == 0, res.stderr
    other = json.loads((outputs / "ev2" / "eval.json").read_text())
    assert other["solver"] == "dopri5" and other["reconstruction_mse"] != stored[
        "reconstruction_mse"]
    res = cli("eval", str(run), "system.extrapolate=1.0")
    assert res.exit_code == 2 and "cannot change 'system.extrapolate=1.0'" in res.stderr


def test_report_reads_every_kind_of_run(cli, outputs):
    assert cli("train", *FAST, "plots.enabled=false").exit_code == 0
    for command, args in (("spiral-vae", SPIRAL), ("ecg-vae", ECG)):
        res = cli(command, *args, "train.niters=4", "train.test_freq=2", "plots.enabled=false")
        assert res.exit_code == 0, res.stderr
    res = cli("report", str(outputs), "--out", str(outputs / "report"))
    assert res.exit_code == 0, res.stderr
    with open(outputs / "report" / "report.csv", newline="") as fh:
        table = {row["system"]: row for row in csv.DictReader(fh)}
    assert set(table) == {"spiral", "spirals", "mitdb/100"}
    for row in table.values():
        assert row["status"] == "ok"
        assert float(row["nfe_forward_per_iter"]) > 0 and row["final_loss"] != ""
    items, *_ = report.build([str(outputs)])
    assert len(report.loss_curves(items)) == 3  # a loss curve for each kind of run
    assert (outputs / "report" / "report_loss.png").stat().st_size > 1000
