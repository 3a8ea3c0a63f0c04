"""Shared fixtures: run the CLI in-process with outputs under a temp folder."""

from __future__ import annotations

import json
import os

# scikit-learn's estimator checks (tests/test_sklearn.py) include the array API check, which
# needs SciPy's array API mode, read when SciPy is first imported: set before any import.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from odecli.cli import app

REPO = Path(__file__).resolve().parent.parent
# The ECG tests' data: a five-minute excerpt of MIT-BIH record 100 as mitdb/100.* (see its
# NOTICE.md; tests/data/make_ecg_excerpt.py wrote it), so they run in every clone.
ECG_DIR = REPO / "tests" / "data"

# Few iterations and a short grid: the suite checks behaviour, not fit quality.
FAST = ["train.niters=4", "train.test_freq=2", "gradient=direct", "quiet=true"]


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "outputs"
    monkeypatch.setenv("ODECLI_OUTPUTS", str(out))
    return out


@pytest.fixture
def cli(outputs: Path):
    """Invoke `odecli ARGS...` in this process; returns exit code, stdout and stderr."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        res = runner.invoke(app, list(args), catch_exceptions=False)
        return Result(res.exit_code, res.stdout, res.stderr)

    return invoke


@pytest.fixture
def cli_subprocess(outputs: Path):
    """Invoke `python -m odecli ARGS...` as a real process (exit codes, stderr, signals)."""

    def invoke(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> Result:
        full_env = {**os.environ, "ODECLI_OUTPUTS": str(outputs), **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "odecli", *args], capture_output=True,
                              text=True, env=full_env, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return invoke


def run_dirs(outputs: Path, command: str = "train") -> list[Path]:
    return sorted(p.parent for p in (outputs / command).rglob("metrics.json"))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# ODECLI_CUDA_REHEARSAL=1 runs the `cuda` tests on a machine without a GPU, "cpu" standing in for
# "cuda": the test code itself is exercised here before GPU minutes are spent on it (the
# comparisons are then cpu against cpu). Where a GPU is present the variable changes nothing.
REHEARSAL_ENV = "ODECLI_CUDA_REHEARSAL"


def cuda_rehearsal() -> bool:
    """Whether `cuda` tests run with cpu standing in for cuda (the variable set, no GPU)."""
    import torch

    return os.environ.get(REHEARSAL_ENV) == "1" and not torch.cuda.is_available()


def gpu_name() -> str:
    """The device the `cuda` tests put on trial: "cuda", or "cpu" in a rehearsal."""
    return "cpu" if cuda_rehearsal() else "cuda"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core and one more. The Slurm, signal and subprocess tests spend
    much of their time waiting (the Slurm file: 91 CPU-seconds in 263 s), which left a core
    idle: the full suite took 850 s with 3 workers on 2 cores, against 995-1136 s with 2."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) + 1


def pytest_report_header(config: pytest.Config) -> str | None:
    if cuda_rehearsal():
        return f"{REHEARSAL_ENV}=1: cuda tests run with cpu standing in for cuda (a rehearsal)"
    return None


# The files that take longest (most of it waiting on processes, signals and a real Slurm
# cluster) are handed to the workers first, so the short files fill in around them rather
# than leaving them to run alone at the end (pytest-xdist sends files in collection order).
LONGEST_FIRST = ("test_slurm.py", "test_own_data_runs.py", "test_edges.py", "test_vae_runs.py",
                 "test_export.py", "test_checkpoint_problems.py", "test_docs.py",
                 "test_ensemble.py", "test_tracking.py", "test_claims.py", "test_sweeps.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FIRST; the order within a file kept). Tests marked
    `cuda` run only where a GPU is present (the device machine), or in a rehearsal
    (ODECLI_CUDA_REHEARSAL=1)."""
    import torch

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every other file keeps its place
    if torch.cuda.is_available() or cuda_rehearsal():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
