"""`odecli cnf`: trace estimators, the change of variables, the toy densities and their true
log-densities, the baselines, and the command end to end (train, eval, sample, report, bad
input)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import read_metrics, run_dirs
from torch import nn

from odecli.engine import schema as engine
from odecli.errors import ConfigError
from odecli.flows import schema, toy
from odecli.flows.model import (
    ACTIVATIONS,
    CNFDynamics,
    Field,
    autograd_jacobian,
    flow_back,
    log_likelihood,
    sample_noise,
)
from odecli.launch.bridge import compose, validate
from odecli.numerics.solve import CountingField, SolverSpec
from odecli.registry import COMMANDS

TIGHT = SolverSpec(method="dopri5", rtol=1e-9, atol=1e-9, gradient="direct")
SMALL = ["quiet=true", "data.n_train=600", "data.n_val=200", "data.n_test=300",
         "model.width=16", "model.depth=2", "train.batch_size=64", "train.niters=6",
         "train.test_freq=3", "solver.rtol=1e-3", "solver.atol=1e-3", "plots.grid=20",
         "plots.n_samples=200", "plots.n_frames=3"]


def _brute_jacobian(field: nn.Module, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.autograd.functional.jacobian(lambda v: field(t, v[None])[0], zi)
                        for zi in z])


class LinearField(nn.Module):
    """f(t, z) = A z: the flow is z(t) = expm(A t) z(0), logdet = t tr(A)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


# ------------------------------------------------------------------------------ traces

@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("time_input", [True, False])
def test_exact_jacobian_equals_brute_force(activation, time_input):
    torch.manual_seed(0)
    field = Field(2, 7, 3, activation, time_input).double()
    z, t = torch.randn(5, 2, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    f, jac = field.value_and_jacobian(t, z)
    brute = _brute_jacobian(field, t, z)
    torch.testing.assert_close(f, field(t, z))
    torch.testing.assert_close(jac, brute, rtol=1e-10, atol=1e-12)
    _, by_autograd = autograd_jacobian(field, t, z)
    torch.testing.assert_close(by_autograd, brute, rtol=1e-10, atol=1e-12)
    div = CNFDynamics(field, "exact")(t, (z, z[:, 0]))[1]
    torch.testing.assert_close(div, brute.diagonal(dim1=-2, dim2=-1).sum(-1))


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_on_a_known_field(noise):
    torch.manual_seed(1)
    a = torch.tensor([[1.5, -2.0], [0.7, -0.4]], dtype=torch.float64)  # tr = 1.1
    dyn = CNFDynamics(LinearField(a), "hutchinson")
    n = 200_000
    z = torch.randn(n, 2, dtype=torch.float64)
    dyn.noise = sample_noise(noise, z)
    assert dyn.noise.mean().abs() < 0.01 and (dyn.noise.pow(2).mean() - 1).abs() < 0.01
    est = dyn(torch.tensor(0.0), (z, z[:, 0]))[1]
    # e^T A e: mean tr(A); variance 2 sum_{i!=j} ((a_ij + a_ji) / 2)^2 for Rademacher noise,
    # plus 2 sum a_ii^2 for Gaussian noise.
    off = ((a[0, 1] + a[1, 0]) / 2) ** 2 * 2 * 2
    var = float(off + (2 * a.diagonal().pow(2).sum() if noise == "gaussian" else 0))
    assert est.var().item() == pytest.approx(var, rel=0.03)
    assert abs(est.mean().item() - 1.1) < 4 * math.sqrt(var / n)


def test_rademacher_trace_of_a_diagonal_field_is_exact():
    dyn = CNFDynamics(LinearField(torch.diag(torch.tensor([2.0, -0.5]))), "hutchinson")
    z = torch.randn(50, 2)
    dyn.noise = sample_noise("rademacher", z)
    torch.testing.assert_close(dyn(torch.tensor(0.0), (z, z[:, 0]))[1],
                               torch.full((50,), 1.5))


# ------------------------------------------------------------------ change of variables

def _gaussian_logpdf(x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    sol = np.linalg.solve(cov, x.T).T
    return -0.5 * ((x * sol).sum(1) + np.linalg.slogdet(cov)[1] + 2 * math.log(2 * math.pi))


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_linear_flow_density_matches_the_closed_form(trace):
    """z(T) = M x with M = expm(A T) ~ N(0, I), so x ~ N(0, M^-1 M^-T)."""
    from scipy.linalg import expm

    a = np.array([[0.3, -1.1], [0.8, -0.6]])
    T = 0.7
    m = expm(a * T)
    minv = np.linalg.inv(m)
    cov = minv @ minv.T
    x = np.random.default_rng(0).standard_normal((40, 2)) * 1.5
    dyn = CNFDynamics(LinearField(torch.tensor(a)), trace)
    # Hutchinson: each point under all four Rademacher vectors; their mean is the exact trace
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]],
                         dtype=torch.float64)
    xt = torch.tensor(x).repeat_interleave(4, 0)
    dyn.noise = signs.repeat(len(x), 1)
    with torch.no_grad():
        logp, _, _ = log_likelihood(CountingField(dyn), dyn, xt, T, TIGHT, grad=False)
    if trace == "hutchinson":
        assert logp.view(-1, 4).std(1).min() > 0.1  # each estimate alone is off
    np.testing.assert_allclose(logp.view(-1, 4).mean(1).numpy(), _gaussian_logpdf(x, cov),
                               rtol=1e-7)
    # and sampling inverts the flow: base points carried back land at M^-1 z
    z = torch.randn(10, 2, dtype=torch.float64)
    back = flow_back(CountingField(CNFDynamics(LinearField(torch.tensor(a)))), z,
                     torch.tensor([T, 0.0], dtype=torch.float64), TIGHT)
    np.testing.assert_allclose(back[-1].numpy(), z.numpy() @ minv.T, rtol=1e-7, atol=1e-9)


