"""gradient=checkpoint on problems with known solutions, for every method it replays.

Four small float64 problems in the spirit of torchdiffeq's own test problems (written for
odecli): a constant drift held on its exact line by a stiffening correction, a linear system,
a time-dependent (sine) linear field, and a field that ignores y and has no parameters. Each
is checked against direct backprop, against the gradient of its exact solution, and with
torch.autograd.gradcheck, forwards and backwards in time.

Direct backprop also differentiates torchdiffeq's first step-size guess (`_select_initial_step`
runs with a graph), which the checkpointed gradient holds fixed like every other step size; the
comparison therefore hands odeint the first accepted step as `first_step`, which gives the very
same accepted steps with no gradient through them.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from odecli.numerics import aca, methods

DTYPE = torch.float64
T = torch.tensor([0.0, 0.25, 0.7, 1.0], dtype=DTYPE)  # 0.25, 0.7 fall inside steps


def _param(value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value.detach().clone())


class Constant(nn.Module):
    """dy/dt = a + (y - a t - b)^3: from y0 = b the solution is the line b + a t, and the
    correction (zero on it) gives the step-size controller and the Jacobian something to do."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = _param(a), _param(b)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a + (y - self.a * t - self.b) ** 3

    def exact(self, t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        # valid from y0 == b; its derivatives are the exact sensitivities there as well
        return y0 + self.a * t[:, None]


class Linear(nn.Module):
    """dy/dt = A y: y(t) = expm(A t) y0 (torch's matrix_exp differentiates exactly)."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = _param(A)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.A @ y

    def exact(self, t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.linalg.matrix_exp(self.A * s) @ y0 for s in t])


class Sine(nn.Module):
    """dy/dt = cos(w t) y: y(t) = y0 exp(sin(w t) / w); time-dependent, so stage times count."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = _param(w)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cos(self.w * t) * y

    def exact(self, t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        return y0 * torch.exp(torch.sin(self.w * t[:, None]) / self.w)


class Exp(nn.Module):
    """dy/dt = exp(t): ignores y and has no parameters, so its stages carry no graph."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(t) * torch.ones_like(y)

    def exact(self, t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        return y0 + (torch.exp(t) - 1)[:, None]


def _values(seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen, dtype=DTYPE) for s in shapes]


def problem(name: str) -> tuple[type[nn.Module], list[torch.Tensor], torch.Tensor]:
    """The field class, its parameter values and y0 (constructing a fresh field per solve)."""
    if name == "constant":
        a, b = _values(1, (3,), (3,))
        return Constant, [a, b], b.clone()
    if name == "linear":
        A, y0 = _values(2, (3, 3), (3,))
        return Linear, [0.5 * A], y0
    if name == "sine":
        (y0,) = _values(3, (3,))
        return Sine, [torch.tensor(2.5, dtype=DTYPE)], y0
    (y0,) = _values(4, (3,))
    return Exp, [], y0


PROBLEMS = ("constant", "linear", "sine", "exp")
# Fixed-grid step 0.1 puts 0.25 and 0.7 inside a step: the interpolation is replayed too.
METHODS = [(m, {"rtol": 1e-6, "atol": 1e-8}) for m in methods.FAST_LOOP] + [
    (m, {"options": {"step_size": 0.1}}) for m in methods.FIXED_RK]
IDS = [m for m, _ in METHODS]


def run(solver, name: str, sign: float, **kw) -> tuple[torch.Tensor, list[torch.Tensor], Any]:
    """Solve, backprop a weighted sum of all outputs: (solution, [dL/dy0, dL/dparams...], the
    first accepted step of a checkpointed adaptive solve or None)."""
    cls, values, y0 = problem(name)
    func = cls(*values)
    y0 = y0.clone().requires_grad_(True)
    out = solver(func, y0, T * sign, **kw)
    replay = getattr(out.grad_fn, "replay", None)
    first = float(replay.recorder.steps[0][2]) if replay and not replay.fixed else None
    (weights,) = _values(5, tuple(out.shape))
    (out * weights).sum().backward()
    return out.detach(), [y0.grad, *(p.grad for p in func.parameters())], first


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / (1 + b.abs().max()))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["forward", "reversed"])
@pytest.mark.parametrize("method,kw", METHODS, ids=IDS)
@pytest.mark.parametrize("name", PROBLEMS)
def test_solution_is_odeints_and_gradient_is_direct_backprops(name, method, kw, sign):
    out_c, g_c, first = run(aca.odeint_checkpoint, name, sign, method=method, **kw)
    if first is not None:  # direct backprop with the same, gradient-free, steps
        kw = {**kw, "options": {"first_step": first}}
    out_d, g_d, _ = run(odeint, name, sign, method=method, **kw)
    assert torch.equal(out_c, out_d)
    for a, b in zip(g_c, g_d, strict=True):  # measured: at most 3.2e-16
        assert a is not None
        assert max_rel(a, b) < 1e-14


# Adaptive methods at a tight tolerance: (rtol = atol, bound), bounds ~10x the measured error.
# dopri8 stays at ~1e-7 because torchdiffeq's dopri8 solution itself is only ~1e-8 accurate
# here (its error estimate lets it take 5 steps), not because of the gradient. Fixed grids must
# converge at their order (output times on the grid, so the linear interpolation adds none).
ANALYTIC = {"dopri5": (1e-12, 1e-10), "dopri8": (1e-12, 3e-6), "bosh3": (1e-10, 3e-5),
            "fehlberg2": (1e-9, 5e-6), "adaptive_heun": (1e-7, 6e-6)}
ORDER = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


def analytic_error(sign: float, t: torch.Tensor, method: str, **kw) -> float:
    """Largest gap between the checkpointed gradient of the linear problem and the exact one."""
    cls, values, y0 = problem("linear")
    (weights,) = _values(6, (len(t), 3))
    grads = []
    for solve in (lambda f, y: aca.odeint_checkpoint(f, y, t * sign, method=method, **kw),
                  lambda f, y: f.exact(t * sign, y)):
        func, y = cls(*values), y0.clone().requires_grad_(True)
        (solve(func, y) * weights).sum().backward()
        grads.append(torch.cat([y.grad, func.A.grad.reshape(-1)]))
    return float((grads[0] - grads[1]).abs().max())


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["forward", "reversed"])
@pytest.mark.parametrize("method", list(ANALYTIC))
def test_adaptive_gradient_is_the_exact_gradient_at_tight_tolerance(method, sign):
    tol, bound = ANALYTIC[method]
    assert analytic_error(sign, T, method, rtol=tol, atol=tol) < bound


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["forward", "reversed"])
@pytest.mark.parametrize("method", list(ORDER))
def test_fixed_grid_gradient_converges_to_the_exact_gradient_at_the_method_order(method, sign):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE)
    coarse, fine = (analytic_error(sign, t, method, options={"step_size": h}) for h in (0.1, 0.05))
    assert 0.8 * 2 ** ORDER[method] < coarse / fine < 1.25 * 2 ** ORDER[method]


class Fresh(torch.autograd.Function):
    """odeint_checkpoint for gradcheck: each backward re-solves and backpropagates once.

    gradcheck backpropagates once per output element through one forward, which a single
    checkpointed solve refuses (its checkpoints are freed by the first backward)."""

    @staticmethod
    def forward(ctx, cls, kw, y0, *values):
        ctx.cls, ctx.kw = cls, kw
        ctx.save_for_backward(y0, *values)
        return aca.odeint_checkpoint(cls(*values), y0, **kw)

    @staticmethod
    def backward(ctx, grad):
        y0, *values = (v.detach().requires_grad_(True) for v in ctx.saved_tensors)
        func = ctx.cls(*values)
        with torch.enable_grad():
            out = aca.odeint_checkpoint(func, y0, **ctx.kw)
        grads = torch.autograd.grad(out, [y0, *func.parameters()], grad, allow_unused=True)
        return (None, None, *grads)


# Finite differences also see the adaptive step sizes move with the inputs, which neither the
# checkpointed gradient nor (but for the first step) direct backprop follows: gradcheck fails
# for both alike on bosh3, fehlberg2, adaptive_heun and dopri8 at free step sizes (dopri5 at
# 1e-10 is accurate enough). Those run with their steps pinned (first_step = max_step, all
# accepted at rtol 1e-3): still the adaptive replay, with its carried stage and interpolant.
PINNED = {"rtol": 1e-3, "atol": 1e-3, "options": {"first_step": 0.05, "max_step": 0.05}}
GRADCHECK = [("dopri5", {"rtol": 1e-10, "atol": 1e-10})] + [
    (m, PINNED) for m in methods.FAST_LOOP if m != "dopri5"] + [
    (m, {"options": {"step_size": 0.1}}) for m in methods.FIXED_RK]


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["forward", "reversed"])
@pytest.mark.parametrize("method,kw", GRADCHECK, ids=[m for m, _ in GRADCHECK])
@pytest.mark.parametrize("name", ["constant", "linear"])
def test_gradcheck(name, method, kw, sign):
    cls, values, y0 = problem(name)
    inputs = [v.clone().requires_grad_(True) for v in (y0, *values)]
    kw = {**kw, "t": T * sign, "method": method}
    assert torch.autograd.gradcheck(lambda *x: Fresh.apply(cls, kw, *x), inputs)


def test_a_second_backward_through_one_solve_is_why_gradcheck_needs_the_wrapper():
    cls, values, y0 = problem("linear")
    inputs = [v.clone().requires_grad_(True) for v in (y0, *values)]
    with pytest.raises(RuntimeError, match="backpropagating twice"):
        torch.autograd.gradcheck(
            lambda y, A: aca.odeint_checkpoint(cls(A), y, T, method="rk4"), inputs)
