"""Fixed-step Runge-Kutta solves written out step by step in plain torch operations.

`odecli export` needs a solve that a file format can hold: ONNX and `torch.export` record
the operations a forward pass runs, so a solve whose number of steps depends on the data
(an adaptive method) is recorded for the one input it was traced with and is silently wrong
for any other. A fixed number of steps of a fixed-step method, unrolled, has no control flow
at all. The tableaus are torchdiffeq's (the same methods, by name, as `solver=...`), so an
unrolled solve equals `solve()` with that method on the same grid (tests/test_export.py).
"""

from __future__ import annotations

import torch
from torch import nn

from odecli.errors import ConfigError
from odecli.numerics.methods import ADAPTIVE, FIXED_RK, METHODS

# name -> (c, a, b): stage times, stage weights (lower triangle), solution weights
TABLEAUS: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]]
TABLEAUS = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "heun2": ((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    "heun3": ((0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (0.25, 0.0, 0.75)),
    # torchdiffeq's rk4 is the 3/8 rule (rk4_alt_step_func)
    "rk4": ((0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
            (0.125, 0.375, 0.375, 0.125)),
}
assert set(TABLEAUS) == set(FIXED_RK), "numerics/methods.py's fixed-step table changed"


def check_method(method: str) -> None:
    """A one-line error unless `method` is a fixed-step Runge-Kutta method."""
    if method in TABLEAUS:
        return
    if method in ADAPTIVE:
        raise ConfigError(
            f"an export cannot hold the adaptive solver '{method}' (its steps depend on the "
            f"input); choose a fixed-step one, e.g. --solver rk4 --steps 8, and raise --steps "
            f"until the export's error against the adaptive solve is below --tolerance")
    kind = "a multistep method" if method in METHODS else "not a solver"
    raise ConfigError(f"'{method}' is {kind}; an export takes a fixed-step Runge-Kutta "
                      f"method: {', '.join(FIXED_RK)}")


def rk_step(field: nn.Module, method: str, t: torch.Tensor, h: torch.Tensor,
            y: torch.Tensor) -> torch.Tensor:
    """One step of `method` from (t, y) with step h."""
    c, a, b = TABLEAUS[method]
    ks: list[torch.Tensor] = []
    for ci, row in zip(c, a, strict=True):
        yi = y
        for aij, kj in zip(row, ks, strict=True):
            if aij != 0.0:
                yi = yi + h * aij * kj
        ks.append(field(t + ci * h, yi))
    out = y
    for bi, ki in zip(b, ks, strict=True):
        if bi != 0.0:
            out = out + h * bi * ki
    return out


class UnrolledSolve(nn.Module):
    """dy/dt = field(t, y) from y0 (batch, ...) at increasing times t: (len(t), batch, ...),
    `steps` steps of `method` between consecutive times.

    Each interval's steps are written out; the intervals are one `scan` (a loop an exported
    graph keeps as a loop: ONNX Scan, a pt2 higher-order op), so the number of times and the
    batch size stay inputs and the file stays small. `loop=False` writes out every interval
    too (for a fixed, short grid such as a classifier's [0, 1])."""

    def __init__(self, field: nn.Module, method: str, steps: int, loop: bool = True) -> None:
        super().__init__()
        check_method(method)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"--steps must be a positive integer, got {steps!r}")
        self.field, self.method, self.steps, self.loop = field, method, steps, loop

    def interval(self, y: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`steps` steps from (ends[0], y) to ends[1]; scan's (carry, output) pair."""
        h = (ends[1] - ends[0]) / self.steps
        for k in range(self.steps):
            y = rk_step(self.field, self.method, ends[0] + k * h, h, y)
        return y, y.clone()

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ends = torch.stack([t[:-1], t[1:]], 1)
        if not self.loop or not torch.compiler.is_exporting():  # eager: a plain loop is faster
            y, out = y0, [y0]
            for i in range(ends.shape[0]):
                y, _ = self.interval(y, ends[i])
                out.append(y)
            return torch.stack(out)
        from torch._higher_order_ops.scan import scan  # torch's (still private) loop op

        _, ys = scan(self.interval, y0, ends)
        return torch.cat([y0.unsqueeze(0), ys])

    def nfe(self, n_times: int) -> int:
        """Field evaluations of one forward pass over `n_times` times."""
        return (n_times - 1) * self.steps * len(TABLEAUS[self.method][0])
