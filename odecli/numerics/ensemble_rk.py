"""Many members' adaptive Runge-Kutta solves as one set of tensor operations (the ensemble
launcher's solver).

Why: a small field's solve is dominated by per-operation overhead, so M solves stacked along
a leading member dimension cost about what one does. Each member keeps what its solo solve
has: its own step size, its own accept/reject decision from its own error norm, its own
first-step guess, tolerances and step budget. A member whose solve has reached its last
output time (or failed) waits until the others finish: with a field that can evaluate a
subset of members (`func.select(rows)`) only the unfinished members are stepped (late in
training the lockstep loop ran ~7 iterations where members tried ~5 steps each); with one
that cannot, it takes a masked zero step, which changes nothing.

The arithmetic per member is the fast loop's (numerics/rk.py, rk_step.py): the same
tableaus, error norm, controller, first-step guess and interpolant, so a member's solution
equals its solo solve to float rounding (stage sums are grouped w*(h*k) instead of (w*h)*k,
and the matrix products are batched); in float64 that is ~1e-15, far inside what changes an
accept/reject decision in practice. Gradients are backpropagated through the accepted steps
(`torch.where` keeps the rejected tries out of the graph), which is the gradient the
checkpointed replay (numerics/aca.py) and direct backprop compute for the solo run.

The field is autonomous and takes the stacked state alone: `field(y)` with y (M, *shape);
`field.select(rows)` (optional) is the field of the members `rows` alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from odecli.numerics.rk import OPTIONS
from odecli.numerics.rk_step import interp_matrix, tableau
from odecli.numerics.solve import SolverSpec, StepAborted


def unfit(spec: SolverSpec) -> str | None:
    """Why a job's solver cannot run batched (the job then runs alone), or None: this solver
    is the fast loop's adaptive Runge-Kutta methods, replayed or backpropagated directly."""
    if spec.gradient not in ("checkpoint", "direct") or not spec.on_fast_loop():
        return (f"solver {spec.method} with gradient={spec.gradient} (batched: the "
                f"fast-loop Runge-Kutta methods with gradient=checkpoint or direct)")
    return None


@dataclass
class MemberSolve:
    """The members' solutions (len(times), M, *shape) and what each member's solve did."""

    out: torch.Tensor
    trials: np.ndarray          # steps tried (accepted and rejected) per member
    accepted: np.ndarray        # accepted steps per member
    errors: list[str | None] = field(default_factory=list)  # a failed member's reason

    def nfe(self, m: int, stages: int, first_guess: bool = True) -> int:
        """Field evaluations member m's solo fast-loop solve counts: the first stage, the
        first-step guess, then every tried step's stages."""
        return 1 + int(first_guess) + stages * int(self.trials[m])


