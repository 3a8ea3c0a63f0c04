"""Training behaviour: error falls, irregular data and augmentation matter, seeds reproduce."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST, read_metrics, run_dirs
from hydra import compose, initialize_config_dir

from odecli.dynamics import data, systems
from odecli.dynamics.dispatch import TrainExperiment
from odecli.engine.loop import Engine
from odecli.numerics import solve
from odecli.paths import config_dir


def trainer(cfg, run_dir: Path) -> Engine:
    """The engine around a dynamics experiment, as `odecli train` builds it."""
    return Engine(TrainExperiment(cfg, run_dir), run_dir)


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train",
                       overrides=["quiet=true", "plots.enabled=false", *overrides])


def test_short_spiral_run_cuts_the_trajectory_error_by_a_large_factor(tmp_path):
    cfg = make("system=spiral", "gradient=direct", "train.niters=150", "train.test_freq=150")
    metrics = trainer(cfg, tmp_path).run()
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    first, last = float(rows[0]["error_rel"]), float(rows[-1]["error_rel"])
    assert metrics["status"] == "ok"
    assert first > 0.5            # the untrained field is nowhere near the spiral
    assert last < first / 5       # training removes most of the error
    assert metrics["error_rel"] == last


def test_adjoint_and_direct_gradients_agree():
    grads = {}
    for mode in ("adjoint", "direct"):
        tr = trainer(make("system=spiral", f"gradient={mode}", "solver.rtol=1e-7",
                                "solver.atol=1e-9", "device.dtype=float64"), Path("."))
        exp = tr.exp
        batch = data.sample(exp.obs, 8, 10, torch.Generator().manual_seed(0))
        pred = solve.solve(exp.counter, batch.y0, batch.t, exp.spec)
        (pred - batch.target).abs().mean().backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in exp.field.parameters()])
    assert torch.allclose(grads["adjoint"], grads["direct"], rtol=1e-4, atol=1e-7)


def test_irregular_windows_match_the_truth_when_solved_with_the_true_field():
    # Solving a batch once on the union grid and picking each window's own times must give
    # exactly each window's true trajectory: the mechanism behind irregular observations.
    s = systems.build({"name": "spiral", "y0": [2.0, 0.0], "t0": 0.0, "t1": 10.0,
                       "data_size": 200})
    truth = s.trajectory()
    gen = torch.Generator().manual_seed(0)
    obs = data.observe(s.t, truth, {"observe_fraction": 0.4}, gen)
    assert len(obs.t) == 80 and obs.index[0] == 0 and not obs.uniform
    gaps = obs.t.diff()
    assert float(gaps.max()) > 2 * float(gaps.min())      # really uneven
    batch = data.sample(obs, 16, 6, gen)
    assert batch.pick is not None and len(batch.t) > 6
    pred = solve.solve(s.field, batch.y0, batch.t,
                       solve.SolverSpec("dopri5", "checkpoint", rtol=1e-10, atol=1e-12),
                       grad=False)
    picked = data.gather(pred, batch)
    assert picked.shape == batch.target.shape
    assert torch.allclose(picked, batch.target, atol=1e-7)


def test_irregular_observations_change_what_is_trained(tmp_path):
    full = trainer(make("gradient=direct", "train.niters=5"), tmp_path / "a")
    sparse = trainer(make("gradient=direct", "train.niters=5",
                                "data.observe_fraction=0.3"), tmp_path / "b")
    assert len(sparse.exp.obs.t) == 75 and len(full.exp.obs.t) == 250
    for tr in (full, sparse):
        (tr.run_dir).mkdir()
        tr.run()
    a = torch.cat([p.flatten() for p in full.exp.field.parameters()])
    b = torch.cat([p.flatten() for p in sparse.exp.field.parameters()])
    assert not torch.allclose(a, b)


def test_noise_is_added_to_training_observations_only(tmp_path):
    tr = trainer(make("data.noise_std=0.1"), tmp_path)
    resid = tr.exp.obs.y - tr.exp.truth[: tr.exp.n_train]
    assert 0.07 < float(resid.std()) < 0.13


def test_augmentation_adds_state_dimensions_that_are_trained(tmp_path):
    tr = trainer(make("gradient=direct", "train.niters=5", "model.augment_dim=3"),
                       tmp_path)
    first = tr.exp.field.net[0]
    assert first.in_features == 5 and tr.exp.field.net[-1].out_features == 5
    before = first.weight[:, 2:].detach().clone()
    tr.run()
    # The extra inputs' weights received gradient: the augmented state is really used.
    assert not torch.allclose(first.weight[:, 2:], before)
    pred, _ = tr.exp.predict()
    assert pred.shape[-1] == 2    # dropped for the loss and the plots


@pytest.mark.slow
def test_same_seed_gives_identical_runs(cli, outputs):
    for _ in range(2):
        assert cli("train", *FAST, "seed=3").exit_code == 0
    a, b = run_dirs(outputs)
    ma, mb = read_metrics(a), read_metrics(b)
    for key in ("final_loss", "error_abs", "error_rel", "extrap_error_abs"):
        assert ma[key] == mb[key]
    strip = [ln.rsplit(",", 1)[0] for ln in (a / "history.csv").read_text().splitlines()]
    strip_b = [ln.rsplit(",", 1)[0] for ln in (b / "history.csv").read_text().splitlines()]
    assert strip == strip_b
    assert cli("train", *FAST, "seed=4").exit_code == 0
    c = [d for d in run_dirs(outputs) if d not in (a, b)][0]
    assert read_metrics(c)["final_loss"] != ma["final_loss"]


def test_arclength_sampling_weights_windows_by_distance_travelled():
    t = torch.linspace(0, 1, 11)
    y = torch.stack([t**2, torch.zeros(11)], dim=-1)      # speeds up along a line
    obs = data.Observations(t=t, y=y, index=torch.arange(11), uniform=True)
    w = data.arclength_weights(obs, batch_time=3)
    assert w.shape == (9,)
    expected = (t[2:] ** 2 - t[:-2] ** 2).double()          # distance covered by each window
    assert torch.allclose(w, expected)
    starts = data.sample(obs, 4000, 3, torch.Generator().manual_seed(0), w).t_start.squeeze()
    late, early = (starts > 0.65).float().mean(), (starts < 0.25).float().mean()
    # Starts 7-8 cover 34/90 of the path, starts 0-2 only 12/90 (uniform: 2/9 and 3/9).
    assert abs(float(late) - 34 / 90) < 0.03 and abs(float(early) - 12 / 90) < 0.03


def test_edge_sampling_trains_the_spans_ends_as_much_as_its_middle():
    n, L = 20, 5
    t = torch.linspace(0, 1, n)
    obs = data.Observations(t=t, y=torch.stack([t, t], -1), index=torch.arange(n), uniform=True)
    w = data.edge_weights(n, L)
    assert w.tolist() == [5.0] + [1.0] * 14 + [5.0]
    coverage = torch.zeros(n, dtype=torch.float64)
    for start, weight in enumerate(w):
        coverage[start:start + L] += weight
    uniform = torch.zeros(n)
    for start in range(n - L + 1):
        uniform[start:start + L] += 1
    assert uniform[0] == 1 and uniform[10] == 5      # uniform: the ends in 1 window of 5
    assert coverage.min() == coverage[10] == 5       # edges: none below the middle's
    starts = data.sample(obs, 8000, L, torch.Generator().manual_seed(0), w).t_start.squeeze()
    first = float((starts == 0).float().mean())
    assert abs(first - 5 / 24) < 0.02                 # weight 5 of 5 + 14 + 5
    assert data.edge_weights(5, 5).tolist() == [1.0]  # one possible window


def test_output_scale_choices_set_the_field_speed_scale():
    from odecli.dynamics import models

    t = torch.linspace(0, 1, 5)
    y = torch.stack([torch.tensor([0.0, 0.1, 0.2, 0.3, 1.3]), torch.zeros(5)], dim=-1)
    speeds = torch.tensor([0.4, 0.4, 0.4, 4.0])               # |dy/dt| of each segment
    for kind, expected in (("max", speeds.max()), ("mean", speeds.mean()),
                           ("rms", speeds.pow(2).mean().sqrt())):
        field = models.ODEField(2, [8], output_scale=kind)
        field.fit_normalization(t, y)
        assert torch.isclose(field.out_scale[0], expected, rtol=1e-5)
