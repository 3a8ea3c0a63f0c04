"""One explicit Runge-Kutta step's arithmetic, for the fast loop (numerics/rk.py): torchdiffeq's
Butcher tableaus as Python floats, the stage sums (one fused `add(alpha=...)` per term when
eager), the quartic interpolant as one linear map, the error norm and ratio, and the stage
times as torchdiffeq passes them to the field. No control flow: the same functions run eager
and traced by torch.compile.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from odecli.numerics.backend import SOLVERS


@dataclass(frozen=True)
class Tableau:
    """A Butcher tableau as Python floats: stage times c, rows a, weights b, error weights e,
    the mid-point weights of the interpolant and the order the step-size control uses."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...]
    mid: tuple[float, ...]
    order: int

    @property
    def fsal(self) -> bool:
        """The last stage is y1 (first same as last): no separate solution sum."""
        return self.b[-1] == 0 and tuple(self.b[:-1]) == tuple(self.a[-1])


@functools.cache
def tableau(method: str) -> Tableau:
    """torchdiffeq's tableau for an adaptive method, read from its solver class."""
    cls = SOLVERS[method]
    tab = cls.tableau
    return Tableau(c=tuple(tab.alpha.tolist()), a=tuple(tuple(r.tolist()) for r in tab.beta),
                   b=tuple(tab.c_sol.tolist()), e=tuple(tab.c_error.tolist()),
                   mid=tuple(cls.mid.tolist()), order=int(cls.order))


def combo(y: torch.Tensor | None, ks: Sequence[torch.Tensor], weights: Sequence[float],
           h: float | torch.Tensor) -> torch.Tensor:
    """y + h * sum(w_j k_j) over the nonzero weights (y None: the sum alone)."""
    out = y
    for k, w in zip(ks, weights, strict=False):
        if w == 0:
            continue
        if isinstance(h, float):  # eager: one fused op per stage, the scalar folded in
            out = k * (w * h) if out is None else out.add(k, alpha=w * h)
        else:  # traced for torch.compile: h is a tensor, so no Python-float alpha
            out = k * (w * h) if out is None else out + k * (w * h)
    assert out is not None
    return out


def rk_step(func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tab: Tableau,
            t0: float | torch.Tensor, h: float | torch.Tensor, y0: torch.Tensor,
            f0: torch.Tensor, times: Callable[[Any, bool], torch.Tensor]
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One explicit Runge-Kutta step from (t0, y0) with first stage f0: (y1, stages).

    `times(t, last)` turns a stage time into the tensor the field sees; `last` marks the stage
    at t1, which torchdiffeq evaluates one ulp before t1 (a discontinuity at t1 is not seen).
    """
    ks = [f0]
    yi = y0
    for ci, row in zip(tab.c, tab.a, strict=True):
        yi = combo(y0, ks, row, h)
        ks.append(func(times(t0 + ci * h, ci == 1.0), yi))
    y1 = yi if tab.fsal else combo(y0, ks, tab.b, h)
    return y1, ks


@functools.cache
def interp_matrix(tab: Tableau) -> np.ndarray:
    """torchdiffeq's quartic interpolant as one linear map: rows e, d, c, b, a (the
    coefficients of 1, x, ..., x**4) over the columns [y0, h k_0, ..., h k_last].

    torchdiffeq fits it through y0, y1 = y0 + h sum(b k), the mid-point y0 + h sum(mid k) and
    the end slopes k_0 and k_last; every term is linear in y0 and the stages, so a step's
    outputs are one small matrix product instead of ~20 tensor ops."""
    n = len(tab.b)
    y0 = np.eye(1, n + 1)[0]
    y1 = np.concatenate([[1.0], tab.b])
    ym = np.concatenate([[1.0], tab.mid])
    f0 = np.eye(1, n + 1, 1)[0]
    f1 = np.eye(1, n + 1, n)[0]
    a = 2 * (f1 - f0) - 8 * (y1 + y0) + 16 * ym
    b = (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * ym
    c = (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * ym
    return np.stack([y0, f0, c, b, a])


def interpolate(tab: Tableau, y0: torch.Tensor, ks: list[torch.Tensor], t0: float, h: float,
                ts: Sequence[float]) -> torch.Tensor:
    """The step's interpolant at the times ts in [t0, t0 + h]: (len(ts), *y0.shape)."""
    x = (np.asarray(ts, dtype=np.float64) - t0) / h
    weights = np.vander(x, 5, increasing=True) @ interp_matrix(tab)  # (len(ts), 1 + stages)
    weights[:, 1:] *= h
    w = torch.from_numpy(weights).to(dtype=y0.dtype, device=y0.device)
    stacked = torch.stack([y0, *ks]).reshape(len(ks) + 1, -1)
    return (w @ stacked).view(len(ts), *y0.shape)


class Norm:
    """torchdiffeq's error norm: RMS, or for a tuple state the largest part's RMS."""

    def __init__(self, sizes: list[int] | None) -> None:
        self.bounds = None
        if sizes and len(sizes) > 1:
            ends = np.cumsum([0, *sizes]).tolist()
            self.bounds = list(zip(ends[:-1], ends[1:], strict=True))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.bounds is None:
            return x.square().mean().sqrt()
        return torch.stack([x[..., a:b].square().mean().sqrt() for a, b in self.bounds]).max()


def error_ratio(err: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, rtol: float,
                 atol: float, norm: Norm) -> torch.Tensor:
    tol = torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)
    return norm(err / tol)


def stage_time(t: float | torch.Tensor, last: bool, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
    """A stage time as the field sees it: in the state's dtype, as torchdiffeq passes it;
    `last` (the stage at t1) is taken one ulp before t1, as torchdiffeq does."""
    if isinstance(t, torch.Tensor):  # traced (compiled) steps
        t = t.to(dtype)
        return torch.nextafter(t, t - 1) if last else t
    if dtype == torch.float32:
        v = np.float32(t)
        if last:
            v = np.nextafter(v, np.float32(-np.inf))
        t = float(v)
    elif last:
        t = math.nextafter(t, -math.inf)
    return torch.full((), t, dtype=dtype, device=device)
