"""The Python API: odecli.run / load / compose, and every family's loaded-model methods
against what `odecli eval` (and `odecli sample`) compute for the same run."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ECG_DIR, FAST

import odecli
from odecli.dynamics.experiment import trajectory_errors
from odecli.engine import rundir
from odecli.registry import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
TINY_VAE = ["quiet=true", "train.batch_size=12", "model.latent_dim=2", "model.encoder_width=8",
            "model.ode_width=8", "model.decoder_width=8", "plots.enabled=false",
            "train.niters=3", "train.test_freq=3"]
CNF = ["quiet=true", "train.niters=3", "train.test_freq=3", "data.n_train=300",
       "data.n_val=100", "data.n_test=200", "model.width=16", "train.batch_size=64",
       "plots.enabled=false"]
CLASSIFY = ["quiet=true", "train.niters=3", "train.test_freq=3", "dial.enabled=false",
            "plots.enabled=false", "model.width=8"]


def _eval(cli, run: Path, *overrides: str) -> dict:
    """`odecli eval RUN OVERRIDES`'s eval.json."""
    res = cli("eval", str(run), *overrides)
    assert res.exit_code == 0, res.stderr
    folder = res.stdout.split("results: ", 1)[1].split()[0]
    return json.loads((Path(folder) / "eval.json").read_text())


# ------------------------------------------------------------------ run, load, compose

def test_run_returns_metrics_and_a_model_that_load_rebuilds(outputs, cli):
    r = odecli.run("train", ["system=lotka", *FAST, "train.niters=6"])
    assert r.metrics["status"] == "ok" and r.metrics["command"] == "train"
    assert r.run_dir.parent.parent == outputs / "train"
    assert json.loads((r.run_dir / rundir.METRICS).read_text()) == r.metrics
    path = r.model.predict([[1.0, 1.0]], [0.0, 1.0, 2.0])
    assert path.shape == (3, 1, 2) and np.allclose(path[0, 0], [1.0, 1.0])
    loaded = odecli.load(r.run_dir)
    assert np.array_equal(loaded.predict([[1.0, 1.0]], [0.0, 1.0, 2.0]), path)
    assert loaded.metrics == r.metrics and loaded.command == "train"


@pytest.mark.slow
def test_run_into_a_given_folder_and_resume_it(tmp_path, outputs):
    folder = tmp_path / "mine"
    first = odecli.run("train", [*FAST, "train.niters=4"], run_dir=folder)
    assert first.run_dir == folder.resolve() and first.metrics["iterations"] == 4
    more = odecli.run("train", [f"resume={folder}", "train.niters=6"])
    assert more.run_dir == folder.resolve() and more.metrics["iterations"] == 6


