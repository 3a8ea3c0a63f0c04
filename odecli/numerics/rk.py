"""The fast path: torchdiffeq's adaptive Runge-Kutta solvers stepped with less per-step overhead.

Why: on the small fields neural-ODE experiments use, a training step is dominated by per-call
overhead, not arithmetic. torchdiffeq's `_adaptive_step` spends most of its time in scalar
tensor bookkeeping (time arithmetic, clamps, assertions, the norm, the step-size update: each a
tensor op), in `_UncheckedAssign` writes into a stage buffer, and in one wrapper call per field
evaluation. This loop takes the same steps with the same Butcher tableaus, error norm,
step-size controller, first-step guess and interpolant (torchdiffeq's own, read from its solver
classes), but keeps times and step sizes as Python floats, combines stages with one fused
`add(alpha=...)` each, counts evaluations per step instead of per call, and, when asked,
compiles one whole step with `torch.compile` (static shapes; one compile per state shape).

Its numbers equal torchdiffeq's to float rounding (tests/test_fast_rk.py): the arithmetic is
regrouped, so a step whose error ratio lands within rounding of 1 may be accepted by one and
rejected by the other. Gradients: the checkpointed gradient (numerics/aca.py) replays these
steps exactly (the replay runs the very step function the forward solve ran); direct backprop
keeps the graph of the accepted steps. Both hold the step sizes fixed, as torchdiffeq's direct
backprop does for every step but its first guess.

Supported: dopri5, dopri8, bosh3, fehlberg2, adaptive_heun; a tensor or a tuple of tensors as the
state; increasing or decreasing times; the options first_step, safety, ifactor, dfactor,
min_step, max_step, max_num_steps. Anything else (fixed grids, step_t/jump_t, a custom norm,
per-part tolerances) goes to torchdiffeq; `supported` says which. One step's arithmetic (the
tableaus, stage sums, interpolant, error norm) is numerics/rk_step.py; this module is the loop.
"""

from __future__ import annotations

import logging
import math
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from odecli.numerics import aca
from odecli.numerics.methods import FAST_LOOP
from odecli.numerics.rk_step import (
    Norm,
    combo,
    error_ratio,
    interpolate,
    rk_step,
    stage_time,
    tableau,
)

OPTIONS = ("first_step", "safety", "ifactor", "dfactor", "min_step", "max_step",
           "max_num_steps")
# solver.compile=auto compiles a run's steps from this many training iterations on. Measured
# (benchmarks/diffrax_compare.py, ode_demo problem, 1 CPU core): compiling costs ~15 s the first
# time (~2-3 s once inductor's on-disk cache holds the graphs) and saves 2.1-3.1 ms per
# iteration (a third of the eager step), so a cold compile pays for itself after 5,000-7,000.
COMPILE_BREAK_EVEN = 8000
State = torch.Tensor | tuple[torch.Tensor, ...]
log = logging.getLogger(__name__)
Counter = Callable[[int], None]


def supported(method: str, rtol: Any, atol: Any, options: dict[str, Any] | None) -> bool:
    """Whether the fast loop takes this solve (otherwise torchdiffeq does)."""
    return (method in FAST_LOOP and set(options or {}) <= set(OPTIONS)
            and all(isinstance(v, (int, float)) for v in (rtol, atol)))


_COMPILED: weakref.WeakKeyDictionary[Any, dict[Any, Callable[..., Any]]] = (
    weakref.WeakKeyDictionary())


def _compiled(func: Any, key: Any, build: Callable[[], Callable[..., Any]]
              ) -> Callable[..., Any]:
    """One torch.compile per (field, step kind, tableau), kept as long as the field lives."""
    per_field = _COMPILED.setdefault(func, {})
    if key not in per_field:
        # inductor (torch 2.13) calls a helper that torch itself deprecates: not the user's
        # concern, and it would print a FutureWarning in the middle of a run
        warnings.filterwarnings("ignore", message=r".*torch\._prims_common\.check",
                                category=FutureWarning)
        per_field[key] = _EagerIfCompileFails(build())
    return per_field[key]