def _rms(x: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's RMS norm, per member (over every dimension but the first)."""
    return x.square().flatten(1).mean(1).sqrt()


def solve_members(func: Callable[[torch.Tensor], torch.Tensor], y0: torch.Tensor,
                  times: Sequence[float], method: str, rtol: Sequence[float],
                  atol: Sequence[float], options: dict[str, Any] | None = None,
                  max_num_steps: Sequence[int] | None = None,
                  abort: Callable[[], bool] | None = None,
                  ends: Sequence[int] | None = None) -> MemberSolve:
    """Solve dy/dt = func(y) for M members from y0 (M, *shape) over the shared, strictly
    increasing `times`, each member with its own tolerances rtol[m], atol[m]. A graph is kept
    when grad mode is on. A member that fails (NaN, underflow, step budget) gets the solo
    loop's RuntimeError text in `errors[m]` and stops; the others go on. `max_num_steps`:
    each member's own step budget (else options' one for all); `abort()` is asked after
    every step and, when true, abandons the solve (StepAborted), as a stop signal does to the
    solo loop. `ends`: member m's solo solve covers only times[:ends[m]] (at least 2); it
    stops there, as that solve would, and its outputs past it are zero."""
    tab = tableau(method)
    opts = dict(options or {})
    if set(opts) - set(OPTIONS):
        raise ValueError(f"the ensemble solver takes only the options {', '.join(OPTIONS)}")
    safety = float(opts.get("safety", 0.9))
    ifactor = float(opts.get("ifactor", 10.0))
    dfactor = float(opts.get("dfactor", 0.2))
    min_step = float(opts.get("min_step", 0.0))
    max_step = float(opts.get("max_step", math.inf))
    budget = np.asarray(max_num_steps if max_num_steps is not None else
                        [int(opts.get("max_num_steps", 2**31 - 1))] * y0.shape[0],
                        dtype=np.int64)
    first_step = opts.get("first_step")
    tt = np.asarray(times, dtype=np.float64)
    if len(tt) < 2 or np.any(np.diff(tt) <= 0):
        raise ValueError("the ensemble solver needs strictly increasing times")
    m_count, n_out = y0.shape[0], len(tt)
    dtype, device = y0.dtype, y0.device
    view = (m_count,) + (1,) * (y0.dim() - 1)

    def col(a: Any, count: int = m_count) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype,
                               device=device).view((count,) + view[1:])

    last = np.asarray(ends if ends is not None else [n_out] * m_count, dtype=np.int64)
    if np.any(last < 2) or np.any(last > n_out):
        raise ValueError("each member's solve needs 2 to len(times) output times")
    rtol_np, atol_np = np.asarray(rtol, np.float64), np.asarray(atol, np.float64)
    rtol_t, atol_t = col(rtol_np), col(atol_np)
    errors: list[str | None] = [None] * m_count
    trials = np.zeros(m_count, dtype=np.int64)
    accepted = np.zeros(m_count, dtype=np.int64)

    y = y0
    f0 = func(y)
    h = _first_steps(func, y, f0, rtol_t, atol_t, tab.order, first_step)
    t = np.full(m_count, tt[0])
    nxt = np.ones(m_count, dtype=np.int64)  # each member's next output index
    n = np.zeros(m_count, dtype=np.int64)   # steps since that member's last output
    live = np.ones(m_count, dtype=bool)
    out_acc: torch.Tensor | None = None      # (M, T, N) interpolated outputs
    interp = interp_matrix(tab)
    flat_n = int(np.prod(y0.shape[1:]))
    cols = np.arange(n_out)
    select = getattr(func, "select", None)

    def fail(mask: np.ndarray, text: str) -> None:
        for m in np.flatnonzero(mask & live):
            errors[m] = text
        live[mask] = False

    rows_key: tuple[int, ...] | None = None  # the live members the sub-field was made for
    step_func, idx = func, None
    while live.any():
        if abort is not None and abort():
            raise StepAborted("solve abandoned after a stop signal")
        fail(n >= budget, "max_num_steps exceeded")
        fail(np.isnan(h), "non-finite values in the state: the step size is NaN")
        h = np.where(np.isfinite(h), h, min_step)
        h = np.minimum(np.maximum(h, min_step), max_step)
        with np.errstate(invalid="ignore"):
            fail(~(t + h > t), "underflow in dt")
        if not live.any():
            break
        # Only the live members are stepped once some have finished (when the field can
        # evaluate a subset: `select`); the others' rows are left as they are.
        rows = np.flatnonzero(live) if select is not None else np.arange(m_count)
        if len(rows) < m_count and tuple(rows) != rows_key:
            assert select is not None
            rows_key = tuple(rows)
            idx = torch.as_tensor(rows, device=device)
            step_func = select(idx)
        part = len(rows) < m_count
        ys = y.index_select(0, idx) if part else y
        f0s = f0.index_select(0, idx) if part else f0
        h_run = np.where(live, h, 0.0)
        ht = col(h_run[rows], len(rows))
        stages = [f0s]
        hk = [f0s * ht]
        yi = ys
        for row in tab.a:
            yi = ys
            for j, w in enumerate(row):
                if w != 0:
                    yi = yi.add(hk[j], alpha=w)
            k = step_func(yi)
            stages.append(k)
            hk.append(k * ht)
        if tab.fsal:
            y1 = yi
        else:
            y1 = ys
            for j, w in enumerate(tab.b):
                if w != 0:
                    y1 = y1.add(hk[j], alpha=w)
        with torch.no_grad():
            err: torch.Tensor | None = None
            for j, w in enumerate(tab.e):
                if w != 0:
                    err = hk[j] * w if err is None else err.add(hk[j], alpha=w)
            assert err is not None
            rt, at = (rtol_t[idx], atol_t[idx]) if part else (rtol_t, atol_t)
            tol = torch.maximum(ys.abs(), y1.abs()).mul_(rt).add_(at)
            ratio = np.zeros(m_count)  # the finished members: a zero step, no error
            ratio[rows] = _rms(err / tol).cpu().numpy().astype(np.float64)
        trials[live] += 1
        fail(np.isnan(ratio), "non-finite values in the state: the error estimate is NaN")
        acc = live & ((ratio <= 1) | (h_run <= min_step))
        filled = np.zeros(m_count, dtype=np.int64)
        if acc.any():
            t_new = np.where(acc, t + h_run, t)
            reach = (tt[None, :] <= t_new[:, None]) & (cols[None, :] >= nxt[:, None]) \
                & (cols[None, :] < last[:, None]) & acc[:, None]
            if reach.any():
                lo, hi = int(cols[reach.any(0)].min()), int(cols[reach.any(0)].max()) + 1
                safe_h = np.where(h_run > 0, h_run, 1.0)[rows]
                x = (tt[None, lo:hi] - t[rows, None]) / safe_h[:, None]       # (R, W)
                weights = np.stack([x**p for p in range(5)], -1) @ interp     # (R, W, S+2)
                weights[..., 1:] *= h_run[rows, None, None]
                weights[~reach[rows, lo:hi]] = 0.0
                stacked = torch.stack([ys, *stages], 1).reshape(len(rows), len(stages) + 1,
                                                                 flat_n)
                vals = torch.bmm(torch.from_numpy(weights).to(dtype=dtype, device=device),
                                 stacked)
                if lo > 0 or hi < n_out:
                    vals = torch.nn.functional.pad(vals, (0, 0, lo, n_out - hi))
                if part:
                    base = out_acc if out_acc is not None else vals.new_zeros(
                        m_count, n_out, flat_n)
                    out_acc = base.index_add(0, idx, vals)
                else:
                    out_acc = vals if out_acc is None else out_acc + vals
                filled = reach.sum(1)
                nxt += filled
            acc_t = torch.as_tensor(acc[rows], device=device).view((len(rows),) + view[1:])
            y_new = torch.where(acc_t, y1, ys)
            f0_new = torch.where(acc_t, stages[-1], f0s)
            y = y.index_copy(0, idx, y_new) if part else y_new
            f0 = f0.index_copy(0, idx, f0_new) if part else f0_new
            t = t_new
            accepted[acc] += 1
        h = _next_steps(h, ratio, safety, ifactor, dfactor, min_step, max_step, tab.order)
        n[live] += 1
        n[filled > 0] = 0
        live &= nxt < last
    first = y0.reshape(m_count, 1, flat_n)
    rest = (out_acc[:, 1:] if out_acc is not None
            else y0.new_zeros(m_count, n_out - 1, flat_n))
    out = torch.cat([first, rest], 1).reshape(m_count, n_out, *y0.shape[1:])
    return MemberSolve(out.transpose(0, 1), trials, accepted, errors)


