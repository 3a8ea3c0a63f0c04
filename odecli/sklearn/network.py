"""The network behind odecli's scikit-learn estimators: Dense -> ODESolve -> Dense.

The ODESolve layer integrates a small time-aware MLP field over [0, 1] with
`odecli.numerics.solve`, so the estimators have exactly the CLI's solvers (any
`solver=...` method, its tolerances or fixed steps) and gradient modes (direct, adjoint,
checkpoint), checked by `SolverSpec.from_cfg` like a config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from odecli.errors import OdecliError
from odecli.numerics.methods import ADAPTIVE
from odecli.numerics.solve import CountingField, SolverSpec, solve


class Field(nn.Module):
    """dy/dt = W2 tanh(W1 [t, y] + b1) + b2 on the hidden features."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width + 1, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(y[:, :1]) * t
        return self.fc2(torch.tanh(self.fc1(torch.cat([tt, y], 1))))


class ODENet(nn.Module):
    """Dense (features -> width), ODESolve over [0, 1], Dense (width -> outputs)."""

    def __init__(self, n_in: int, width: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.field = CountingField(Field(width, hidden))
        self.out = nn.Linear(width, n_out)
        self.register_buffer("t", torch.tensor([0.0, 1.0]), persistent=False)

    def forward(self, x: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        y = torch.tanh(self.inp(x))
        y = solve(self.field, y, self.t.to(x.dtype), spec)[-1]
        return self.out(y)


def spec(solver: str, rtol: float | None, atol: float | None, steps: int | None,
         gradient: str) -> SolverSpec:
    """The solver as the CLI would build it; bad values raise ValueError (scikit-learn's
    convention for bad parameters) with odecli's one-line message."""
    node: dict[str, Any] = {"method": solver, "compile": False}
    if solver in ADAPTIVE:
        node.update(rtol=rtol, atol=atol)
    elif steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        node["step_size"] = 1.0 / steps
    try:
        return SolverSpec.from_cfg(node, {"name": gradient})
    except OdecliError as exc:
        raise ValueError(str(exc)) from None


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