class _EagerIfCompileFails:
    """A step compiled with torch.compile that runs eagerly if compiling fails.

    Why: compiling is only a speed-up, and it can fail for reasons outside the run: a C++
    compiler killed mid-write (Slurm signals every process of a job at its time limit) leaves
    a broken library in inductor's on-disk cache, which every later compile of that graph
    loads (`ImportError`). The numbers agree to rounding; the run says so once.
    """

    def __init__(self, step: Callable[..., Any]) -> None:
        from torch._dynamo.exc import BackendCompilerFailed

        self.failed = BackendCompilerFailed
        self.eager = step
        self.call: Callable[..., Any] = torch.compile(step, dynamic=False)

    def __call__(self, *args: Any) -> Any:
        try:
            return self.call(*args)
        except self.failed as exc:
            first = str(exc).strip().splitlines()
            log.warning("torch.compile failed (%s); the run goes on uncompiled. "
                        "A compiler killed mid-write leaves a broken entry in "
                        "inductor's cache: clear TORCHINDUCTOR_CACHE_DIR (default "
                        "/tmp/torchinductor_<user>)", " ".join(first[:2])[:200])
            self.call = self.eager
            return self.eager(*args)


class FastSolve:
    """One adaptive solve, recording each accepted step so the checkpointed gradient can
    replay it (`step`), with the interface numerics/aca.py's backward uses."""

    fixed = False

    def __init__(self, func: nn.Module | Callable[..., Any], y0: State, t: torch.Tensor,
                 method: str, rtol: float, atol: float, options: dict[str, Any] | None,
                 count: Counter | None = None, compile: bool = False,
                 record: bool = True, graph: bool = False) -> None:
        self.tab = tableau(method)
        self.shapes = None if isinstance(y0, torch.Tensor) else [p.shape for p in y0]
        flat = aca.flat(y0)
        # graph: the solve itself is differentiated (gradient=direct); otherwise it runs
        # without a graph and, with `record`, keeps its steps for the checkpoint replay
        self.graph = graph
        self.y0 = flat if graph else flat.detach()
        self.dtype, self.device = flat.dtype, flat.device
        self.count = count or (lambda n: None)
        self.rtol, self.atol = float(rtol), float(atol)
        opts = dict(options or {})
        self.safety = float(opts.get("safety", 0.9))
        self.ifactor = float(opts.get("ifactor", 10.0))
        self.dfactor = float(opts.get("dfactor", 0.2))
        self.min_step = float(opts.get("min_step", 0.0))
        self.max_step = float(opts.get("max_step", math.inf))
        self.max_num_steps = int(opts.get("max_num_steps", 2**31 - 1))
        self.first_step = opts.get("first_step")
        self.norm = Norm(None if self.shapes is None else [s.numel() for s in self.shapes])
        times = t.detach().to(torch.float64).tolist()
        # torchdiffeq solves decreasing times as increasing ones of the negated problem
        self.sign = -1.0 if len(times) > 1 and times[1] < times[0] else 1.0
        self.times = [self.sign * v for v in times]
        if any(b <= a for a, b in zip(self.times[:-1], self.times[1:], strict=True)):
            raise ValueError("t must be strictly increasing or decreasing")
        self.field = self._wrap(func)
        self.compile = compile
        self.record = record  # keep each accepted step for a replay (the checkpoint gradient)
        self.steps: list[tuple[float, torch.Tensor | None, float]] = []  # (t0, y0, h)
        self.stages: list[torch.Tensor | None] = []  # first stage of each accepted step
        self.owned: list[list[int]] = []
        self._replay_fn: Callable[..., Any] | None = None
        self._func = func

    # --- the field as the solver sees it: flat state, solver-frame time -------------------
    def _wrap(self, func: Callable[..., Any]) -> Callable[[torch.Tensor, torch.Tensor],
                                                          torch.Tensor]:
        shapes, sign = self.shapes, self.sign
        if shapes is not None:
            sizes = [s.numel() for s in shapes]

            def flat_func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                parts = [p.view(s) for p, s in zip(y.split(sizes), shapes, strict=True)]
                return torch.cat([f.reshape(-1) for f in func(t, tuple(parts))])
        else:
            flat_func = func
        if sign > 0:
            return flat_func
        return lambda t, y: -flat_func(-t, y)

    # --- the step functions, eager or compiled --------------------------------------------
    def _times(self) -> Callable[[Any, bool], torch.Tensor]:
        dtype, device = self.dtype, self.device
        return lambda t, last: stage_time(t, last, dtype, device)

    def _key(self, kind: str) -> tuple[Any, ...]:
        shapes = None if self.shapes is None else tuple(tuple(s) for s in self.shapes)
        return (kind, self.tab, self.sign, self.rtol, self.atol, shapes, self.dtype,
                str(self.device))

    def _step_fn(self, with_error: bool) -> Callable[..., Any]:
        """The step function, eager or compiled: (y1, stages) or, for the forward solve,
        (y1, stages, error ratio). The replay runs the very function the solve ran."""
        tab, field, rtol, atol, norm, times = (self.tab, self.field, self.rtol, self.atol,
                                               self.norm, self._times())

        def step(t0: Any, h: Any, y0: torch.Tensor, f0: torch.Tensor) -> tuple[Any, ...]:
            y1, ks = rk_step(field, tab, t0, h, y0, f0, times)
            if not with_error:
                return y1, ks
            with torch.no_grad():  # step-size control is not differentiated (as torchdiffeq)
                err = combo(None, ks, tab.e, h)
                return y1, ks, error_ratio(err, y0, y1, rtol, atol, norm)

        if not self.compile:
            return step
        return _compiled(self._func, self._key("forward" if with_error else "replay"),
                         lambda: step)

    def _scalar(self, v: float) -> float | torch.Tensor:
        """A time or step size as the step function takes it (a tensor when compiled, so one
        compiled graph serves every step)."""
        if not self.compile:
            return v
        return torch.tensor(v, dtype=torch.float64, device=self.device)

    # --- the solve ------------------------------------------------------------------------
    @torch.no_grad()
    def _first_step(self, t0: float, y0: torch.Tensor, f0: torch.Tensor) -> float:
        """torchdiffeq's initial step guess (Hairer, Norsett & Wanner, II.4)."""
        if self.first_step is not None:
            return float(self.first_step)
        scale = y0.abs().mul(self.rtol).add_(self.atol)
        d0 = float(self.norm(y0 / scale))
        d1 = float(self.norm(f0 / scale))
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = self.field(stage_time(t0 + h0, False, self.dtype, self.device), y0 + h0 * f0)
        self.count(1)
        d2 = float(self.norm((f1 - f0) / scale)) / h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / self.tab.order)  # order - 1 + 1
        return min(100 * h0, h1)

    def _next_step(self, h: float, ratio: float) -> float:
        if ratio == 0:
            h_next = h * self.ifactor
        else:
            dfactor = 1.0 if ratio < 1 else self.dfactor
            h_next = h * min(self.ifactor, max(self.safety / ratio ** (1.0 / self.tab.order),
                                               dfactor))
        return min(max(h_next, self.min_step), self.max_step)

    def forward(self) -> torch.Tensor:
        """Solve (without a graph unless `graph`); outputs (len(t), *flat state)."""
        with torch.set_grad_enabled(self.graph and torch.is_grad_enabled()):
            return self._integrate()

    def _integrate(self) -> torch.Tensor:
        times, stages_per_step = self.times, len(self.tab.c)
        out = torch.empty(len(times), *self.y0.shape, dtype=self.dtype, device=self.device)
        out[0] = self.y0
        start = times[0]
        y0 = self.y0
        f0 = self.field(stage_time(start, False, self.dtype, self.device), y0)
        self.count(1)
        h = self._first_step(start, y0, f0)
        step = self._step_fn(with_error=True)
        scalar = self._scalar
        last: tuple[torch.Tensor, list[torch.Tensor], float, float] | None = None  # y0, ks, t0, h
        i, n = 1, 0
        while i < len(times):
            if last is not None and times[i] <= start:  # start: the last step's end
                # every output this step reaches, in one product
                j = i + 1
                while j < len(times) and times[j] <= start:
                    j += 1
                out[i:j] = interpolate(self.tab, *last, times[i:j])
                if self.record:
                    self.owned[-1].extend(range(i, j))
                i, n = j, 0
                continue
            if n >= self.max_num_steps:
                raise RuntimeError(f"max_num_steps exceeded ({n}>={self.max_num_steps})")
            if math.isnan(h):  # the first-step guess saw a NaN state or field
                raise RuntimeError("non-finite values in the state: the step size is NaN")
            if not math.isfinite(h):
                h = self.min_step
            h = min(max(h, self.min_step), self.max_step)
            if not start + h > start:
                raise RuntimeError(f"underflow in dt {h}")
            y1, ks, ratio_t = step(scalar(start), scalar(h), y0, f0)
            self.count(stages_per_step)
            ratio = float(ratio_t)
            if math.isnan(ratio):  # torchdiffeq ends in "underflow in dt" here
                raise RuntimeError("non-finite values in the state: the error estimate is NaN")
            accept = ratio <= 1
            if h > self.max_step:
                accept = False
            if h <= self.min_step:
                accept = True
            if accept:
                if self.record:
                    self.steps.append((start, y0, h))
                    self.stages.append(f0)
                    self.owned.append([])
                last = (y0, ks, start, h)
                start = start + h
                y0, f0 = y1, ks[-1]
            h = self._next_step(h, ratio)
            n += 1
        return out

    def step(self, k: int, y0: torch.Tensor, f0: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, list[int], list[torch.Tensor]]:
        """Recompute accepted step k from y0 with a graph: its end state, its last stage (the
        next step's first) and the outputs it owns (their indices and values)."""
        start, _, h = self.steps[k]
        if f0 is None:
            f0 = self.field(stage_time(start, False, self.dtype, self.device), y0)
            self.count(1)
        if self._replay_fn is None:
            self._replay_fn = self._step_fn(with_error=False)
        y1, ks = self._replay_fn(self._scalar(start), self._scalar(h), y0, f0)
        self.count(len(self.tab.c))
        idx = self.owned[k]
        outs: list[torch.Tensor] = []
        if idx:
            outs = list(interpolate(self.tab, y0, ks, start, h, [self.times[i] for i in idx]))
        return y1, ks[-1], list(idx), outs


