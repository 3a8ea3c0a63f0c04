"""Each system's ground truth against known mathematics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torchdiffeq import odeint

from odecli.dynamics import systems
from odecli.errors import ConfigError


def build(name: str, **extra):
    base = {"name": name, "y0": [1.0, 1.0], "t0": 0.0, "t1": 5.0, "data_size": 51,
            "extrapolate": 0.2}
    return systems.build({**base, **extra})


def expm_solution(A: np.ndarray, y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Row-vector convention: y(t) = y0 expm(A t)."""
    return np.stack([y0 @ scipy.linalg.expm(A * (ti - t[0])) for ti in t])


@pytest.mark.parametrize("name,A", [
    ("spiral", np.array([[-0.1, 2.0], [-2.0, -0.1]])),
    ("lotka_linear", np.array([[0.0, -3.0], [1.5, 0.0]])),  # [[0, -b c/d], [d a/b, 0]]
    ("random", systems.random_matrix(11).numpy()),
])
def test_linear_systems_follow_the_matrix_exponential(name, A):
    s = build(name, matrix_seed=11)
    t = s.full_t().numpy()
    expected = expm_solution(A, s.y0.numpy(), t)
    np.testing.assert_allclose(s.trajectory(s.full_t()).numpy(), expected, rtol=1e-9,
                               atol=1e-9)
    # The same field integrated numerically (an independent path) agrees too.
    numeric = odeint(s.field, s.y0, s.full_t(), rtol=1e-10, atol=1e-12).numpy()
    np.testing.assert_allclose(numeric, expected, rtol=1e-6, atol=1e-7)


def test_random_system_is_randn_over_two_from_its_own_seed():
    gen = torch.Generator().manual_seed(7)
    expected = torch.randn(2, 2, generator=gen, dtype=torch.float64) / 2
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(build("random", matrix_seed=7).field.A, expected)
    assert not torch.equal(build("random", matrix_seed=8).field.A, expected)


def test_lotka_volterra_conserves_its_first_integral():
    s = build("lotka", y0=[1.0, 1.0], t1=10.0, data_size=201)
    y = s.trajectory()
    V = s.field.invariant(y)
    assert float((V - V[0]).abs().max()) < 1e-8
    assert bool((y > 0).all())           # populations stay positive
    assert float(y[:, 0].max()) > 5.0    # and the orbit is far from the equilibrium (3, 1.5)


def test_lotka_field_is_the_predator_prey_equations():
    f = systems.LotkaVolterraField(1.5, 1.0, 3.0, 1.0)
    dy = f(torch.tensor(0.0), torch.tensor([[2.0, 0.5]]))
    assert torch.allclose(dy, torch.tensor([[1.5 * 2 - 2 * 0.5, 2 * 0.5 - 3 * 0.5]]))
    # The equilibrium (c/d, a/b) does not move.
    assert torch.allclose(f(torch.tensor(0.0), torch.tensor([3.0, 1.5])), torch.zeros(2))


def test_cubic_spiral_without_damping_conserves_x4_plus_y4():
    # dy/dt = y**3 A with A = [[0, 2], [-2, 0]] conserves x^4 + y^4.
    s = build("spiral_cubic", A=[[0.0, 2.0], [-2.0, 0.0]], y0=[2.0, 0.0], t1=3.0)
    y = s.trajectory()
    V = (y**4).sum(-1)
    assert float((V - 16.0).abs().max()) < 1e-7
    # With the default damping it decays at rate 0.1 (x^6 + y^6).
    s = build("spiral_cubic", y0=[2.0, 0.0], t1=3.0)
    y = s.trajectory()
    assert float((y**4).sum(-1)[-1]) < 16.0


def test_nonlinear_field_matches_the_gated_formula():
    s = build("nonlinear")
    y = torch.tensor([[0.6, 0.3]], dtype=torch.float64)
    x0 = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    A2 = torch.tensor(systems.NONLINEAR_A2, dtype=torch.float64)
    B2 = torch.tensor(systems.NONLINEAR_B2, dtype=torch.float64)
    g = float((y * x0).sum())
    sig = 1 / (1 + np.exp(-g))
    expected = sig * (y - x0) @ A2.T + (1 - sig) * (y + x0) @ B2.T
    assert torch.allclose(s.field(torch.tensor(0.0), y), expected)


def test_mlp_system_is_time_dependent_and_still_at_t_zero():
    s = build("mlp", t0=-15.0, t1=15.0, matrix_seed=1, gain=0.5)
    assert s.time_dependent
    y = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    # A bias-free ELU network of y*t is exactly zero at t = 0 and non-zero elsewhere.
    assert torch.equal(s.field(torch.tensor(0.0, dtype=torch.float64), y), torch.zeros(1, 2,
                       dtype=torch.float64))
    assert float(s.field(torch.tensor(3.0, dtype=torch.float64), y).abs().sum()) > 0
    layers = [s.field.W0, s.field.W1, s.field.W2, s.field.W3]
    assert [tuple(w.shape) for w in layers] == [(25, 2), (50, 25), (10, 50), (2, 10)]


def test_grid_and_extrapolation_window():
    s = build("spiral", t0=0.0, t1=5.0, data_size=51, extrapolate=0.2)
    assert len(s.t) == 51 and float(s.t[-1]) == 5.0
    assert len(s.t_extra) == 10
    assert float(s.t_extra[0]) == pytest.approx(5.1) and float(s.t_extra[-1]) == pytest.approx(6.0)


@pytest.mark.parametrize("bad,match", [
    ({"name": "nope"}, "unknown system 'nope'"),
    ({"t1": -1.0}, "must be greater than"),
    ({"data_size": 1}, "data_size"),
    ({"y0": [1.0]}, "2 entries"),
])
def test_bad_system_values_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        build(bad.pop("name", "spiral"), **bad)


def test_lotka_needs_positive_populations():
    with pytest.raises(ConfigError, match="positive"):
        build("lotka", y0=[1.0, -1.0])
