"""The recovered system as a torch field, and its coefficients refitted to the data.

SINDy (odecli.dynamics.recover) picks the terms and their first values from the network's
rates at the data's states, so the values carry the network's error: a coefficient 0.5% off
puts the period of a cycle about 0.5% off, and over a few cycles the phase drifts by more
than the noise. The last step of the missing-physics workflow of Rackauckas et al. (2020,
"Universal Differential Equations for Scientific Machine Learning") fits the few surviving
coefficients to the observed trajectories themselves. Here: L-BFGS through an accurate
float64 solve, every trajectory from the start its network rollout uses, the terms SINDy kept
and the known equations unchanged, bounded work (MAX_EVALS solves of the data).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from odecli.engine.progress import progress
from odecli.errors import SolverError
from odecli.numerics import solve

# The recovered system's trajectory: tight enough to compare with the data, bounded work.
SOLVER = solve.SolverSpec("dopri5", "direct", rtol=1e-7, atol=1e-9,
                          options={"max_num_steps": 20000}, fast=False)
LEARNING_RATES = (1.0, 0.1, 0.01)  # L-BFGS's step scale, shorter after a trial step blows up
MAX_ITERS = 100   # L-BFGS iterations (per attempt) ...
MAX_EVALS = 150   # ... and solves of every trajectory (forward and back), at most: a hard
                  # bound, counted here (torch's max_eval is checked between line searches)
METHOD = ("L-BFGS (strong Wolfe line search) on the squared trajectory error over the "
          "training data, each variable scaled by its spread; the terms SINDy kept, "
          "from SINDy's values")


class PolynomialField(nn.Module):
    """dy/dt = theta(y) @ coef.T (+ known equations): the recovered system, for `solve`.

    Only the nonzero entries of `coef` are free (`values`), so a refit keeps the sparsity.
    """

    def __init__(self, powers: np.ndarray, coef: np.ndarray,
                 known: nn.Module | None = None) -> None:
        super().__init__()
        full = torch.as_tensor(np.asarray(coef), dtype=torch.float64)
        self.register_buffer("powers", torch.as_tensor(np.asarray(powers),
                                                       dtype=torch.float64))
        self.register_buffer("kept", full != 0)
        self.register_buffer("frame", torch.zeros_like(full))
        self.values = nn.Parameter(full[full != 0].clone(), requires_grad=False)
        # each value is `values * unit`: the refit works in units of the starting magnitudes,
        # so coefficients of 13 and of 0.007 move on the same scale
        self.register_buffer("unit", torch.ones_like(self.values))
        self.known = known

    @property
    def coef(self) -> torch.Tensor:
        return self.frame.masked_scatter(self.kept, self.values * self.unit)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        theta = torch.prod(y.unsqueeze(-2) ** self.powers, dim=-1)
        out = theta @ self.coef.T
        return out if self.known is None else out + self.known(t, y).to(out.dtype)


@dataclass
class Trajectory:
    """One observed trajectory the refit matches: from (t0, y0), observations y at t (NaN:
    missing), in the data's units."""

    t0: float
    y0: np.ndarray
    t: np.ndarray
    y: np.ndarray


@dataclass
class Result:
    coef: np.ndarray          # (dim, terms), zeros where SINDy dropped a term
    loss_before: float        # mean scaled squared error at SINDy's values ...
    loss_after: float         # ... and at the refitted ones (never higher)
    evaluations: int          # solves of the data
    seconds: float
    stopped: str | None       # why the search ended early (a failed solve), or None


class _Failed(Exception):
    pass


class _Budget(Exception):
    pass


def fit_to_data(field: PolynomialField, data: list[Trajectory], quiet: bool = True
                ) -> Result:
    """Refit `field`'s nonzero coefficients to `data`; `field` ends at the best values.
    `quiet=False`: a progress bar of the solves (on a terminal)."""
    with progress(MAX_EVALS, "refit", quiet) as bar:
        return _fit(field, data, bar)


