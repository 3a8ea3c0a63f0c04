"""The one place that calls torchdiffeq.

Keeping every solve here means gradient modes, solver options, function-evaluation counting
and the translation of solver failures into clear errors exist exactly once, for the dynamics
trainer and the latent VAE alike.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from odecli.errors import ConfigError, SolverError, one_line
from odecli.numerics import aca, rk
from odecli.numerics.methods import (
    ADAPTIVE,
    FAST_LOOP,
    FIXED_GRID,
    GRADIENTS,
    METHODS,
    REPLAYABLE,
)

__all__ = ["ADAPTIVE", "FIXED_GRID", "GRADIENTS", "METHODS", "CountingField", "SolverSpec",
           "StepAborted", "check_finite", "solve", "translate_failure"]
# Options torchdiffeq understands; it only warns on others, which hides typos, so we refuse.
_ADAPTIVE_OPTIONS = {"first_step", "safety", "ifactor", "dfactor", "max_num_steps",
                     "min_step", "max_step", "step_t", "jump_t", "norm", "dtype"}
_FIXED_OPTIONS = {"step_size", "grid_constructor", "perturb", "max_iters", "max_order"}
_SCIPY_OPTIONS = {"solver", "max_step", "min_step", "first_step"}

UNDERFLOW_HINT = (
    "the learned field became stiff or blew up; try a lower train.lr, "
    "+solver.options.min_step=1e-4, or a fixed-step solver such as solver=rk4"
)


class _FromYaml:
    """Marks a SolverSpec value not given: it is read from the method's or the gradient
    mode's YAML file, the one place defaults live."""

    def __repr__(self) -> str:
        return "FROM_YAML"


FROM_YAML: Any = _FromYaml()
_SOLVER_KEYS = ("rtol", "atol", "step_size", "options", "fast", "compile", "max_steps")
_GRADIENT_KEYS = {"adjoint_rtol": "rtol", "adjoint_atol": "atol", "seminorm": "seminorm"}


