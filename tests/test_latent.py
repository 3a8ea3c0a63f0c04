"""Latent-ODE VAE: ELBO, encoders, masks, training, and both commands end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from odecli.engine import loop
from odecli.engine import rundir as runs
from odecli.errors import ConfigError, OdecliError, RunFailed
from odecli.latent import masks, spirals
from odecli.latent import model as vae_model
from odecli.latent.ecg_experiment import EcgVAE
from odecli.latent.spiral_experiment import SpiralVAE
from odecli.numerics.solve import SolverSpec, solve

REPO = Path(__file__).resolve().parent.parent
ECG_DIR = REPO / "tests" / "data"  # MIT-BIH record 100 excerpt (mitdb/100.*), in the repo

TINY_SPIRAL = ["quiet=true", "data.n_spirals=24", "data.n_points=30", "train.batch_size=12",
               "train.niters=4", "train.test_freq=2", "model.latent_dim=2",
               "model.encoder_width=8", "model.ode_width=8", "model.decoder_width=8",
               "plots.n_examples=2"]
TINY_ECG = ["quiet=true", f"data.dir={ECG_DIR}", "data.max_beats=80", "data.n_points=24",
            "train.batch_size=16", "train.niters=4", "train.test_freq=2",
            "model.latent_dim=2", "model.encoder_width=8", "model.ode_width=8",
            "model.decoder_width=8", "plots.n_examples=2"]


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def settings(*overrides: str) -> dict:
    """The checked spiral-vae config nodes (the YAML's defaults with these overrides)."""
    return SpiralVAE.check(compose_cfg("spiral_vae", list(overrides)))


def run_spiral_vae(cfg, run_dir: Path) -> dict:
    return loop.run(SpiralVAE, cfg, run_dir)


def run_ecg_vae(cfg, run_dir: Path) -> dict:
    return loop.run(EcgVAE, cfg, run_dir)


# ---------------------------------------------------------------------------- ELBO

def test_elbo_matches_hand_computation() -> None:
    x = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    x_hat = torch.tensor([[[0.5, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, False]])  # the second point is not scored
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    out = vae_model.elbo(x, x_hat, mask, mu, logvar, noise_std=0.5)
    # log N(1; 0.5, 0.25) + log N(0; 0, 0.25), each -0.5*(r^2/0.25 + log 0.25 + log 2 pi)
    loglik = -0.5 * (1.0 + 2 * math.log(0.25) + 2 * math.log(2 * math.pi))
    # KL = 0.5 * sum(mu^2 + var - log var - 1) = 0.5 * ((1 + 1 - 0 - 1) + (0 + 4 - log 4 - 1))
    kl = 0.5 * (1.0 + 3.0 - math.log(4.0))
    assert out.loglik.item() == pytest.approx(loglik, rel=1e-6)
    assert out.kl.item() == pytest.approx(kl, rel=1e-6)
    assert out.elbo.item() == pytest.approx(loglik - kl, rel=1e-6)
    # the KL weight (warm-up) scales only the KL term
    half = vae_model.elbo(x, x_hat, mask, mu, logvar, noise_std=0.5, kl_weight=0.5)
    assert half.elbo.item() == pytest.approx(loglik - 0.5 * kl, rel=1e-6)


# ---------------------------------------------------------------------------- model parts

@pytest.mark.parametrize("kind", vae_model.ENCODERS)
def test_encoders_ignore_unobserved_values(kind: str) -> None:
    torch.manual_seed(0)
    model = vae_model.LatentODEVAE(2, settings(
        f"model.encoder={kind}", "model.latent_dim=3", "model.encoder_width=8",
        "model.ode_width=8", "model.decoder_width=8")["model"])
    t = torch.tensor([0.0, 0.1, 0.15, 0.5, 0.55, 1.0])  # uneven gaps
    x = torch.randn(4, 6, 2)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1]] * 4, dtype=torch.bool)
    mu, logvar = model.encode(x, mask, t)
    assert mu.shape == logvar.shape == (4, 3)
    x2 = x.clone()
    x2[:, 1] = 100.0
    torch.testing.assert_close(model.encode(x2, mask, t)[0], mu)
    spec = SolverSpec(method="dopri5", gradient="direct", rtol=1e-3, atol=1e-4)
    x_hat, _, _ = model(x, mask, t, spec)
    assert x_hat.shape == (4, 6, 2)


def test_masks() -> None:
    rng = np.random.default_rng(0)
    assert masks.random_subset(100, 0.3, rng).sum() == 30
    gap = masks.gap_mask(100, 0.3, rng)
    missing = np.flatnonzero(~gap)
    assert len(missing) == 30 and np.all(np.diff(missing) == 1)
    assert gap[0] and gap[-1]
    right = masks.edge_mask(10, 0.4, "right")
    assert right.tolist() == [True] * 4 + [False] * 6
    assert masks.edge_mask(10, 0.4, "left").tolist() == [False] * 6 + [True] * 4


