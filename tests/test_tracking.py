"""Trackers (TensorBoard, MLflow) and Optuna searches, with the real libraries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import FAST, run_dirs

QUICK = [*FAST, "system=lotka", "system.data_size=60", "train.niters=6", "train.test_freq=3"]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_tensorboard_holds_every_evaluation_and_the_figures(cli, outputs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = cli("train", *QUICK, "logger=tensorboard")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    errors = events.Scalars("error_rel")
    assert [e.step for e in errors] == [0, 3, 6]
    assert errors[-1].value == pytest.approx(_metrics(run)["error_rel"], rel=1e-6)
    assert {"figures/phase", "figures/loss"} <= set(events.Tags()["images"])
    assert "config/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow
def test_mlflow_run_mirrors_the_run_folder(cli, outputs, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    for _ in range(2):
        res = cli("train", *QUICK, "logger=[mlflow,tensorboard]",
                  f"logger.mlflow.tracking_uri={uri}")
        assert res.exit_code == 0, res.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("train")
    found = client.search_runs([experiment.experiment_id])
    assert len(found) == 2
    for mlrun in found:
        run = Path(mlrun.data.tags["odecli.run_dir"])
        assert mlrun.info.run_name == run.name and mlrun.info.status == "FINISHED"
        history = client.get_metric_history(mlrun.info.run_id, "error_rel")
        assert sorted(h.step for h in history) == [0, 3, 6]
        last = max(history, key=lambda h: h.step).value
        assert last == pytest.approx(_metrics(run)["error_rel"], rel=1e-12)
        assert mlrun.data.params["system.name"] == "lotka"
        assert mlrun.data.params["train.niters"] == "6"
        names = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
        assert {"metrics.json", "config.yaml", "phase.png"} <= names
        assert (run / "tensorboard").is_dir()


def test_a_broken_tracker_warns_once_and_the_run_completes(cli, outputs, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    res = cli("train", *QUICK, "logger=mlflow")
    assert res.exit_code == 0, res.stderr
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("note: logger mlflow")]
    assert len(notes) == 1 and "disabled" in notes[0]
    (run,) = run_dirs(outputs)
    assert _metrics(run)["status"] == "ok" and (run / "phase.png").is_file()


def test_bad_logger_and_objective_are_one_line(cli, outputs):
    res = cli("train", *QUICK, "logger=wandb")
    assert res.exit_code == 2 and "logger" in res.stderr and "tensorboard" in res.stderr
    res = cli("train", *QUICK, "objective=accuracy")
    assert res.exit_code == 2
    assert "objective 'accuracy'" in res.stderr and "extrap_error_rel" in res.stderr


@pytest.mark.slow
def test_optuna_search_returns_each_jobs_objective(cli, outputs):
    sweep = outputs / "search"
    res = cli("train", "-m", *QUICK, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
              "hydra.sweeper.sampler.seed=0", "train.lr=interval(0.001,0.05)",
              "objective=extrap_error_rel", f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 0, res.stderr
    values = [_metrics(job)["extrap_error_rel"] for job in sorted(sweep.glob("[0-9]*"))]
    assert len(values) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(values), rel=1e-12)
    res = cli("report", str(sweep), "--no-plots")
    assert res.exit_code == 0 and f"best value {best['best_value']}" in res.stdout


def test_a_failed_trial_is_a_bad_value_not_a_crash(cli, outputs):
    sweep = outputs / "search"
    res = cli("train", "-m", *QUICK, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
              "hydra/sweeper/sampler=grid", "+solver.options.max_num_steps=choice(2,100000)",
              "solver.rtol=1e-9", "solver.atol=1e-10", f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 1 and "1 job(s) failed" in res.stderr  # the study finished
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["+solver.options.max_num_steps"] == 100000
    assert math.isfinite(best["best_value"])