def test_a_given_folder_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """The write check read the quoted hydra.run.dir odecli.run passes on as a relative
    path, and left an empty folder named "'" in the working directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    folder = tmp_path / "it's mine"
    r = odecli.run("train", [*FAST, "plots.enabled=false"], run_dir=folder)
    assert r.run_dir == folder.resolve() and (folder / "metrics.json").is_file()
    assert list(cwd.iterdir()) == []
    # Hydra keeps the folder in its config, where `${` would interpolate: refused up front
    with pytest.raises(odecli.OdecliError, match=r"run_dir cannot hold '\$\{'"):
        odecli.run("train", [*FAST], run_dir=tmp_path / "a${oc.env:HOME}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "it's mine"]


def test_compose_checks_like_the_cli_and_writes_nothing(outputs):
    cfg = odecli.compose("train", ["system=lotka", "train.lr=0.1"])
    assert cfg.system.name == "lotka" and cfg.train.lr == 0.1 and "hydra" not in cfg
    with pytest.raises(odecli.ConfigError, match="train.lr must be a positive number"):
        odecli.compose("train", ["train.lr=-1"])
    with pytest.raises(odecli.OdecliError, match="unknown command 'trian'; choose one of"):
        odecli.compose("trian")
    assert not outputs.exists()


def test_errors_are_exceptions_with_the_cli_message_not_system_exit(outputs):
    with pytest.raises(odecli.OdecliError) as info:
        odecli.run("train", ["system=nope"])
    assert "Could not find 'system/nope'" in str(info.value)
    with pytest.raises(odecli.OdecliError, match="list of strings"):
        odecli.run("train", "system=lotka")  # type: ignore[arg-type]
    with pytest.raises(odecli.OdecliError, match="not flags"):
        odecli.run("train", ["-m", "seed=0,1"])
    with pytest.raises(odecli.OdecliError, match="does not exist"):
        odecli.load(outputs / "missing")
    assert not (outputs / "train").exists()


def test_a_loaded_model_refuses_what_would_change_it(outputs):
    r = odecli.run("train", [*FAST])
    with pytest.raises(odecli.OdecliError, match="odecli.load cannot change 'model=deep'"):
        odecli.load(r.run_dir, ["model=deep"])
    with pytest.raises(odecli.ConfigError, match="y0 must have 2 values per state"):
        r.model.predict([[1.0, 2.0, 3.0]], [0.0, 1.0])
    with pytest.raises(odecli.ConfigError, match="strictly increasing"):
        r.model.predict([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(odecli.ConfigError, match="unknown solver method 'rk45'"):
        r.model.predict([1.0, 2.0], [0.0, 1.0], solver="rk45")


# ------------------------------------------------------- every command against `eval`

@pytest.mark.slow
def test_train_predictions_equal_eval(outputs, cli):
    r = odecli.run("train", ["system=spiral", *FAST, "train.niters=6"])
    ev = _eval(cli, r.run_dir)
    m = odecli.load(r.run_dir)
    exp = m.experiment
    pred = m.predict(m.truth[0], m.times)
    import torch

    def errors(path: np.ndarray) -> dict:  # eval's arithmetic, in the run's dtype
        return trajectory_errors(torch.as_tensor(path, dtype=exp.truth.dtype), exp.truth,
                                 exp.n_train, exp.scale, 0)

    again = errors(pred)
    assert again["error_rel"] == pytest.approx(ev["error_rel"], rel=1e-12)
    assert m.evaluate()["error_rel"] == ev["error_rel"]
    # the dial from Python: another solver, as `odecli eval RUN solver=rk4 ...`
    ev_rk4 = _eval(cli, r.run_dir, "solver=rk4", "solver.step_size=0.05")
    fixed = m.predict(m.truth[0], m.times, solver="rk4", steps=20)
    again = errors(fixed)
    assert again["error_rel"] == pytest.approx(ev_rk4["error_rel"], rel=1e-9)
    assert m.last_nfe == ev_rk4["nfe_eval"]
    f = m.f(0.0, m.truth[:3])
    assert f.shape == (3, 2) and np.allclose(f, exp.field_numpy(m.truth[:3], 0.0))


@pytest.mark.slow
def test_data_file_predictions_equal_eval(outputs, cli):
    from odecli.dynamics import tabular

    r = odecli.run("train", ["system=hare_lynx", *FAST, "train.niters=4"])
    ev = _eval(cli, r.run_dir)
    m = odecli.load(r.run_dir)
    exp = m.experiment
    assert m.variables == ["hare", "lynx"] and set(m.trajectories)
    held = []
    for part in exp.split.test:  # forecast: from the last training state, after it
        path = m.predict(part.start_y, np.concatenate([[part.start_t], part.t]))
        held.append(path[1:])
    again = tabular.errors(held, exp.split.test, exp.scale)["rel"]
    assert again == pytest.approx(ev["heldout_error_rel"], rel=1e-6)
    rate = m.f(1900.0, [30.0, 4.0])
    assert rate.shape == (2,) and np.allclose(rate, exp.field_in_data_units(
        np.array([[30.0, 4.0]]), 1900.0)[0])
    with pytest.raises(AttributeError, match="one time grid per trajectory"):
        _ = m.times


@pytest.mark.slow
def test_classify_predictions_equal_eval(outputs, cli):
    r = odecli.run("classify", CLASSIFY)
    ev = _eval(cli, r.run_dir)
    m = odecli.load(r.run_dir)
    d = m.experiment.data
    images, labels = d.x[d.test], d.y[d.test]
    assert (m.predict(images) == labels).mean() == ev["test_accuracy"]
    assert m.last_nfe == ev["nfe_eval"]
    p = m.predict_proba(images[:, 0])  # without the channel axis
    assert p.shape == (len(labels), 10) and np.allclose(p.sum(1), 1.0)
    assert np.array_equal(p.argmax(1), m.predict(images.reshape(len(images), -1)))
    # the dial: fewer fixed steps cost fewer evaluations
    m.predict(images, solver="rk4", steps=1)
    assert m.last_nfe == 4 < ev["nfe_eval"]


def test_cnf_log_prob_and_samples_equal_eval_and_sample(outputs, cli, tmp_path):
    r = odecli.run("cnf", CNF)
    ev = _eval(cli, r.run_dir)
    m = odecli.load(r.run_dir)
    test = m.experiment.data.test
    assert float(-m.log_prob(test).mean()) == pytest.approx(ev["test_nll"], rel=1e-12)
    out = tmp_path / "s.npy"
    assert cli("sample", str(r.run_dir), "--n", "50", "--out", str(out), "--seed",
               "3").exit_code == 0
    assert np.array_equal(np.load(out), m.sample(50, seed=3))


def test_spiral_vae_methods_agree_with_eval(outputs, cli):
    r = odecli.run("spiral-vae", [*TINY_VAE, "data.n_spirals=24", "data.n_points=30"])
    ev = _eval(cli, r.run_dir)
    m = odecli.load(r.run_dir)
    assert m.evaluate()["reconstruction_mse"] == ev["reconstruction_mse"]
    x, mask, t = m.windows, m.window_masks, m.window_times
    mu, std = m.encode(x, t, mask)
    assert mu.shape == std.shape == (len(x), m.latent_dim) and (std > 0).all()
    exp = m.experiment
    grid = exp.full_grid(exp.data.test)  # what eval scores
    rows = np.arange(len(x))[:, None]
    cols = exp.anchor[exp.data.test][:, None] + np.arange(len(t))[None, :]
    inside = cols < grid.shape[1]
    rec = m.reconstruct(x, t, mask)
    assert rec.shape == x.shape
    err = np.abs(rec - grid[rows, np.minimum(cols, grid.shape[1] - 1)])[inside]
    assert err.max() < 1e-3  # one solve per batch either way: equal to solver tolerance
    later = m.extrapolate(x, t, t[-1] + np.array([0.5, 1.0]), mask)
    assert later.shape == (len(x), 2, 2) and np.isfinite(later).all()


def test_ecg_vae_reconstruction_equals_eval(outputs, cli):
    r = odecli.run("ecg-vae", [*TINY_VAE, f"data.dir={ECG_DIR}", "data.max_beats=80",
                               "data.n_points=24"])
    ev = _eval(cli, r.run_dir)
    m = odecli.load(r.run_dir)
    exp = m.experiment
    from odecli.latent.ecg_experiment import make_task_set
    from odecli.latent.vae import mse

    ts = make_task_set(exp.test_paths, exp.tasks, exp.seed + 2000)  # the test's task set
    for task, key in (("reconstruction", "reconstruction_mse"), ("gap", "gap_mse"),
                      ("right", "extrapolation_right_mse")):
        pred = m.reconstruct(ts.x[task], ts.mask[task])
        assert mse(pred, exp.test_paths, ts.target[task]) == ev[key]
    assert m.extrapolate(m.beats[:3], 10).shape == (3, 24, 2)
    assert m.encode(m.beats[:3])[0].shape == (3, exp.model.latent_dim)


# ------------------------------------------------------------- docstrings that run

DOC_MODULES = ["odecli.api", "odecli.dynamics.trained", "odecli.flows.trained",
               "odecli.classify.trained", "odecli.latent.trained", "odecli.cde.trained"]


@pytest.mark.slow
@pytest.mark.parametrize("name", DOC_MODULES)
def test_docstring_examples_run(name, outputs, monkeypatch, tmp_path):
    monkeypatch.setenv("ODECLI_ECG_DIR", str(ECG_DIR))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_every_command_has_a_model_class_with_examples():
    for cmd in COMMANDS.values():
        cls = cmd.experiment_class().trained_model
        assert cls.__module__.endswith(".trained") and ">>>" in (cls.__doc__ or ""), cmd.name


@pytest.mark.slow
def test_the_example_script_runs(outputs, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs), "ODECLI_EXAMPLE_ITERS": "50"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "eval error_rel:" in proc.stdout and "rk4 {'steps': 10}: 400 evaluations" in proc.stdout
