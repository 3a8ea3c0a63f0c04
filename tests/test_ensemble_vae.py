"""hydra/launcher=ensemble for `odecli spiral-vae`: members of a batched group equal their
solo runs (metrics and history), are grouped like `train`'s, fail alone, and stop and resume
as a group."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import read_metrics
from test_ensemble import history, members

import odecli
from odecli.latent.ensemble import SpiralMembers
from odecli.latent.spiral_experiment import SpiralVAE
from odecli.launch import ensemble

SMALL = ["data.n_spirals=80", "train.batch_size=16", "device.dtype=float64", "train.niters=6",
         "train.test_freq=3", "quiet=true", "plots.enabled=false"]
ENSEMBLE = ["hydra/launcher=ensemble"]
COMPARED = ("final_loss", "reconstruction_mse", "extrapolation_forward_mse",
            "extrapolation_backward_mse", "best_score", "best_iteration",
            "nfe_forward_per_iter", "nfe_backward_per_iter")
HISTORY = ("train_loss", "loglik", "kl", "val_reconstruction_mse",
           "val_extrapolation_forward_mse", "val_extrapolation_backward_mse", "score",
           "nfe_forward", "nfe_backward")


def assert_same_run(member: Path, solo: Path, rel: float = 1e-4) -> None:
    a, b = read_metrics(member), read_metrics(solo)
    assert a["status"] == b["status"] == "ok"
    for key in COMPARED:
        assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-12), key
    ha, hb = history(member), history(solo)
    assert list(ha[0]) == list(hb[0])  # the same columns, the step's extras among them
    assert [r["iteration"] for r in ha] == [r["iteration"] for r in hb]
    for ra, rb in zip(ha, hb, strict=True):
        for key in HISTORY:
            if rb[key]:
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=rel), key


def test_members_equal_their_solo_runs(cli, outputs):
    sweep = outputs / "sweep"
    res = cli("spiral-vae", "-m", "seed=0,1", "train.lr=0.003,0.01", "train.kl_warmup=4",
              *SMALL, *ENSEMBLE, f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 0, res.stderr
    assert "4 members (jobs 0,1,2,3), one batched model; they differ in seed, train.lr" \
        in res.stderr
    runs = members(sweep)
    assert len(runs) == 4
    for run in runs:  # an ordinary run folder
        assert (run / ".hydra" / "overrides.yaml").exists()
        assert (run / "checkpoint.pt").exists() and (run / "history.csv").exists()
    for num, overrides in ((1, ["seed=0", "train.lr=0.01"]), (2, ["seed=1", "train.lr=0.003"])):
        solo = outputs / f"solo{num}"
        res = cli("spiral-vae", *overrides, "train.kl_warmup=4", *SMALL,
                  f"hydra.run.dir={solo}")
        assert res.exit_code == 0, res.stderr
        assert_same_run(runs[num], solo)
    res = cli("report", str(sweep), "--no-plots")
    assert res.exit_code == 0, res.stderr
    res = cli("eval", str(runs[3]))
    assert res.exit_code == 0, res.stderr


def test_members_equal_their_solo_runs_with_the_checkpointed_gradient(cli, outputs):
    # the replayed backward pass: the same gradients, and each member counts its solo NFE
    sweep, small = outputs / "sweep", [*SMALL, "gradient=checkpoint", "train.niters=4"]
    res = cli("spiral-vae", "-m", "seed=0,1", *small, *ENSEMBLE, f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 0, res.stderr
    solo = outputs / "solo"
    assert cli("spiral-vae", "seed=1", *small, f"hydra.run.dir={solo}").exit_code == 0
    assert read_metrics(solo)["nfe_backward_per_iter"] > 0
    assert_same_run(members(sweep)[1], solo)


def test_the_grouping_and_who_runs_alone():
    def job(num, *overrides):
        cfg = odecli.compose("spiral-vae", list(overrides))
        from omegaconf import OmegaConf

        return SimpleNamespace(num=num, plain=OmegaConf.to_container(cfg, resolve=True))

    jobs = [job(0, "seed=0"), job(1, "seed=1", "train.lr=0.02", "model.obs_noise_std=0.1"),
            job(2, "model.latent_dim=6"), job(3, "model.latent_dim=6", "seed=4"),
            job(4, "model.encoder=odernn"), job(5, "gradient=adjoint"),
            job(6, "train.batch_size=20")]
    groups = ensemble.plan(jobs, SpiralVAE, max_members=8)
    assert [[j.num for j in g] for g, _ in groups] == [[0, 1], [2, 3], [4], [5], [6]]
    text = ensemble.describe(groups)
    assert "7 job(s) in 5 group(s)" in text
    assert ("group 1: 2 members (jobs 0,1), one batched model; they differ in "
            "model.obs_noise_std, seed, train.lr") in text
    assert "group 3: 1 member (job 4), runs alone: model.encoder=odernn" in text
    assert "group 4: 1 member (job 5), runs alone: solver dopri5 with gradient=adjoint" in text
    assert "group 5: 1 member (job 6), runs alone" in text  # its own batch size


def test_a_failing_member_leaves_the_batch(cli, outputs):
    sweep = outputs / "sweep"
    res = cli("spiral-vae", "-m", "seed=0,1", "+solver.options.max_num_steps=10000,1", *SMALL,
              *ENSEMBLE, f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 1
    assert "2 job(s) failed" in res.stderr and "max_num_steps exceeded" in res.stderr
    statuses = [read_metrics(r)["status"] for r in members(sweep)]
    assert statuses[0] == statuses[2] == "ok"
    assert statuses[1] == statuses[3] == "failed: solver failed: max_num_steps exceeded"
    solo = outputs / "solo"
    assert cli("spiral-vae", "seed=1", *SMALL, f"hydra.run.dir={solo}").exit_code == 0
    assert_same_run(members(sweep)[2], solo)


def test_a_stopped_group_checkpoints_every_member_and_resumes(cli, outputs, monkeypatch):
    # SIGINT in the middle of the third step: every member is checkpointed with its own
    # generators (batches, reparameterisation noise); one member resumes alone (`resume=`),
    # the same command again resumes the others as a group
    real = SpiralMembers.losses
    calls = []

    def stopping(self, idx, iterations):
        calls.append(iterations)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, idx, iterations)

    monkeypatch.setattr(SpiralMembers, "losses", stopping)
    sweep = outputs / "sweep"
    args = ["spiral-vae", "-m", "seed=0,1,2", *SMALL, *ENSEMBLE, f"hydra.sweep.dir={sweep}"]
    res = cli(*args)
    assert res.exit_code == 130, res.stderr
    assert "3 member(s) of the ensemble checkpointed" in res.stderr
    stopped = [read_metrics(r) for r in members(sweep)]
    assert [m["status"] for m in stopped] == ["interrupted"] * 3
    assert [m["iterations"] for m in stopped] == [3, 3, 3]
    res = cli("spiral-vae", f"resume={members(sweep)[2]}")  # a member's checkpoint, solo
    assert res.exit_code == 0, res.stderr
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    assert "2 job(s) resume from their checkpoint" in res.stderr
    assert calls[3:] == [[4, 4], [5, 5], [6, 6]]
    for seed in (1, 2):
        solo = outputs / f"solo{seed}"
        assert cli("spiral-vae", f"seed={seed}", *SMALL, f"hydra.run.dir={solo}").exit_code == 0
        assert_same_run(members(sweep)[seed], solo)


def _build(tmp_path, seed, *overrides):
    cfg = odecli.compose("spiral-vae", [*SMALL, f"seed={seed}", *overrides])
    (tmp_path / str(seed)).mkdir(exist_ok=True)
    return SpiralVAE(cfg, tmp_path / str(seed))


def test_members_solves_keep_their_own_horizons(tmp_path):
    # anchors differ per member, so does how far each member's latent solve runs: a member
    # whose solo solve is short stops where it does (its NFE), and one with no backward
    # solve at all (every anchor at 0) is not solved
    from odecli.numerics.solve import SolverSpec

    exps = [_build(tmp_path, s) for s in (0, 1)]
    batch = SpiralMembers(exps)
    nets = batch._model([0, 1])
    z0 = torch.randn(2, 5, exps[0].model.latent_dim, dtype=torch.float64)
    anchor = torch.tensor([[3, 4, 7, 2, 9], [0, 0, 0, 0, 0]])
    dt = exps[0].t[1] - exps[0].t[0]
    with torch.no_grad():
        pred, solves = batch._decode([0, 1], nets, z0, dt, anchor, 20)
        spec = SolverSpec.from_cfg(exps[0].cfg.solver, exps[0].cfg.gradient)
        for m, e in enumerate(exps):
            before = e.model.func.nfe
            solo = e.model.decode_grid(z0[m], dt, anchor[m], 20, spec)
            torch.testing.assert_close(pred[m], solo, rtol=1e-10, atol=1e-12)
            fwd, bwd = solves[0]
            assert fwd.nfe[m] + bwd.nfe[m] == e.model.func.nfe - before
    assert solves[0][1].nfe[1] == 0  # member 1: no backward solve


def test_members_batches_and_noise_are_their_solo_draws(tmp_path):
    # each member's batch from its own generator, its epsilon from its own torch generator
    from odecli.engine.ensemble import own_torch_rng

    batched = []
    for s in (0, 1):
        batched.append(_build(tmp_path, s))
        own_torch_rng(batched[-1])
    torch.manual_seed(123)  # the global generator plays no part in the members' draws
    per, out = SpiralMembers(batched).losses([0, 1], [1, 1])
    for m, s in enumerate((0, 1)):
        e = _build(tmp_path, s)  # torch's global generator now as in the solo run
        loss, extras = e.loss(1)
        assert float(per[m].detach()) == pytest.approx(float(loss.detach()), rel=1e-12)
        assert out[m][3]["kl"] == pytest.approx(extras["kl"], rel=1e-12)
        assert out[m][3]["loglik"] == pytest.approx(extras["loglik"], rel=1e-12)
