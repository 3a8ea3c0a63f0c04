"""Multirun sweeps (basic, joblib, submitit_local), shell-started batches, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_metrics

from odecli.launch.sweeps import SLURM_TARGET, claim_dir, sweep_jobs, thread_share

QUICK = ["train.niters=4", "train.test_freq=2", "gradient=direct", "quiet=true",
         "plots.enabled=false", "system.data_size=60"]


def sweep_runs(outputs: Path) -> list[Path]:
    (sweep,) = (outputs / "multirun").glob("*/*")
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()),
                  key=lambda p: int(p.name))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                           "device.threads=4"]], ids=["basic", "joblib"])
def test_four_job_sweep_and_its_report(cli, outputs, launcher):
    res = cli("train", "-m", "system=spiral,lotka", "seed=0,1", *launcher, *QUICK)
    assert res.exit_code == 0, res.stderr
    jobs = sweep_runs(outputs)
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        m = read_metrics(job)
        assert m["status"] == "ok" and m["iterations"] == 4
        seen.add((m["system"], (job / ".hydra" / "overrides.yaml").read_text().count("seed=1")))
        if launcher:  # each joblib job gets its share of the cores, not device.threads=4
            assert m["environment"]["threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert len(seen) == 4
    res = cli("report", str(jobs[0].parent), "--no-plots")
    assert res.exit_code == 0, res.stderr
    header, *rows = (jobs[0].parent / "report.csv").read_text().splitlines()
    assert header.startswith("run,system,seed,status,error,error_rel,extrap_error_rel")
    assert sorted(r.split(",")[0] for r in rows) == ["0", "1", "2", "3"]


def test_a_failing_job_does_not_stop_the_sweep(cli, outputs):
    res = cli("train", "-m", "seed=0,1", "+solver.options.max_num_steps=10000,1", *QUICK)
    assert res.exit_code == 1
    assert "2 job(s) failed" in res.stderr and "job 1: failed" in res.stderr
    assert "job 3: failed" in res.stderr and "max_num_steps exceeded" in res.stderr
    assert "Error executing job" not in res.stderr  # our one line names every failed job
    statuses = [read_metrics(j)["status"] for j in sweep_runs(outputs)]
    assert statuses[0] == statuses[2] == "ok"
    assert statuses[1].startswith("failed: ") and statuses[3].startswith("failed: ")
    sweep = sweep_runs(outputs)[0].parent
    res = cli("report", str(sweep), "--sort", "error_rel")
    assert res.exit_code == 0, res.stderr
    md = (sweep / "report.md").read_text()
    assert md.count("| failed |") == 2 and "max_num_steps exceeded" in md
    assert (sweep / "report_error.png").exists() and (sweep / "report_loss.png").exists()


@pytest.mark.parametrize("value,message", [
    ("seed=0,abc", "sweep job 1 (seed=abc): seed must be an integer"),
    ("seed=0,[1", "mismatched input"),
    ("system=spiral,nope", "Could not find 'system/nope'"),
])
def test_a_bad_sweep_value_refuses_the_whole_sweep(cli, outputs, value, message):
    res = cli("train", "-m", value, *QUICK)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not list(outputs.rglob(".hydra")) and not list(outputs.rglob("metrics.json"))


@pytest.mark.slow
def test_submitit_local_sweep(cli, outputs):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    res = cli("train", "-m", "seed=0,1", "hydra/launcher=submitit_local", *QUICK)
    assert res.exit_code == 0, res.stderr
    assert [read_metrics(j)["status"] for j in sweep_runs(outputs)] == ["ok", "ok"]


@pytest.mark.slow
def test_parallel_shell_runs_get_distinct_folders(outputs):
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}
    procs = [subprocess.Popen([sys.executable, "-m", "odecli", "train", f"system={s}", *QUICK],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for s in ("spiral", "spiral")]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    found = sorted(p.parent for p in (outputs / "train").rglob("metrics.json"))
    assert len(found) == 2 and all(read_metrics(f)["status"] == "ok" for f in found)


def test_claimed_folders_never_collide(tmp_path):
    made = [claim_dir(tmp_path, "_x") for _ in range(300)]
    assert len(set(made)) == 300 and all(p.is_dir() for p in made)


def test_sweep_expansion_is_the_cartesian_product():
    jobs = sweep_jobs(["system=spiral,lotka", "seed=0,1,2", "quiet=true"])
    assert len(jobs) == 6 and jobs[0] == ["system=spiral", "seed=0", "quiet=true"]


def test_thread_share_per_launcher():
    cpus = os.cpu_count() or 1
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    assert thread_share({**joblib, "n_jobs": -1}) == 1
    assert thread_share({**joblib, "n_jobs": 1}) == cpus
    assert thread_share({**joblib, "n_jobs": 2}) == max(1, cpus // 2)
    assert thread_share({"_target_": "hydra._internal.core_plugins.basic_launcher"}) is None
    assert thread_share({"_target_": "x.submitit.Slurm", "cpus_per_task": 4}) == 4
    assert thread_share({"_target_": SLURM_TARGET, "cpus_per_task": 2}) == 2


def test_slurm_example_config_composes(cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    res = cli("train", "--cfg", "hydra", "--package", "hydra.launcher",
              "hydra/launcher=slurm")
    assert res.exit_code == 0, res.stderr
    # works on a CPU cluster as shipped: the default partition, no GPU, one CPU per job
    for line in (f"_target_: {SLURM_TARGET}", "partition: null", "gpus_per_node: null",
                 "cpus_per_task: 1", "timeout_min: 60", "max_num_timeout: 3"):
        assert line in res.stdout, res.stdout


def test_a_slurm_sweep_without_slurm_is_one_line_and_writes_nothing(cli, outputs,
                                                                    monkeypatch, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    # device=cuda passes the check here (a login node has no GPU): the jobs' nodes check it
    res = cli("train", "-m", "seed=0,1", "hydra/launcher=slurm", "device=cuda", *QUICK)
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "error: hydra/launcher=slurm needs Slurm's sbatch and srun on PATH; run the sweep on "
        "a login node of the cluster"]
    assert not outputs.exists()


def test_sweep_script_is_valid_bash():
    script = REPO / "scripts" / "sweep.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert os.access(script, os.X_OK)


def test_vae_commands_sweep_the_same_way(cli, outputs):
    res = cli("spiral-vae", "-m", "seed=0,1", "train.niters=2", "train.test_freq=2",
              "data.n_spirals=24", "quiet=true", "plots.enabled=false")
    assert res.exit_code == 0, res.stderr
    jobs = sorted(p.parent for p in (outputs / "multirun").rglob("metrics.json"))
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        m = read_metrics(job)
        assert m["status"] == "ok" and m["command"] == "spiral-vae"
        assert "reconstruction_mse" in m
