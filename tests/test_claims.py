"""Nothing lost: a folder that holds a run is never overwritten, two processes never share a
folder, a crashed run's folder can be resumed, and names from the config stay in their
folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST

from odecli.errors import OdecliError
from odecli.launch import claims


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _popen(outputs: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}
    return subprocess.Popen([sys.executable, "-m", "odecli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_finished_run_is_never_overwritten(cli, outputs, tmp_path):
    run = tmp_path / "X"
    assert cli("train", *FAST, "train.niters=6", f"hydra.run.dir={run}").exit_code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    res = cli("train", *FAST, "train.niters=2", f"hydra.run.dir={run}")
    assert res.exit_code == 2
    line = _one_error_line(res.stderr)
    assert f"{run} already holds a run" in line and f"resume={run}" in line
    assert "--overwrite" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # --overwrite moves the old run aside (nothing deleted) and starts afresh
    res = cli("train", *FAST, "train.niters=2", f"hydra.run.dir={run}", "--overwrite")
    assert res.exit_code == 0, res.stderr
    (aside,) = tmp_path.glob("X.replaced-*")
    assert _metrics(aside)["iterations"] == 6 and _metrics(run)["iterations"] == 2
    assert "moved the earlier run" in res.stderr


@pytest.mark.slow
def test_two_processes_racing_for_one_folder(outputs, tmp_path):
    run = tmp_path / "race"
    args = ["train", *FAST, "train.niters=60", "train.test_freq=20", f"hydra.run.dir={run}"]
    procs = [_popen(outputs, *args) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    (loser,) = [err for code, err in results if code == 2]
    assert "in use by a running odecli command" in loser or "already holds a run" in loser
    m = _metrics(run)
    assert m["status"] == "ok" and m["iterations"] == 60
    log = (run / "train.log").read_text()
    assert log.count("iter 0 ") == 1  # one run's log, not two interleaved


def test_a_live_claim_keeps_everyone_else_out(cli, outputs, tmp_path):
    run = tmp_path / "held"
    with claims.claim(run, "train"):
        res = cli("train", *FAST, f"hydra.run.dir={run}")
        assert res.exit_code == 2
        assert "is in use by a running odecli command (pid" in _one_error_line(res.stderr)
        with pytest.raises(OdecliError, match="in use"):
            with claims.claim(run, "train", resume=True):
                pass
    assert not (run / "metrics.json").exists()


@pytest.mark.slow
def test_a_killed_run_can_be_resumed(cli, outputs):
    proc = _popen(outputs, "train", *FAST, "train.niters=3000", "train.test_freq=10",
                  "train.checkpoint_every=10")
    end = time.monotonic() + 120
    while not list(outputs.rglob("checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no handler, no clean-up: only the kernel's lock release
    proc.wait(timeout=60)
    (run,) = [p.parent for p in outputs.rglob("checkpoint.pt")]
    assert (run / claims.LOCK).exists()
    res = cli("train", f"resume={run}", "train.niters=20")
    assert res.exit_code == 0, res.stderr
    assert _metrics(run)["iterations"] == 20


def test_a_sweep_folder_with_earlier_jobs_is_refused_up_front(cli, outputs, tmp_path):
    sweep = tmp_path / "S"
    args = ["train", "-m", "seed=0,1", *FAST, "plots.enabled=false", f"hydra.sweep.dir={sweep}"]
    assert cli(*args).exit_code == 0
    first = _metrics(sweep / "0")["final_loss"]
    res = cli(*args[:2], "seed=5,6", *args[3:])
    assert res.exit_code == 2
    assert "already holds 2 job folder(s) of an earlier sweep" in _one_error_line(res.stderr)
    assert _metrics(sweep / "0")["final_loss"] == first
    res = cli(*args, "--overwrite")
    assert res.exit_code == 0, res.stderr
    (aside,) = tmp_path.glob("S.replaced-*")
    assert _metrics(aside / "0")["final_loss"] == first


@pytest.mark.parametrize("record", ["../../x", "/etc/passwd", "a/b/c", ".."])
def test_record_names_cannot_leave_their_folder(cli, outputs, tmp_path, record):
    res = cli("ecg-vae", f"data.record={record}", f"data.cache_dir={tmp_path / 'cache'}",
              "data.download=false")
    assert res.exit_code == 2
    assert "data.record must be a plain name" in _one_error_line(res.stderr)
    assert not (tmp_path / "cache").exists() and not (outputs / "ecg-vae").exists()


def test_relative_data_folders_are_stored_absolute(cli, outputs, monkeypatch, tmp_path):
    from conftest import ECG_DIR

    monkeypatch.chdir(ECG_DIR.parent.parent)  # the repository root: tests/data is relative
    args = ["ecg-vae", "data.dir=tests/data", "data.max_beats=60", "data.n_points=16",
            "train.niters=2", "train.test_freq=1", "train.batch_size=8", "model.latent_dim=2",
            "model.encoder_width=4", "model.ode_width=4", "model.decoder_width=4", "quiet=true",
            "plots.enabled=false"]
    assert cli(*args).exit_code == 0
    (run,) = [p.parent for p in (outputs / "ecg-vae").rglob("metrics.json")]
    stored = (run / ".hydra" / "overrides.yaml").read_text()
    assert str(ECG_DIR) in stored
    monkeypatch.chdir(tmp_path)  # somewhere else: eval still finds the record
    res = cli("eval", str(run), "--out", str(tmp_path / "ev"))
    assert res.exit_code == 0, res.stderr


def test_resume_with_the_wrong_command_names_the_right_one(cli, outputs):
    assert cli("train", *FAST, "train.niters=2").exit_code == 0
    (run,) = [p.parent for p in (outputs / "train").rglob("metrics.json")]
    res = cli("spiral-vae", f"resume={run}")
    assert res.exit_code == 2
    assert f"is a 'train' run; continue it with odecli train resume={run}" in res.stderr


def test_a_diverged_state_is_one_line_not_a_tensor():
    from odecli.numerics.solve import translate_failure

    exc = AssertionError("non-finite values in state `y`: tensor([[nan, nan],\n [nan, nan]])")
    err = translate_failure(exc)
    assert str(err) == "solver failed: the state became NaN or Inf" and "lower" in err.hint