@torch.no_grad()
def _first_steps(func: Callable[[torch.Tensor], torch.Tensor], y0: torch.Tensor,
                 f0: torch.Tensor, rtol: torch.Tensor, atol: torch.Tensor, order: int,
                 first_step: Any) -> np.ndarray:
    """torchdiffeq's initial step guess per member (Hairer, Norsett & Wanner, II.4)."""
    m_count = y0.shape[0]
    if first_step is not None:
        return np.full(m_count, float(first_step))
    scale = y0.abs().mul(rtol).add_(atol)
    d0 = _rms(y0 / scale).cpu().numpy().astype(np.float64)
    d1 = _rms(f0 / scale).cpu().numpy().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    view = (m_count,) + (1,) * (y0.dim() - 1)
    h0_t = torch.as_tensor(h0, dtype=y0.dtype, device=y0.device).view(view)
    f1 = func(y0 + h0_t * f0)
    d2 = _rms((f1 - f0) / scale).cpu().numpy().astype(np.float64) / h0
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where((d1 <= 1e-15) & (d2 <= 1e-15), np.maximum(1e-6, h0 * 1e-3),
                      (0.01 / np.maximum(d1, d2)) ** (1.0 / order))
    return np.minimum(100 * h0, h1)


def _next_steps(h: np.ndarray, ratio: np.ndarray, safety: float, ifactor: float,
                dfactor: float, min_step: float, max_step: float, order: int) -> np.ndarray:
    """torchdiffeq's step-size controller, per member."""
    with np.errstate(divide="ignore", invalid="ignore"):
        grow = np.minimum(ifactor, np.maximum(safety / ratio ** (1.0 / order),
                                              np.where(ratio < 1, 1.0, dfactor)))
    h_next = np.where(ratio == 0, h * ifactor, h * grow)
    return np.minimum(np.maximum(h_next, min_step), max_step)