def odeint_fast(func: nn.Module | Callable[..., Any], y0: State, t: torch.Tensor, *,
                method: str, rtol: float, atol: float, options: dict[str, Any] | None = None,
                gradient: str = "checkpoint", count: Counter | None = None,
                compile: bool = False) -> State:
    """`odeint` on the fast loop. `gradient`: "checkpoint" replays each accepted step in the
    backward pass (y0 and func's trainable parameters get gradients, as
    `aca.odeint_checkpoint`); "direct" backpropagates through the solve's graph (everything in
    it gets gradients, at the memory of every step's graph); "none" builds no graph. Either
    way the step sizes are constants of the gradient. `count(n)` is told of every n field
    evaluations (it may raise to abandon the solve)."""
    if gradient != "none" and torch.is_grad_enabled() and t.requires_grad:
        raise ValueError("the fast loop holds the step times fixed and gives no gradient for "
                         "t; pass t.detach(), or solver.fast=false with gradient=direct")
    if gradient == "checkpoint" and torch.is_grad_enabled():
        return aca.checkpointed(FastSolve(func, y0, t, method, rtol, atol, options, count,
                                          compile), func, y0)
    solve = FastSolve(func, y0, t, method, rtol, atol, options, count, compile, record=False,
                      graph=gradient == "direct")
    out = solve.forward()
    return out if solve.shapes is None else aca.unflat(out, solve.shapes)
