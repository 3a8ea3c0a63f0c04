"""A stop signal must not wait for a step that never ends (a diverged field the adaptive
solver crawls through): one SIGTERM still checkpoints, records the stop and exits 143."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sigterm_during_a_stuck_step(tmp_path: Path):
    out = tmp_path / "outputs"
    env = {**os.environ, "ODECLI_OUTPUTS": str(out)}
    # lr=1000 blows the field up after a step or two; the solver then crawls, never failing
    # without a step budget (by default solver.max_steps ends it: test_errors.py).
    proc = subprocess.Popen(
        [sys.executable, "-m", "odecli", "train", "train.lr=1000", "train.niters=50",
         "gradient=direct", "quiet=true", "train.test_freq=1", "solver.max_steps=null"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until training has really started
            if list(out.rglob("history.csv")):
                break
            time.sleep(0.2)
        time.sleep(4)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr
    (metrics,) = out.rglob("metrics.json")
    m = json.loads(metrics.read_text())
    assert m["status"] == "interrupted" and m["iterations"] < 50
    assert (metrics.parent / "checkpoint.pt").stat().st_size > 0
    assert (metrics.parent / "phase.png").exists()
