"""The fast loop (numerics/rk.py): torchdiffeq's solutions, NFE and gradients to float rounding."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from conftest import FAST, run_dirs
from torch import nn
from torchdiffeq import odeint

from odecli.errors import ConfigError, SolverError
from odecli.numerics import aca, methods, rk, rk_step, solve

TOL = {"rtol": 1e-6, "atol": 1e-8}


class Field(nn.Module):
    """A small nonlinear, time-dependent field with trainable weights."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(3, 16, generator=g, dtype=torch.float64) * 0.5)
        self.w2 = nn.Parameter(torch.randn(16, 2, generator=g, dtype=torch.float64) * 0.5)
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.field(t, y)

    def field(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([y, torch.sin(t).expand(*y.shape[:-1], 1)], -1)
        return torch.tanh(h @ self.w1) @ self.w2 - 0.1 * y


class Pair(nn.Module):
    """A tuple state (z, log-density-like accumulator), as a flow's."""

    def __init__(self) -> None:
        super().__init__()
        self.f = Field()

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z, _ = state
        dz = self.f(t, z)
        return dz, -(dz * z).sum(-1, keepdim=True)


def y0_and_t(sign: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    y0 = torch.linspace(-1, 1, 16, dtype=torch.float64).view(8, 2)
    return y0, sign * torch.linspace(0, 2, 7, dtype=torch.float64)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["forward", "reversed"])
@pytest.mark.parametrize("method", methods.FAST_LOOP)
def test_fast_solution_and_nfe_are_odeints(method, sign):
    func = Field()
    y0, t = y0_and_t(sign)
    ref = odeint(func, y0, t, method=method, **TOL)
    ref_nfe, func.calls = func.calls, 0
    counted = []
    out = rk.odeint_fast(func, y0, t, method=method, gradient="none", count=counted.append, **TOL)
    assert func.calls == sum(counted) == ref_nfe
    # float64: the same steps, the arithmetic regrouped (dopri8's large coefficients cancel)
    assert (out - ref).abs().max() < 1e-9


def test_tuple_states_solve_as_odeint_with_its_mixed_norm():
    func = Pair()
    y0, t = y0_and_t()
    state = (y0, torch.zeros(8, 1, dtype=torch.float64))
    ref = odeint(func, state, t, method="dopri5", **TOL)
    out = rk.odeint_fast(func, state, t, method="dopri5", gradient="none", **TOL)
    for a, b in zip(out, ref, strict=True):  # float64: the same steps, regrouped arithmetic
        assert a.shape == b.shape  # (5.6e-13 on values of 8 on an Intel Xeon, 0 on AMD EPYC)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "fehlberg2", "dopri8"])
def test_fast_checkpoint_gradients_equal_the_torchdiffeq_replay(method):
    grads = []
    for solver in (aca.odeint_checkpoint, rk.odeint_fast):
        func = Field()
        y0, t = y0_and_t()
        y0.requires_grad_(True)
        out = solver(func, y0, t, method=method, **TOL)
        weights = torch.cos(torch.arange(out.numel(), dtype=torch.float64)).view_as(out)
        (out * weights).sum().backward()
        grads.append([y0.grad, func.w1.grad, func.w2.grad])
    for a, b in zip(*grads, strict=True):
        assert (a - b).abs().max() < 1e-8 * (1 + b.abs().max())


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_fast_direct_backprop_is_torchdiffeqs_with_the_same_first_step(method):
    # torchdiffeq's direct backprop holds every step size fixed but the first guess; given
    # that step as an option, it and the fast loop's graph give the same gradient
    grads, first = [], None
    for fast in (True, False):
        func = Field()
        y0, t = y0_and_t()
        y0.requires_grad_(True)
        spec = solve.SolverSpec(method=method, gradient="direct", fast=fast, **TOL)
        if first is not None:
            spec.options = {"first_step": first}
        out = solve.solve(func, y0, t, spec)
        assert not hasattr(out.grad_fn, "replay")  # a plain graph, no checkpoints
        (out * torch.sin(out.detach())).sum().backward()
        grads.append([y0.grad, func.w1.grad, func.w2.grad])
        if first is None:
            first = rk.FastSolve(func, y0, t, method, TOL["rtol"], TOL["atol"], None)._first_step(
                0.0, y0.detach(), func(t[0], y0.detach()))
    for a, b in zip(*grads, strict=True):
        assert (a - b).abs().max() < 1e-9 * (1 + b.abs().max())


def test_solve_routes_adaptive_checkpoint_and_evaluation_to_the_fast_loop():
    func = solve.CountingField(Field())
    y0, t = y0_and_t()
    fast = solve.SolverSpec(method="dopri5", **TOL, gradient="checkpoint")
    slow = solve.SolverSpec(method="dopri5", fast=False, **TOL, gradient="checkpoint")
    out = solve.solve(func, y0.clone().requires_grad_(True), t, fast)
    assert isinstance(out.grad_fn.replay, rk.FastSolve)
    n_fast, func.nfe = func.nfe, 0
    ref = solve.solve(func, y0.clone().requires_grad_(True), t, slow)
    assert isinstance(ref.grad_fn.replay, aca._Replay)
    assert func.nfe == n_fast  # CountingField is told of every evaluation
    func.nfe = 0
    with torch.no_grad():  # evaluation: the fast loop too, the same numbers and NFE
        evaluated = solve.solve(func, y0, t, fast)
    assert func.nfe == n_fast and torch.equal(evaluated, out.detach())
    # not for the fast loop: fixed grids, step_t, direct backprop
    assert not rk.supported("rk4", 1e-3, 1e-3, None)
    assert not rk.supported("dopri5", 1e-3, 1e-3, {"step_t": [0.5]})
    direct = solve.solve(func, y0.clone().requires_grad_(True), t,
                         solve.SolverSpec(method="dopri5", gradient="direct", **TOL))
    assert not hasattr(direct.grad_fn, "replay")


def test_step_size_options_are_honoured_as_torchdiffeq_does():
    func = Field()
    y0, t = y0_and_t()
    options = {"max_step": 0.05, "first_step": 0.01, "safety": 0.8, "ifactor": 5.0,
               "dfactor": 0.3}
    ref = odeint(func, y0, t, method="dopri5", options=options, **TOL)
    ref_nfe, func.calls = func.calls, 0
    out = rk.odeint_fast(func, y0, t, method="dopri5", options=options, gradient="none", **TOL)
    assert func.calls == ref_nfe and (out - ref).abs().max() < 1e-12


def test_a_nan_state_and_a_step_budget_fail_with_one_line_errors():
    class Blowup(nn.Module):
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return y * float("nan")

    spec = solve.SolverSpec(method="dopri5", **TOL, gradient="checkpoint")
    y0, t = y0_and_t()
    with pytest.raises(SolverError, match="NaN or Inf"):
        solve.solve(solve.CountingField(Blowup()), y0, t, spec, grad=False)
    spec.options = {"max_num_steps": 2}
    with pytest.raises(SolverError, match="max_num_steps exceeded"):
        solve.solve(solve.CountingField(Field()), y0, t * 10, spec, grad=False)


def test_a_stop_request_abandons_the_solve_within_a_step():
    func = solve.CountingField(Field())
    func.abort = lambda: func.nfe > 20
    y0, t = y0_and_t()
    with pytest.raises(solve.StepAborted):
        solve.solve(func, y0, t, solve.SolverSpec("dopri5", "checkpoint", **TOL))
    assert func.nfe <= 20 + 6  # at most one step's stages past the request


def test_interpolant_matrix_reproduces_torchdiffeqs_fit():
    from torchdiffeq._impl.interp import _interp_evaluate, _interp_fit

    tab = rk_step.tableau("dopri5")
    g = torch.Generator().manual_seed(1)
    y0 = torch.randn(4, dtype=torch.float64, generator=g)
    ks = [torch.randn(4, dtype=torch.float64, generator=g) for _ in range(7)]
    h = 0.3
    y1 = y0 + h * sum(b * k for b, k in zip(tab.b, ks, strict=True))
    ym = y0 + h * sum(m * k for m, k in zip(tab.mid, ks, strict=True))
    coeffs = _interp_fit(y0, y1, ym, ks[0], ks[-1], torch.tensor(h, dtype=torch.float64))
    ts = [1.0, 1.1, 1.25, 1.3]
    out = rk_step.interpolate(tab, y0, ks, 1.0, h, ts)
    for row, s in zip(out, ts, strict=True):
        ref = _interp_evaluate(coeffs, torch.tensor(1.0, dtype=torch.float64),
                               torch.tensor(1.0 + h, dtype=torch.float64),
                               torch.tensor(s, dtype=torch.float64))
        assert (row - ref).abs().max() < 1e-13 * (1 + ref.abs().max())
    assert math.isclose(float(out[-1, 0]), float(y1[0]), rel_tol=1e-12)


@pytest.mark.slow
def test_compiled_steps_give_the_eager_numbers_and_gradients():
    pytest.importorskip("torch._inductor")
    class Uncounted(Field):  # an int attribute that changes would make torch.compile recompile
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.field(t, y)

    results = []
    for compiled in (False, True):
        func = Uncounted()
        y0, t = y0_and_t()
        y0 = y0.float().requires_grad_(True)
        func.float()
        out = rk.odeint_fast(func, y0, t.float(), method="dopri5", rtol=1e-5, atol=1e-6,
                             compile=compiled)
        out.square().sum().backward()
        results.append((out.detach(), y0.grad, func.w1.grad))
    for a, b in zip(*results, strict=True):
        assert (a - b).abs().max() < 1e-4 * (1 + b.abs().max())


def test_a_compile_that_fails_runs_the_step_eagerly_with_one_warning(monkeypatch, caplog):
    # as a broken library in inductor's cache does (a compiler killed mid-write): the solve
    # goes on with the eager step's numbers, and compiling is not retried each step
    from torch._dynamo.exc import BackendCompilerFailed

    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append(1)
            raise BackendCompilerFailed(broken_compile, ImportError("file too short"), None)
        return run

    func = Field()
    y0, t = y0_and_t()
    eager = rk.odeint_fast(func, y0, t, method="dopri5", rtol=1e-7, atol=1e-9)
    monkeypatch.setattr(rk.torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="odecli.numerics.rk"):
        out = rk.odeint_fast(Field(), y0, t, method="dopri5", rtol=1e-7, atol=1e-9,
                             compile=True)
    assert (out - eager).abs().max() < 1e-12  # (times as tensors, as compiled steps take them)
    assert len(calls) == 1  # the forward step's compile, tried once
    warned = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warned) == 1 and "ImportError: file too short" in warned[0]
    assert "TORCHINDUCTOR_CACHE_DIR" in warned[0]


