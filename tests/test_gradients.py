"""gradient=checkpoint: the same solution as odeint, direct backprop's gradients, flat memory."""

from __future__ import annotations

import pytest
import torch
from conftest import read_metrics, run_dirs
from hydra import compose, initialize_config_dir
from torch import nn
from torchdiffeq import odeint

from odecli.numerics import aca, methods, solve
from odecli.paths import config_dir


class Field(nn.Module):
    """A small nonlinear, time-dependent field (time dependence exercises the stage times)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(2, 16, generator=gen, dtype=torch.float64) * 0.5)
        self.w2 = nn.Parameter(torch.randn(16, 2, generator=gen, dtype=torch.float64) * 0.5)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ self.w1) @ self.w2 * (1 + 0.3 * torch.sin(t))


def value_and_grads(solver, t: torch.Tensor, **kwargs):
    func = Field()
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]], dtype=torch.float64,
                      requires_grad=True)
    target = torch.linspace(-1, 1, len(t) * 6, dtype=torch.float64).reshape(len(t), 3, 2)
    out = solver(func, y0, t, **kwargs)
    ((out - target) ** 2).sum().backward()
    return out.detach(), [p.grad for p in func.parameters()] + [y0.grad]


def first_accepted_step(func: nn.Module, y0, t: torch.Tensor, **kwargs) -> float:
    """The first accepted step of a checkpointed adaptive solve: handed to odeint as first_step,
    it gives the same accepted steps with no gradient through torchdiffeq's first-step guess."""
    out = aca.odeint_checkpoint(func, y0, t, **kwargs)
    node = (out if isinstance(out, torch.Tensor) else out[0]).grad_fn
    while not hasattr(node, "replay"):  # a tuple's parts are views of the solve's output
        node = node.next_functions[0][0]
    return float(node.replay.recorder.steps[0][2])


@pytest.mark.parametrize("method,options", [("rk4", {"step_size": 0.07}), ("euler", None),
                                            ("midpoint", {"step_size": 0.1}), ("heun3", None)])
@pytest.mark.parametrize("backwards", [False, True])
def test_fixed_grid_gradients_equal_direct_backprop(method, options, backwards):
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    t = -t if backwards else t
    kw = {"method": method, "options": options}
    out_d, g_d = value_and_grads(odeint, t, **kw)
    out_c, g_c = value_and_grads(aca.odeint_checkpoint, t, **kw)
    assert torch.equal(out_d, out_c)
    for a, b in zip(g_d, g_c, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method,rtol", [("dopri5", 1e-7), ("bosh3", 1e-7), ("dopri8", 1e-7),
                                         ("fehlberg2", 1e-5), ("adaptive_heun", 1e-5)])
@pytest.mark.parametrize("backwards", [False, True])
def test_adaptive_solution_is_odeints_and_gradients_match_direct(method, rtol, backwards):
    # Direct backprop also differentiates torchdiffeq's first step-size guess (it runs with a
    # graph; later step sizes are chosen under no_grad). The checkpointed gradient holds every
    # accepted step fixed: a difference of the order of the tolerance, which vanishes (to
    # rounding) once direct backprop is given the same first step without a gradient.
    t = torch.linspace(0, 3, 25, dtype=torch.float64)
    t = -t if backwards else t
    kw = {"method": method, "rtol": rtol, "atol": rtol * 1e-2}
    out_d, g_d = value_and_grads(odeint, t, **kw)
    out_c, g_c = value_and_grads(aca.odeint_checkpoint, t, **kw)
    assert torch.equal(out_d, out_c)          # the very same forward arithmetic
    first = first_accepted_step(Field(), torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]],
                                                      dtype=torch.float64), t, **kw)
    _, g_fixed = value_and_grads(odeint, t, **kw, options={"first_step": first})
    for a, b, c in zip(g_d, g_c, g_fixed, strict=True):
        assert float((a - b).norm() / a.norm()) < 1e-5
        assert float(a.norm()) > 0
        assert torch.allclose(b, c, rtol=1e-13, atol=1e-15)