def test_regularisers_integrate_kinetic_energy_and_frobenius_norm():
    """A = diag(-1, -1): z(t) = x e^-t, |f|^2 = |x|^2 e^-2t, |A|_F^2 = 2."""
    dyn = CNFDynamics(LinearField(-torch.eye(2, dtype=torch.float64)), "exact",
                      regularise=True)
    x = torch.tensor([[1.0, 2.0], [0.5, -0.5]], dtype=torch.float64)
    with torch.no_grad():
        _, kin, jac = log_likelihood(CountingField(dyn), dyn, x, 1.0, TIGHT, grad=False)
    expected = x.pow(2).sum(-1) * (1 - math.exp(-2)) / 2
    torch.testing.assert_close(kin, expected)
    torch.testing.assert_close(jac, torch.full((2,), 2.0, dtype=torch.float64))


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_checkpointed_gradient_of_the_nll_equals_direct_backprop(trace):
    torch.manual_seed(2)
    field = Field(2, 8, 2, "tanh", True).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    noise = sample_noise("gaussian", x)
    grads = []
    for gradient in ("direct", "checkpoint"):
        dyn = CNFDynamics(field, trace, regularise=True)
        dyn.noise = noise
        spec = SolverSpec(method="rk4", step_size=0.1, gradient=gradient)
        logp, kin, jac = log_likelihood(CountingField(dyn), dyn, x, 1.0, spec)
        field.zero_grad()
        (-logp.mean() + 0.1 * kin.mean() + 0.1 * jac.mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in field.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------- data and baselines

def test_every_generator_is_fixed_by_the_seed_and_returns_n_points():
    for name in toy.GENERATORS:
        a = toy.make_data({"name": name, "n_train": 101, "n_val": 7, "n_test": 13}, 3)
        b = toy.make_data({"name": name, "n_train": 101, "n_val": 7, "n_test": 13}, 3)
        assert (a.train.shape, a.val.shape, a.test.shape) == ((101, 2), (7, 2), (13, 2))
        assert np.array_equal(a.test, b.test) and np.isfinite(a.train).all(), name
        assert np.abs(a.train).max() < 6, name


@pytest.mark.parametrize("name", list(toy.TRUE_LOG_DENSITY))
def test_true_densities_integrate_to_one_and_cover_their_samples(name):
    h = 0.01
    axis = np.arange(-6, 6, h) + h / 2
    xx, yy = np.meshgrid(axis, axis)
    p = np.exp(toy.TRUE_LOG_DENSITY[name](np.stack([xx.ravel(), yy.ravel()], 1)))
    assert p.sum() * h * h == pytest.approx(1.0, abs=1e-3)
    x = toy.make_data({"name": name, "n_train": 2, "n_val": 1, "n_test": 20000}, 0).test
    assert np.isfinite(toy.TRUE_LOG_DENSITY[name](x)).all()


def test_true_nll_of_known_densities():
    cb = toy.make_data({"name": "checkerboard", "n_train": 2, "n_val": 1, "n_test": 500}, 0)
    assert toy.true_nll("checkerboard", cb.test) == pytest.approx(math.log(32))
    g8 = toy.make_data({"name": "8gaussians", "n_train": 2, "n_val": 1, "n_test": 50000}, 0)
    # well-separated modes: entropy ~ log 8 + log(2 pi e sigma^2)
    entropy = math.log(8) + math.log(2 * math.pi * math.e * toy.GAUSS_STD**2)
    assert toy.true_nll("8gaussians", g8.test) == pytest.approx(entropy, abs=0.02)
    assert toy.true_nll("moons", g8.test) is None


def test_baselines_on_gaussian_data():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    chol = np.linalg.cholesky(cov)
    train, val, test = (rng.standard_normal((n, 2)) @ chol.T for n in (4000, 1000, 4000))
    exact = float(-_gaussian_logpdf(test, cov).mean())
    assert toy.gaussian_nll(train, test) == pytest.approx(exact, abs=0.02)
    kde, bandwidth = toy.kde_nll(train, val, test)
    assert exact < kde < exact + 0.1 and bandwidth > 0
    # the KDE of one point is that point's Gaussian kernel
    one = toy.kde_log_density(np.zeros((1, 2)), np.array([[0.3, -0.4]]), 0.5)
    assert one[0] == pytest.approx(-0.25 / 0.5 - math.log(2 * math.pi * 0.25))


# ---------------------------------------------------------------------------- the schema

def test_yaml_and_schema_hold_the_same_keys_and_the_engine_keys():
    from omegaconf import OmegaConf

    cfg = compose(COMMANDS["cnf"], [])
    out = schema.check_cnf(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    assert set(out) == set(plain)
    for node in ("data", "model", "reg", "plots"):
        assert set(out[node]) == set(plain[node]) == set(schema.CONFIG.fields[node].fields)
    for key, field in engine.TRAIN.fields.items():
        assert schema.CONFIG.fields["train"].fields[key] is field
    assert set(schema.DATASETS) == {"8gaussians", "checkerboard", "2spirals", "moons",
                                    "circles", "pinwheel", "rings"}
    assert out["model"]["trace"] == "exact" and out["reg"] == {"kinetic": 0.0,
                                                               "jacobian": 0.0}


def test_each_density_has_a_preset_and_the_checkerboard_one_is_documented_alike():
    """cnf_data=NAME picks the density (and, for the checkerboard, the settings measured to
    beat its KDE); command-line keys still win; docs/cnf.md and benchmarks/cnf_targets.py run the
    same preset."""
    from pathlib import Path

    for name in schema.DATASETS:
        out = schema.check_cnf(compose(COMMANDS["cnf"], [f"cnf_data={name}"]))
        assert out["data"]["name"] == name
    plain = schema.check_cnf(compose(COMMANDS["cnf"], []))
    tuned = schema.check_cnf(compose(COMMANDS["cnf"], ["cnf_data=checkerboard"]))
    assert plain["data"]["name"] == "8gaussians" and plain["model"]["width"] == 64
    assert (tuned["model"]["width"], tuned["train"]["batch_size"],
            tuned["train"]["niters"]) == (128, 256, 4000)
    assert tuned["reg"] == {"kinetic": 0.01, "jacobian": 0.01}
    assert tuned["solver"]["compile"] is True and plain["solver"]["compile"] == "auto"
    mine = schema.check_cnf(compose(COMMANDS["cnf"], ["cnf_data=checkerboard", "model.width=32",
                                                      "solver.compile=false"]))
    assert mine["model"]["width"] == 32 and mine["solver"]["compile"] is False
    root = Path(__file__).resolve().parents[1]
    assert "odecli cnf cnf_data=checkerboard " in (root / "docs" / "cnf.md").read_text()
    assert '"cnf_data=checkerboard"' in (root / "benchmarks" / "cnf_targets.py").read_text()


@pytest.mark.parametrize("overrides,expected", [
    (["data.name=checkerboard"], "data.name=checkerboard runs with cnf_data=8gaussians's "
     "settings for every key the command line does not set; cnf_data=checkerboard picks the "
     "ones tuned for checkerboard"),
    # the preset's keys all given on the command line: nothing left to say
    (["data.name=checkerboard", "model.width=128", "train.batch_size=256", "train.niters=4000",
      "reg.kinetic=0.01", "reg.jacobian=0.01", "solver.compile=true"], None),
    # a tuned option, another density: its settings stay in force
    (["cnf_data=checkerboard", "data.name=moons"], "data.name=moons runs with "
     "cnf_data=checkerboard's settings for every key the command line does not set"),
    (["cnf_data=checkerboard", "data.name=moons", "model.width=64", "train.batch_size=512",
      "train.niters=2000", "reg.kinetic=0", "reg.jacobian=0", "solver.compile=auto"], None),
    (["data.name=moons"], None),                       # neither option is tuned
    (["cnf_data=checkerboard"], None),                  # no dataset key given
    (["cnf_data=checkerboard", "data.name=checkerboard"], None),
])
def test_a_dataset_key_beside_a_preset_is_told_whose_settings_it_runs(overrides, expected):
    from odecli.launch import presets

    composed = compose(COMMANDS["cnf"], overrides, with_hydra=True)
    assert presets.note("cnf", composed, overrides) == expected
    assert presets.note("train", composed, overrides) is None
    assert presets.preset_keys("cnf_data", "checkerboard") == {
        "data.name", "model.width", "train.batch_size", "train.niters", "reg.kinetic",
        "reg.jacobian", "solver.compile"}
    assert presets.preset_keys("cnf_data", "moons") == {"data.name"}
    assert presets.preset_keys("cnf_data", "swissroll") == set()


@pytest.mark.parametrize("override,message", [
    ("data.name=swissroll", "unknown data.name 'swissroll'; choose one of: 8gaussians,"),
    ("data.n_train=1", "data.n_train must be an integer >= 2, got 1"),
    ("model.trace=brute", "unknown model.trace 'brute'; choose one of: exact, hutchinson"),
    ("model.noise=uniform", "unknown model.noise 'uniform'; choose one of: rademacher,"),
    ("model.activation=relu", "unknown model.activation 'relu'; choose one of: tanh,"),
    ("model.width=0", "model.width must be a positive integer, got 0"),
    ("model.time_length=0", "model.time_length must be a positive number, got 0"),
    ("reg.kinetic=-0.1", "reg.kinetic must be a non-negative number, got -0.1"),
    ("train.batch_size=30000", "train.batch_size (30000) must not exceed data.n_train"),
    ("plots.grid=3", "plots.grid must be an integer >= 10, got 3"),
    ("train.lr_min=1", "train.lr_min (1) must lie between 0 and train.lr ("),
    ("train.checkpoint_every=-3", "train.checkpoint_every must be an integer >= 0, got -3"),
    ("objective=nope", "objective 'nope' is not a metric odecli cnf can minimise"),
])
def test_bad_values_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as info:  # the bridge's check of every job, before Hydra
        validate(COMMANDS["cnf"], [override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("args", [
    ["data.name=checkerboard"], ["model.depth=0"], ["reg.jacobian=x"], ["solver=nope"],
    ["model.nope=1"], ["gradient=adjoint", "gradient.rtol=-1"], ["cnf_data=swissroll"],
])
def test_every_bad_input_is_one_line_exit_2_and_no_run_folder(cli, outputs, args):
    res = cli("cnf", *SMALL, *args)
    if args == ["data.name=checkerboard"]:  # the control: a good value runs, and is told
        assert res.exit_code == 0, res.stderr  # that its density has a tuned preset
        assert ("note: data.name=checkerboard runs with cnf_data=8gaussians's settings for "
                "every key the command line does not set; cnf_data=checkerboard picks the ones "
                "tuned for checkerboard") in res.stderr
        return
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert not run_dirs(outputs, "cnf")


def test_run_eval_sample_and_report(cli, outputs, tmp_path):
    res = cli("cnf", *SMALL, "model.trace=hutchinson", "reg.kinetic=0.01",
              "reg.jacobian=0.01", "plots.gif=true")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs, "cnf")
    m = read_metrics(run)
    assert m["status"] == "ok" and m["system"] == "8gaussians" and m["trace"] == "hutchinson"
    assert m["nll_gap"] == pytest.approx(m["test_nll"] - m["true_nll"])
    assert m["test_bpd"] == pytest.approx(m["test_nll"] / (2 * math.log(2)))
    assert m["true_nll"] < m["kde_nll"] < m["gaussian_nll"]
    for key in ("nfe_forward_per_iter", "nfe_backward_per_iter", "nfe_eval",
                "seconds_per_iter", "peak_memory_mb", "best_iteration"):
        assert m[key] is not None and m[key] > 0, key
    with open(run / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["iteration"] for r in rows] == ["3", "6"]
    assert {"nll", "kinetic", "jacobian", "val_nll"} <= set(rows[0])
    for name in ("cnf_density.png", "cnf_flow.png", "flow.gif", "loss.png"):
        assert (run / name).stat().st_size > 0, name

    # eval: the same model re-scored; a much tighter solver barely moves the NLL
    res = cli("eval", str(run), "solver.rtol=1e-7", "solver.atol=1e-7", "--out",
              str(tmp_path / "ev"))
    assert res.exit_code == 0, res.stderr
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["test_nll"] == pytest.approx(m["test_nll"], abs=2e-3)
    assert ev["nfe_eval"] > m["nfe_eval"] and ev["true_nll"] == m["true_nll"]
    res = cli("eval", str(run), "model.width=4")
    assert res.exit_code == 2 and "cannot change 'model.width=4'" in res.stderr

    # sample: N points, deterministic in --seed, .npy and .csv
    out = tmp_path / "s.npy"
    res = cli("sample", str(run), "--n", "57", "--out", str(out))
    assert res.exit_code == 0, res.stderr
    pts = np.load(out)
    assert pts.shape == (57, 2) and np.isfinite(pts).all()
    res = cli("sample", str(run), "--n", "57", "--out", str(tmp_path / "s.csv"))
    assert res.exit_code == 0
    assert np.allclose(np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1), pts)
    for args, text in ((["--n", "0", "--out", str(out)], "--n must be a positive integer"),
                       (["--n", "5", "--out", str(tmp_path / "s.txt")], "--out must end in"),
                       (["--n", "5", "--out", str(tmp_path / "no" / "s.npy")], "cannot write"),
                       (["--n", "5", "--out", str(tmp_path / "t.npy"), "model.width=3"],
                        "odecli sample cannot")):
        res = cli("sample", str(run), *args)
        assert res.exit_code == 2 and res.stderr.startswith(f"error: {text}"), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.txt").exists()
    res = cli("sample", str(tmp_path), "--n", "5", "--out", str(tmp_path / "u.npy"))
    assert res.exit_code == 2 and "not a run folder" in res.stderr

    # report: the cnf metrics are columns, sorted by test NLL
    res = cli("report", str(outputs / "cnf"), "--no-plots")
    assert res.exit_code == 0, res.stderr
    assert "test_nll" in res.stdout and "nll_gap" in res.stdout and "kde_nll" in res.stdout


def test_regularisers_do_not_shrink_the_solver_steps():
    """Step control sees (z, logdet) only: the same field takes the same steps with or without
    the regulariser integrals."""
    torch.manual_seed(3)
    field = Field(2, 8, 2, "tanh", True).double()
    x = torch.randn(32, 2, dtype=torch.float64) * 2
    spec = SolverSpec(method="dopri5", rtol=1e-5, atol=1e-5, gradient="direct")
    nfe, logps = [], []
    for regularise in (False, True):
        counter = CountingField(CNFDynamics(field, "exact", regularise))
        with torch.no_grad():
            logps.append(log_likelihood(counter, counter.func, x, 1.0, spec, grad=False)[0])
        nfe.append(counter.nfe)
    assert nfe[0] == nfe[1]
    torch.testing.assert_close(logps[0], logps[1])


def test_regularised_solves_stay_on_the_fast_loop(monkeypatch):
    """The regulariser integrals are kept out of the step control by scaling, not by a custom
    norm (which torchdiffeq's slower loop would have to take), and come back unscaled."""
    from odecli.numerics import rk

    calls = []
    real = rk.odeint_fast
    monkeypatch.setattr(rk, "odeint_fast", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(4)
    field = Field(2, 8, 2, "tanh", True).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    dyn = CNFDynamics(field, "exact", regularise=True)
    spec = SolverSpec(method="dopri5", rtol=1e-6, atol=1e-6, gradient="checkpoint")
    logp, kin, jac = log_likelihood(CountingField(dyn), dyn, x, 1.0, spec)
    assert calls
    with torch.no_grad():
        ref = log_likelihood(CountingField(dyn), dyn, x, 1.0, TIGHT, grad=False)
    for got, want in zip((logp, kin, jac), ref, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-4, atol=1e-5)


def test_resume_continues_bit_exact(cli, outputs, tmp_path):
    """3 iterations, then resume= to 6, equal 6 straight (Hutchinson noise and batches
    included)."""
    args = [*SMALL, "model.trace=hutchinson", "train.schedule=constant"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("cnf", *args, "train.niters=3", f"hydra.run.dir={a}").exit_code == 0
    res = cli("cnf", f"resume={a}", "train.niters=6")
    assert res.exit_code == 0, res.stderr
    assert cli("cnf", *args, f"hydra.run.dir={b}").exit_code == 0
    wa = torch.load(a / "checkpoint.pt", weights_only=True)["modules"]["field"]
    wb = torch.load(b / "checkpoint.pt", weights_only=True)["modules"]["field"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    assert read_metrics(a)["test_nll"] == read_metrics(b)["test_nll"]


def test_a_resumed_run_can_be_sampled(cli, outputs, tmp_path):
    # the stored config of a resumed run holds resume=RUN, which sampling drops again
    assert cli("cnf", *SMALL, "plots.enabled=false").exit_code == 0
    (run,) = run_dirs(outputs, "cnf")
    res = cli("cnf", *SMALL, "plots.enabled=false", "train.niters=8", f"resume={run}")
    assert res.exit_code == 0, res.stderr
    assert read_metrics(run)["iterations"] == 8
    res = cli("sample", str(run), "--n", "20", "--out", str(tmp_path / "s.npy"))
    assert res.exit_code == 0, res.stderr
    assert np.load(tmp_path / "s.npy").shape == (20, 2)