def test_spirals_turn_both_ways_and_hold_out() -> None:
    data = spirals.make_spirals(settings("data.n_spirals=40", "data.n_points=50",
                                                "data.window=0.4")["data"], seed=0)
    assert data.truth.shape == (40, 50, 2)
    assert len(data.test) == 10 and len(data.val) == 5 and len(data.train) == 25
    assert not set(data.train) & set(data.test) and not set(data.val) & set(data.test)
    # direction of rotation from the sign of the cross product of successive points
    a, b = data.truth[:, :-1], data.truth[:, 1:]
    cross = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).mean(axis=1)
    assert (cross > 0).any() and (cross < 0).any()
    for m, (a, b) in zip(data.mask, data.span, strict=True):
        assert m[:a].sum() == 0 and m[b:].sum() == 0 and m[a:b].sum() == 10
    # trivial extrapolation baselines: hold the last (first) observation, or the centre
    base = spirals.spiral_baselines(data, data.test)
    for j, row in enumerate(data.test):
        seen = np.flatnonzero(data.mask[row])
        assert np.array_equal(base["hold"][j, -1], data.obs[row, seen[-1]])
        assert np.array_equal(base["hold"][j, 0], data.obs[row, seen[0]])
    assert not base["centre"].any()


def test_windows_start_at_the_first_observation_and_anchor_mid_way() -> None:
    mask = np.zeros((2, 10), dtype=bool)
    mask[0, [2, 4, 7]] = True
    mask[1, [6, 9]] = True
    obs = np.arange(20, dtype=float).reshape(1, 10, 2).repeat(2, axis=0)
    x, m, anchor = masks.anchored_windows(obs, mask, width=6)
    assert m[0].tolist() == [True, False, True, False, False, True]
    assert m[1].tolist() == [True, False, False, True, False, False]  # past the grid: unseen
    assert x[0, 2].tolist() == obs[0, 4].tolist() and x[0, 1].tolist() == [0.0, 0.0]
    assert anchor.tolist() == [2 + 5 // 2, 6 + 3 // 2]
    # partial windows: the encoder keeps a contiguous stretch; the anchor follows it
    rng = np.random.default_rng(0)
    full = np.ones((50, 12), dtype=bool)
    values = np.arange(12, dtype=float)[None, :, None].repeat(50, axis=0)
    xe, me, a = masks.partial_windows(values, full, rng, share=1.0, min_length=0.25)
    kept = me.sum(axis=1)
    assert kept.min() >= 3 and kept.max() <= 12 and (kept < 12).any()
    starts = xe[:, 0, 0].astype(int)  # column 0 is the first kept observation
    assert np.array_equal(a, starts + (kept - 1) // 2)
    none = masks.partial_windows(values, full, rng, share=0.0, min_length=0.25)
    assert none[1].all() and (none[2] == 11 // 2).all()


def test_decode_grid_runs_both_ways_from_each_anchor() -> None:
    torch.manual_seed(0)
    model = vae_model.LatentODEVAE(2, settings("model.latent_dim=3", "model.ode_width=8",
                                               "model.decoder_width=8")["model"])
    spec = SolverSpec(method="rk4", gradient="direct", step_size=0.05)
    z0 = torch.randn(3, 3)
    anchor = torch.tensor([0, 3, 5])
    dt = torch.tensor(0.2)
    with torch.no_grad():
        out = model.decode_grid(z0, dt, anchor, 6, spec)
        assert out.shape == (3, 6, 2)
        for i, a in enumerate(anchor.tolist()):
            ahead = solve(model.func, z0[i:i + 1], torch.arange(6 - a) * dt, spec)
            behind = solve(model.func, z0[i:i + 1], torch.arange(a + 1) * -dt, spec)
            path = torch.cat([behind.flip(0), ahead[1:]])[:, 0]
            torch.testing.assert_close(out[i], model.decoder(path), rtol=1e-5, atol=1e-6)
    model_t = vae_model.LatentODEVAE(2, {**settings("model.latent_dim=3")["model"],
                                         "time_input": True})
    with pytest.raises(ConfigError, match="autonomous"):
        model_t.decode_grid(z0, dt, anchor, 6, spec)


# ---------------------------------------------------------------------------- training

def test_short_training_run_loss_falls(tmp_path: Path) -> None:
    cfg = compose_cfg("spiral_vae", [
        "quiet=true", "data.n_spirals=40", "data.n_points=30", "data.test_fraction=0.25",
        "train.batch_size=30", "train.niters=30", "train.test_freq=1", "train.lr=0.02",
        "train.partial_share=0",
        "model.latent_dim=4", "model.encoder_width=16", "model.ode_width=16",
        "model.decoder_width=16", "plots.enabled=false"])
    run_spiral_vae(cfg, tmp_path)
    losses = [r["train_loss"] for r in runs.History.read(tmp_path / runs.HISTORY)]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:2])


def test_spiral_vae_end_to_end(tmp_path: Path) -> None:
    cfg = compose_cfg("spiral_vae", TINY_SPIRAL + ["model.encoder=odernn"])
    metrics = run_spiral_vae(cfg, tmp_path)
    assert metrics["status"] == "ok"
    for key in ("reconstruction_mse", "extrapolation_forward_mse",
                "extrapolation_backward_mse", "extrapolation_forward_hold_mse",
                "extrapolation_backward_centre_mse", "signal_variance", "seconds_per_iter",
                "wall_seconds", "peak_memory_mb"):
        assert np.isfinite(metrics[key]), key
    assert isinstance(metrics["beats_baselines"], bool)
    assert runs.read_json(tmp_path / runs.METRICS)["environment"]["torch"] == torch.__version__
    for name in ("history.csv", "checkpoint.pt", "spiral_vae.png", "loss.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 4
    assert {"modules", "best", "optimizer", "rng", "config", "history"} <= set(state)


def test_adjoint_and_other_solvers_run(tmp_path: Path) -> None:
    for i, extra in enumerate((["gradient=adjoint"], ["gradient=checkpoint"],
                                 ["solver=rk4", "solver.step_size=0.5"])):
        cfg = compose_cfg("spiral_vae", TINY_SPIRAL + ["train.niters=2", "plots.enabled=false",
                                                       *extra])
        assert run_spiral_vae(cfg, tmp_path / str(i))["status"] == "ok"


def test_solver_blow_up_is_recorded_and_raised(tmp_path: Path) -> None:
    cfg = compose_cfg("spiral_vae", TINY_SPIRAL + ["+solver.options.max_num_steps=2",
                                                   "solver.rtol=1e-9", "solver.atol=1e-10"])
    with pytest.raises(RunFailed, match="max_num_steps"):
        run_spiral_vae(cfg, tmp_path)
    metrics = runs.read_json(tmp_path / runs.METRICS)
    assert metrics["status"].startswith("failed: ") and metrics["hint"]


def test_ecg_vae_end_to_end(tmp_path: Path) -> None:
    cfg = compose_cfg("ecg_vae", TINY_ECG)
    metrics = run_ecg_vae(cfg, tmp_path)
    assert metrics["status"] == "ok"
    for task in ("reconstruction", "gap", "extrapolation_right", "extrapolation_left"):
        assert np.isfinite(metrics[f"{task}_mse"]), task
        assert (tmp_path / f"ecg_{task}.png").stat().st_size > 0
    for side in ("right", "left"):
        for base in ("mean_beat", "last_value"):
            assert np.isfinite(metrics[f"extrapolation_{side}_{base}_mse"])
    assert "ODC-By" in metrics["data_license"]
    assert metrics["data"]["beats"] == 80 and metrics["data"]["lead"] == "MLII"
    assert isinstance(metrics["beats_both_baselines"], bool)
    for name in ("history.csv", "checkpoint.pt", "loss.png", "metrics.json"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_ecg_vae_runs_in_a_joblib_worker(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    cfg = compose_cfg("ecg_vae", TINY_ECG + ["train.niters=2", "plots.enabled=false"])
    [metrics] = joblib.Parallel(n_jobs=2, backend="loky")(
        [joblib.delayed(run_ecg_vae)(cfg, tmp_path)])
    assert metrics["status"] == "ok"


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("override, message", [
    ("model.encoder=lstm", "model.encoder"),
    ("train.niters=0", "train.niters"),
    ("train.lr=-1", "train.lr"),
    ("model.obs_noise_std=0", "obs_noise_std"),
    ("solver.method=rk45", "solver method"),
    ("model.time_input=true", "time_input=false"),
    ("train.partial_share=2", "train.partial_share"),
    ("data.radius_end=[1.0,0.5]", "data.radius_end"),
])
def test_bad_config_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SpiralVAE.validate(compose_cfg("spiral_vae", [override]))


@pytest.mark.parametrize("override, message", [
    ("tasks.gap_fraction=1.5", "tasks.gap_fraction"),
    ("data.split=[0.5,0.5]", "data.split"),
    ("data.lead=V9", "lead 'V9'"),
    ("data.record=999", "not found"),
])
def test_bad_ecg_values_fail_before_training(override: str, message: str) -> None:
    cfg = compose_cfg("ecg_vae", [f"data.dir={ECG_DIR}", override])
    with pytest.raises(OdecliError, match=message):
        EcgVAE.validate(cfg)


def test_ecg_bad_input_through_the_runner(tmp_path: Path) -> None:
    cfg = compose_cfg("ecg_vae", TINY_ECG + ["data.beat_types=[Q]"])
    with pytest.raises(OdecliError, match="no beats"):
        run_ecg_vae(cfg, tmp_path / "run")


def test_validation_score_ignores_a_task_with_nothing_to_score() -> None:
    # One NaN task (e.g. no held-out points behind a window) must not make every score NaN,
    # which would stop the run from ever keeping a best state (both VAEs share this score).
    from odecli.latent.vae import mean_score, mse

    empty = mse(np.zeros((2, 3, 2)), np.ones((2, 3, 2)), np.zeros((2, 3), dtype=bool))
    assert math.isnan(empty)
    assert mean_score({"val_a_mse": 0.2, "val_b_mse": empty, "val_c_mse": 0.4}) == \
        pytest.approx(0.3)