@dataclass
class SolverSpec:
    """Everything needed to call torchdiffeq, read from `cfg.solver` and `cfg.gradient`.

    Values not given come from configs/solver/<method>.yaml and configs/gradient/<name>.yaml
    (a gradient mode's keys it does not have are None), so `SolverSpec("dopri5", "direct",
    rtol=1e-8)` in a script or test has the same defaults as a run.
    """

    method: str
    gradient: str
    rtol: float | None = FROM_YAML
    atol: float | None = FROM_YAML
    step_size: float | None = FROM_YAML
    options: dict[str, Any] = FROM_YAML
    fast: bool = FROM_YAML          # odecli's step loop (numerics/rk.py) where it applies
    compile: bool | str = FROM_YAML
    max_steps: int | None = FROM_YAML  # an adaptive solve gives up after this many steps
    adjoint_rtol: float | None = FROM_YAML
    adjoint_atol: float | None = FROM_YAML
    seminorm: bool | None = FROM_YAML
    notice: str | None = None  # a gradient substitution the run should log

    def __post_init__(self) -> None:
        from odecli.numerics import schema

        if any(getattr(self, k) is FROM_YAML for k in _SOLVER_KEYS):
            node = schema.solver_defaults(self.method)
            for k in _SOLVER_KEYS:
                if getattr(self, k) is FROM_YAML:
                    setattr(self, k, copy.deepcopy(node[k]))
        if any(getattr(self, k) is FROM_YAML for k in _GRADIENT_KEYS):
            node = schema.gradient_defaults(self.gradient)
            for attr, key in _GRADIENT_KEYS.items():
                if getattr(self, attr) is FROM_YAML:
                    setattr(self, attr, node.get(key))

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE

    @classmethod
    def from_cfg(cls, solver: Mapping[str, Any], gradient: Mapping[str, Any]) -> SolverSpec:
        """Build a spec from the `solver` and `gradient` nodes (Hydra nodes or dicts), checked
        by odecli.numerics.schema.

        Partial nodes are accepted, e.g. ({"method": "euler"}, {"name": "direct"}) for the
        ODE-RNN encoder: keys they lack come from the method's and the mode's YAML files. A
        command's composed config is complete (its schema check says so).
        """
        from odecli.numerics import schema

        s = schema.SOLVER.check(solver, "solver", partial=True)
        g = schema.GRADIENT.check(gradient, "gradient", partial=True)
        if "method" not in s:
            raise ConfigError("solver.method is missing from the config")
        spec = cls(s["method"], g["name"],
                   **{k: s[k] for k in ("rtol", "atol", "step_size", "fast", "compile",
                                        "max_steps") if k in s},
                   **{attr: g[key] for attr, key in _GRADIENT_KEYS.items() if key in g})
        method, name = spec.method, g["name"]
        options = dict((s["options"] if "options" in s else spec.options) or {})
        allowed = (_SCIPY_OPTIONS if method == "scipy_solver"
                   else _ADAPTIVE_OPTIONS if method in ADAPTIVE else _FIXED_OPTIONS)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for solver '{method}'; "
                f"valid: {', '.join(sorted(allowed))}")
        for key in ("min_step", "max_step", "first_step"):
            if key in options and (not _is_number(options[key]) or options[key] < 0):
                raise ConfigError(f"solver.options.{key} must be a non-negative number")
        spec.options = options
        if method == "scipy_solver" and name == "direct":
            raise ConfigError("solver=scipy_solver integrates outside torch, so nothing can be "
                              "backpropagated through it; use gradient=adjoint")
        if name == "checkpoint" and aca.unsupported_reason(method, options):
            # The default gradient must not make multistep/scipy solvers or step_t/jump_t
            # unusable: they cannot be replayed step by step, so they keep the adjoint.
            spec.gradient = "adjoint"
            spec.notice = (f"gradient=checkpoint cannot replay {method}"
                           + (" with these options" if method in REPLAYABLE else "")
                           + "; using gradient=adjoint")
        return spec

    @property
    def compiled(self) -> bool:
        """Whether the fast loop compiles its steps (`auto` not yet resolved: no)."""
        return self.fast and self.compile is True

    def resolve_compile(self, iterations: int) -> None:
        """Settle `compile: auto` for a run of this many training iterations: compile only
        where the saving per iteration repays the one-off compile (rk.COMPILE_BREAK_EVEN).
        A forced compile that cannot apply is announced (through `notice`), not ignored."""
        if self.compile == "auto":
            self.compile = self.fast and iterations >= rk.COMPILE_BREAK_EVEN
        elif self.compile is True and not self.on_fast_loop():
            if not self.fast:
                why = "solver.fast=false"
            elif self.gradient == "adjoint":
                why = "gradient=adjoint"
            elif self.method not in FAST_LOOP:
                why = f"{self.method} runs on torchdiffeq's loop"
            else:
                why = f"{self.method} with these options runs on torchdiffeq's loop"
            text = f"solver.compile=true has no effect here ({why}): it compiles the fast loop"
            self.notice = f"{self.notice}; {text}" if self.notice else text

    def on_fast_loop(self, mode: str | None = None) -> bool:
        """Whether solves in this gradient mode (default: the run's) take the fast loop."""
        mode = self.gradient if mode is None else mode
        return (self.fast and self.adaptive and mode != "adjoint"
                and rk.supported(self.method, self.rtol, self.atol, self.torchdiffeq_options()))

    @property
    def loop(self) -> str:
        """The step loop training solves run on, as a run records it."""
        if not self.on_fast_loop():
            return "torchdiffeq"
        return "fast, compiled" if self.compiled else "fast"

    def torchdiffeq_options(self) -> dict[str, Any] | None:
        options = dict(self.options)
        if self.method in FIXED_GRID and self.step_size is not None:
            options.setdefault("step_size", self.step_size)
        if self.method in FAST_LOOP and self.max_steps is not None:
            # FAST_LOOP: the adaptive Runge-Kutta methods, whose loops count steps; a field
            # that training made stiff would otherwise be crawled through for hours
            options.setdefault("max_num_steps", self.max_steps)
        return options or None


class CountingField(nn.Module):
    """Wraps a vector field f(t, y) and counts its evaluations (NFE).

    The adjoint calls the field during `backward()`, so reading the counter before and after
    the backward pass splits forward from backward evaluations.
    """

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.nfe = 0
        # When set and it returns True, the solve in progress is abandoned (StepAborted): a
        # stop signal must not wait for a diverged field that the solver crawls through.
        self.abort: Callable[[], bool] | None = None

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.abort is not None and self.abort():
            raise StepAborted("solve abandoned after a stop signal")
        return self.func(t, y)


class StepAborted(Exception):
    """A solve abandoned on request (see CountingField.abort); the step did not happen."""