def test_evaluation_solves_stay_eager_when_training_compiles():
    # evaluation and sampling see many batch sizes: compiling each would cost more than it
    # saves, so a compiled spec runs them on the eager fast loop (nothing is compiled)
    field = Field()
    func = solve.CountingField(field)
    y0, t = y0_and_t()
    spec = solve.SolverSpec(method="dopri5", rtol=1e-6, atol=1e-8, compile=True,
                            gradient="checkpoint")
    assert spec.compiled
    out = solve.solve(func, y0, t, spec, grad=False)
    ref = odeint(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8)
    assert (out - ref).abs().max() < 1e-9 and func.nfe > 0
    assert not rk._COMPILED.get(field)


def test_compile_auto_compiles_only_runs_past_the_break_even():
    spec = solve.SolverSpec.from_cfg({"method": "dopri5", "rtol": 1e-3, "atol": 1e-4,
                                      "step_size": None, "options": {}, "fast": True,
                                      "compile": "auto"}, {"name": "checkpoint"})
    assert not spec.compiled  # unresolved: never
    spec.resolve_compile(rk.COMPILE_BREAK_EVEN - 1)
    assert spec.compile is False and not spec.compiled
    spec.compile = "auto"
    spec.resolve_compile(rk.COMPILE_BREAK_EVEN)
    assert spec.compiled
    forced = solve.SolverSpec("dopri5", "checkpoint", compile=True, fast=False)
    forced.resolve_compile(1)
    assert not forced.compiled  # compiling is a property of the fast loop only
    with pytest.raises(ConfigError, match="solver.compile must be true, false or auto"):
        solve.SolverSpec.from_cfg({"method": "dopri5", "rtol": 1e-3, "atol": 1e-4,
                                   "step_size": None, "options": {}, "fast": True,
                                   "compile": "sometimes"}, {"name": "checkpoint"})


@pytest.mark.parametrize("overrides,loop,note", [
    ([], "fast", None),
    (["solver.fast=false"], "torchdiffeq", None),
    (["solver=rk4", "solver.compile=true"], "torchdiffeq",
     "solver.compile=true has no effect here (rk4 runs on torchdiffeq's loop)"),
    (["gradient=adjoint", "solver.compile=true"], "torchdiffeq",
     "solver.compile=true has no effect here (gradient=adjoint)"),
])
def test_a_run_records_its_loop_and_announces_a_compile_that_cannot_apply(
        cli, outputs, overrides, loop, note):
    res = cli("train", *FAST, "system=lotka", "system.data_size=40", "train.niters=2",
              *overrides)
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    assert json.loads((run / "metrics.json").read_text())["solver_loop"] == loop
    notes = [ln for ln in res.stderr.splitlines() if "solver.compile" in ln]
    assert notes == ([] if note is None else [f"note: {note}: it compiles the fast loop"])