def test_checkpoint_gradient_converges_to_the_exact_gradient_of_a_linear_system():
    # dy/dt = a*y, y(1) = y0*exp(a): d y(1)/da = y0*exp(a). Tightening the tolerance must
    # bring the checkpointed gradient onto the exact one.
    a = nn.Parameter(torch.tensor(-0.7, dtype=torch.float64))

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = a

        def forward(self, t, y):
            return self.a * y

    y0 = torch.tensor([1.5], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    errors = []
    for rtol in (1e-3, 1e-6, 1e-9):
        a.grad = None
        aca.odeint_checkpoint(Linear(), y0, t, method="dopri5", rtol=rtol, atol=rtol * 1e-2
                              )[-1].sum().backward()
        errors.append(abs(float(a.grad) - 1.5 * torch.exp(a.detach()).item()))
    assert errors[2] < 1e-8
    assert errors[0] > errors[2]


def saved_bytes(mode: str, n_points: int) -> tuple[int, torch.Tensor]:
    """Bytes autograd keeps from a forward solve over n_points observations, for backward."""
    total = 0

    def pack(x: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += x.numel() * x.element_size()
        return x

    func = Field()
    y0 = torch.randn(64, 2, dtype=torch.float64)
    t = torch.arange(n_points, dtype=torch.float64) * 0.05  # the horizon grows with the points
    spec = solve.SolverSpec(method="dopri5", rtol=1e-6, atol=1e-8, gradient=mode)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = solve.solve(func, y0, t, spec)
    assert out.requires_grad
    return total, out


def test_checkpoint_holds_one_state_per_step_while_direct_backprops_graph_grows():
    direct_10, _ = saved_bytes("direct", 10)
    direct_400, _ = saved_bytes("direct", 400)
    assert direct_400 > 3 * direct_10 > 0
    saved, out = saved_bytes("checkpoint", 400)
    steps = out.grad_fn.replay.steps  # the checkpoints the backward pass will use
    state_bytes = 64 * 2 * 8
    assert saved == 0  # no graph: the states below are all that is kept
    assert all(s[1].shape == (64, 2) for s in steps)
    assert len(steps) * state_bytes * 20 < direct_400
    out.sum().backward()
    assert all(s[1] is None for s in steps)  # each checkpoint is freed once replayed


@pytest.mark.parametrize("method,options", [(m, None) for m in methods.FAST_LOOP]
                         + [(m, {"step_size": 0.1}) for m in methods.FIXED_RK])
def test_replaying_a_step_lands_exactly_on_the_next_checkpoint(method, options):
    # The replay must be the solver's own arithmetic: step k recomputed from checkpoint k
    # gives checkpoint k + 1 bit for bit (else the gradient belongs to a different map).
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=torch.float64)
    replay = aca._Replay(Field(), y0, torch.linspace(0, 3, 7, dtype=torch.float64), method,
                         1e-6, 1e-8, options)
    replay.forward()
    states = [s[1] for s in replay.recorder.steps]
    stages = getattr(replay.recorder, "first_stages", None)
    assert len(states) > 3
    with torch.no_grad():
        for k in range(len(states) - 1):
            f0 = stages[k] if stages is not None and k > 0 else None
            y1, f1, _, _ = replay.step(k, states[k], f0)
            assert torch.equal(y1, states[k + 1]), k
            if stages is not None:  # and it hands the solver's own first stage to step k+1
                assert torch.equal(f1, stages[k + 1]), k


def test_unused_parameters_get_no_gradient_and_a_second_backward_is_refused():
    func = Field()
    func.spare = nn.Parameter(torch.ones(3, dtype=torch.float64))
    y0 = torch.ones(2, 2, dtype=torch.float64)
    out = aca.odeint_checkpoint(func, y0, torch.linspace(0, 1, 4, dtype=torch.float64),
                                method="dopri5", rtol=1e-6, atol=1e-8)
    out.sum().backward(retain_graph=True)
    assert func.spare.grad is None and func.w1.grad is not None
    with pytest.raises(RuntimeError, match="backpropagating twice through one solve"):
        out.sum().backward()


class Forcing(nn.Module):
    """dy/dt = c cos(t): ignores y; c is a parameter the caller may freeze."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor([0.5, -2.0], dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.c * torch.cos(t)


@pytest.mark.parametrize("method", methods.REPLAYABLE)
def test_a_field_whose_stages_need_no_grad_still_backpropagates_to_y0(method):
    # Frozen parameters and no dependence on y: no stage has a graph. Each solver step is then
    # y0 + (something without y0), so d out / d y0 is the identity at every output.
    func = Forcing().requires_grad_(False)
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    weights = torch.linspace(-1, 1, 10, dtype=torch.float64).reshape(5, 2)
    options = {"step_size": 0.3} if method in methods.FIXED_RK else None
    out = aca.odeint_checkpoint(func, y0, t, method=method, rtol=1e-6, atol=1e-8,
                                options=options)
    assert torch.equal(out.detach(), odeint(func, y0.detach(), t, method=method, rtol=1e-6,
                                            atol=1e-8, options=options))
    (out * weights).sum().backward()
    assert torch.allclose(y0.grad, weights.sum(0), rtol=0, atol=1e-14)
    assert func.c.grad is None


def test_cubic_interpolation_is_refused_not_replayed_as_linear():
    y0 = torch.ones(2, dtype=torch.float64)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="linear interpolation only.*interp=cubic"):
        aca.odeint_checkpoint(Field(), y0, t, method="rk4",
                              options={"step_size": 0.3, "interp": "cubic"})
    assert aca.unsupported_reason("rk4", {"interp": "linear"}) is None


def test_a_time_grid_that_requires_grad_is_refused():
    t = torch.linspace(0, 1, 4, dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="no gradient for t; pass t.detach()"):
        aca.odeint_checkpoint(Field(), y0, t, method="dopri5")
    with torch.no_grad():  # nothing to differentiate: solved as odeint would
        aca.odeint_checkpoint(Field(), y0, t, method="dopri5")
    aca.odeint_checkpoint(Field(), y0, t.detach(), method="dopri5")


def test_a_captured_tensor_gets_no_gradient_only_registered_parameters_do():
    # The documented limit (torchdiffeq's adjoint has it too): register it as a parameter.
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)

    class Captures(Field):
        def forward(self, t, y):
            return super().forward(t, y) * scale

    func = Captures()
    out = aca.odeint_checkpoint(func, torch.ones(2, dtype=torch.float64),
                                torch.linspace(0, 1, 3, dtype=torch.float64), method="rk4",
                                options={"step_size": 0.25})
    out.sum().backward()
    assert scale.grad is None and func.w1.grad is not None


class Flow(nn.Module):
    """A continuous normalising flow's shape of state: (z, log-density, regulariser)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(2, 2, generator=gen, dtype=torch.float64))

    def forward(self, t, state):
        z, _, _ = state
        dz = torch.tanh(z @ self.w) * (1 + 0.2 * t)
        # the exact trace of d dz / dz (tanh' = 1 - tanh^2), and a kinetic-energy regulariser
        trace = ((1 - torch.tanh(z @ self.w) ** 2) * torch.diagonal(self.w)).sum(-1)
        return dz, -trace[:, None] * (1 + 0.2 * t), (dz ** 2).mean()


def flow_value_and_grads(solver, t, **kw):
    func = Flow()
    z = torch.tensor([[0.5, -1.0], [1.5, 0.3], [-0.2, 0.1]], dtype=torch.float64,
                     requires_grad=True)
    logp = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    reg = torch.zeros((), dtype=torch.float64, requires_grad=True)
    z_t, logp_t, reg_t = solver(func, (z, logp, reg), t, **kw)
    assert (z_t.shape, logp_t.shape, reg_t.shape) == ((len(t), 3, 2), (len(t), 3, 1), (len(t),))
    (z_t.pow(2).sum() + logp_t[-1].sum() + 0.1 * reg_t[-1]).backward()
    return [x.detach() for x in (z_t, logp_t, reg_t)], [func.w.grad, z.grad, logp.grad, reg.grad]


@pytest.mark.parametrize("method,kw", [("dopri5", {"rtol": 1e-7, "atol": 1e-9}),
                                       ("fehlberg2", {"rtol": 1e-5, "atol": 1e-7}),
                                       ("rk4", {"options": {"step_size": 0.3}})])
@pytest.mark.parametrize("backwards", [False, True])
def test_tuple_states_solve_as_odeint_and_backpropagate_as_direct(method, kw, backwards):
    t = torch.linspace(0, 1.5, 4, dtype=torch.float64) * (-1 if backwards else 1)
    kw = {"method": method, **kw}
    out_c, g_c = flow_value_and_grads(aca.odeint_checkpoint, t, **kw)
    if method in methods.FAST_LOOP:  # odeint's per-part tolerances and mixed norm, step by step
        z0 = (torch.tensor([[0.5, -1.0], [1.5, 0.3], [-0.2, 0.1]], dtype=torch.float64),
              torch.zeros(3, 1, dtype=torch.float64), torch.zeros((), dtype=torch.float64))
        kw["options"] = {"first_step": first_accepted_step(Flow(), z0, t, **kw)}
    out_d, g_d = flow_value_and_grads(odeint, t, **kw)
    for a, b in zip(out_c, out_d, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(g_c, g_d, strict=True):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)


def test_tuple_states_take_the_default_gradient_through_solve():
    spec = solve.SolverSpec(method="dopri5", rtol=1e-6, atol=1e-8, gradient="checkpoint")
    assert spec.gradient == "checkpoint"
    field = solve.CountingField(Flow())
    z = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    state = (z, torch.zeros(3, 1, dtype=torch.float64), torch.zeros((), dtype=torch.float64))
    z_t, logp_t, _ = solve.solve(field, state, torch.linspace(0, 1, 3, dtype=torch.float64),
                                 spec)
    forward_nfe = field.nfe
    (z_t[-1].sum() + logp_t[-1].sum()).backward()
    assert z.grad is not None and field.func.w.grad is not None
    assert field.nfe > forward_nfe  # the replay, not a graph kept from the forward solve


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_checkpoint_is_the_default_and_multistep_solvers_keep_the_adjoint():
    spec = solve.SolverSpec.from_cfg(make().solver, make().gradient)
    assert (spec.gradient, spec.notice) == ("checkpoint", None)
    for solver in ("explicit_adams", "scipy_solver"):
        cfg = make(f"solver={solver}")
        spec = solve.SolverSpec.from_cfg(cfg.solver, cfg.gradient)
        assert spec.gradient == "adjoint"
        assert spec.notice == f"gradient=checkpoint cannot replay {solver}; using gradient=adjoint"
    cfg = make("+solver.options.jump_t=[1.0]")
    spec = solve.SolverSpec.from_cfg(cfg.solver, cfg.gradient)
    assert spec.gradient == "adjoint" and "with these options" in spec.notice
    with pytest.raises(ValueError, match="supports the Runge-Kutta solvers"):
        aca.odeint_checkpoint(Field(), torch.zeros(1, 2), torch.linspace(0, 1, 3),
                              method="explicit_adams")


def test_a_substituted_gradient_is_announced_and_recorded(cli, outputs):
    res = cli("train", "+solver.options.jump_t=[0.5]", "train.niters=2", "train.test_freq=2",
              "quiet=true", "plots.enabled=false")
    assert res.exit_code == 0, res.stderr
    note = "gradient=checkpoint cannot replay dopri5 with these options; using gradient=adjoint"
    assert f"note: {note}" in res.stderr
    (run,) = run_dirs(outputs)
    assert read_metrics(run)["gradient"] == "adjoint"
    assert note in (run / "train.log").read_text()


def test_default_training_uses_the_checkpointed_gradient(cli, outputs):
    res = cli("train", "train.niters=3", "train.test_freq=3", "quiet=true",
              "plots.enabled=false")
    assert res.exit_code == 0 and "note:" not in res.stderr
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert m["gradient"] == "checkpoint"
    assert m["nfe_backward_per_iter"] > 0   # the replay evaluates the field again backwards