State = torch.Tensor | tuple[torch.Tensor, ...]


def solve(func: nn.Module, y0: State, t: torch.Tensor, spec: SolverSpec,
          grad: bool = True) -> State:
    """Integrate dy/dt = func(t, y) from y0 over the times t; returns (len(t), *y0.shape), or
    a tuple of such solutions for a tuple state (e.g. a flow's state and log-density).

    Solver failures become `SolverError` with a hint instead of torchdiffeq's assertions.
    """
    kwargs: dict[str, Any] = {"method": spec.method, "options": spec.torchdiffeq_options()}
    if spec.adaptive:
        kwargs.update(rtol=spec.rtol, atol=spec.atol)
    mode = spec.gradient if grad and torch.is_grad_enabled() else "none"
    try:
        if mode == "adjoint":
            adjoint_options = dict(kwargs["options"] or {})
            adjoint_options.pop("norm", None)
            if spec.seminorm:
                adjoint_options["norm"] = "seminorm"
            kwargs.update(
                adjoint_rtol=spec.adjoint_rtol or spec.rtol,
                adjoint_atol=spec.adjoint_atol or spec.atol,
                adjoint_method=spec.method,
                adjoint_options=adjoint_options or None,
            )
            if not spec.adaptive:
                kwargs.pop("adjoint_rtol")
                kwargs.pop("adjoint_atol")
            out = odeint_adjoint(func, y0, t, **kwargs)
        elif spec.on_fast_loop(mode) and not (mode == "direct" and t.requires_grad):
            inner, count = _counted(func)
            # Only training solves compile: their shapes are fixed for the run, while
            # evaluation and sampling see many batch sizes (one compile each) and are a
            # small share of the work.
            out = rk.odeint_fast(inner, y0, t, gradient=mode, count=count,
                                 compile=spec.compiled and mode != "none", **kwargs)
        elif mode == "checkpoint":
            out = aca.odeint_checkpoint(func, y0, t, **kwargs)
        else:
            out = odeint(func, y0, t, **kwargs)
    except AssertionError as exc:
        raise translate_failure(exc) from exc
    except RuntimeError as exc:
        if any(w in str(exc) for w in ("underflow", "max_num_steps", "non-finite")):
            raise translate_failure(exc) from exc
        raise
    return out


def reference(func: nn.Module, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A true solution to compare learned ones with: float64, dopri8 at rtol 1e-10 / atol
    1e-12, landing on every output time (step_t: dopri8's interpolant between steps is far
    less accurate than its steps); torchdiffeq's own loop, no gradient."""
    spec = SolverSpec("dopri8", "direct", rtol=1e-10, atol=1e-12, options={"step_t": t},
                      fast=False)
    with torch.no_grad():
        out = solve(func, y0, t, spec, grad=False)
    assert isinstance(out, torch.Tensor)
    return out


def _counted(func: nn.Module) -> tuple[nn.Module, Callable[[int], None] | None]:
    """The field the fast loop calls and how it counts: a CountingField is unwrapped (one
    call less per evaluation) and told the evaluations of each step at once, checking its
    abort request once per step."""
    if not isinstance(func, CountingField):
        return func, None

    def count(n: int) -> None:
        func.nfe += n
        if func.abort is not None and func.abort():
            raise StepAborted("solve abandoned after a stop signal")

    return func.func, count


def translate_failure(exc: BaseException) -> SolverError:
    """Turn torchdiffeq's terse assertion text into a message with a remedy."""
    text = str(exc) or type(exc).__name__
    if "underflow" in text:
        return SolverError("solver failed: underflow in dt", UNDERFLOW_HINT)
    if "max_num_steps" in text:
        return SolverError("solver failed: max_num_steps exceeded", UNDERFLOW_HINT)
    if "non-finite" in text:  # torchdiffeq prints the whole state after this
        return SolverError("solver failed: the state became NaN or Inf",
                           "training diverged; lower train.lr or tighten solver.rtol/atol")
    return SolverError(f"solver failed: {one_line(exc)}", UNDERFLOW_HINT)


def check_finite(value: torch.Tensor, what: str) -> None:
    """Raise a SolverError when a loss or state is NaN or Inf (a diverged run)."""
    if not bool(torch.isfinite(value).all()):
        raise SolverError(
            f"{what} is not finite (NaN or Inf)",
            "training diverged; lower train.lr or tighten solver.rtol/atol",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