def _fit(field: PolynomialField, data: list[Trajectory], bar: Any) -> Result:
    start = time.perf_counter()
    ys = np.concatenate([d.y for d in data])
    spread = np.nanstd(ys, axis=0) if np.isfinite(ys).any() else np.ones(ys.shape[1])
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    prepared = []
    for d in data:
        grid = np.unique(np.concatenate([[d.t0], d.t]))
        seen = np.isfinite(d.y)
        prepared.append((torch.as_tensor(grid, dtype=torch.float64),
                         torch.as_tensor(np.searchsorted(grid, d.t)),
                         torch.as_tensor(d.y / spread, dtype=torch.float64).nan_to_num(),
                         torch.as_tensor(seen),
                         torch.as_tensor(d.y0, dtype=torch.float64).unsqueeze(0)))
    scale = torch.as_tensor(spread, dtype=torch.float64)
    count = max(sum(int(p[3].sum()) for p in prepared), 1)
    best = {"loss": math.inf, "values": field.values.detach().clone()}
    evals = 0

    def loss() -> torch.Tensor:
        nonlocal evals
        if evals >= MAX_EVALS:  # L-BFGS checks max_eval only between line searches
            raise _Budget
        evals += 1
        total = torch.zeros((), dtype=torch.float64)
        try:
            for grid, idx, obs, seen, y0 in prepared:
                path = solve.solve(field, y0, grid, SOLVER, grad=True)[:, 0][idx] / scale
                total = total + torch.where(seen, path - obs, 0.0).pow(2).sum()
        except SolverError as e:
            raise _Failed(str(e)) from None
        value = total / count
        if not torch.isfinite(value):
            raise _Failed("the refitted system's trajectory is not finite")
        if float(value.detach()) < best["loss"]:
            best["loss"], best["values"] = float(value.detach()), field.values.detach().clone()
        bar.update(evals, loss=best["loss"])
        return value

    def closure() -> torch.Tensor:
        field.values.grad = None
        value = loss()
        value.backward()
        return value

    try:
        with torch.no_grad():
            before = float(loss())
    except _Failed as e:  # SINDy's own values cannot be solved: nothing to start from
        raise SolverError(f"the recovered system cannot be solved over the data: {e}",
                          "lower --threshold or --degree, or recover a run that "
                          "fits") from None
    with torch.no_grad():  # refit in units of the starting magnitudes (PolynomialField)
        field.unit.copy_(field.values.abs())
        field.values.copy_(torch.sign(field.values))
        best["values"] = field.values.detach().clone()
    # only the recovered coefficients move: the known equations' parameters stay as trained
    frozen = [p for p in (field.known.parameters() if field.known is not None else ())
              if p.requires_grad]
    stopped = None
    try:
        for p in frozen:
            p.requires_grad_(False)
        field.values.requires_grad_(True)
        for lr in LEARNING_RATES:
            try:
                torch.optim.LBFGS([field.values], lr=lr, max_iter=MAX_ITERS,
                                  max_eval=MAX_EVALS, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                  tolerance_change=1e-15).step(closure)
                stopped = None
                break
            except _Failed as e:  # a trial step blew the system up: from the best values
                stopped = str(e)  # so far, again with shorter steps
                with torch.no_grad():
                    field.values.copy_(best["values"])
    except _Budget:  # MAX_EVALS solves: the best values so far
        stopped = f"the budget of {MAX_EVALS} solves was spent"
    finally:
        field.values.requires_grad_(False)
        for p in frozen:
            p.requires_grad_(True)
        with torch.no_grad():  # back to plain coefficients
            field.values.copy_(best["values"] * field.unit)
            field.unit.fill_(1.0)
    bar.update(MAX_EVALS, loss=best["loss"], solves=evals)  # done: converged or at the bound
    return Result(field.coef.detach().cpu().numpy(), before, best["loss"], evals,
                  time.perf_counter() - start, stopped)
