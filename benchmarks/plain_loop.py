"""torchdiffeq's ode_demo written the usual way: the plain script odecli is measured against.

Nothing here imports odecli. The problem: cubic spiral dy/dt = y**3 A, 1000 points on
[0, 25], windows of 10 points, batch 20, RMSprop 1e-3, dopri5 at torchdiffeq's default
tolerances (rtol 1e-7, atol 1e-9), a 2-50-2 tanh network on y**3, direct backprop.
"""

from __future__ import annotations

import torch
from torch import nn
from torchdiffeq import odeint

A = [[-0.1, 2.0], [-2.0, -0.1]]


class PlainField(nn.Module):
    """ode_demo's ODEFunc."""

    def __init__(self, width: int = 50) -> None:
        super().__init__()
        self.nfe = 0
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2))
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0, std=0.1)
                nn.init.constant_(m.bias, val=0)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1  # one integer add: the same bookkeeping odecli's CountingField does
        return self.net(y**3)


def spiral_truth(n: int = 1000, t1: float = 25.0) -> tuple[torch.Tensor, torch.Tensor]:
    """ode_demo's data: the true trajectory (n, 1, 2) at n times on [0, t1]."""
    t = torch.linspace(0.0, t1, n)
    a = torch.tensor(A)
    with torch.no_grad():
        y = odeint(lambda t, y: (y**3) @ a, torch.tensor([[2.0, 0.0]]), t, method="dopri5")
    return t, y


class PlainLoop:
    """ode_demo's training loop. `weights`/`gen`/`true_y` let a caller give it exactly the
    same start, windows and targets as an odecli run (for the per-step overhead check)."""

    def __init__(self, seed: int = 0, weights: dict[str, torch.Tensor] | None = None,
                 true_y: torch.Tensor | None = None, gen: torch.Generator | None = None
                 ) -> None:
        torch.manual_seed(seed)
        self.gen = gen
        self.t, self.true_y = spiral_truth()
        if true_y is not None:
            self.true_y = true_y.reshape(self.true_y.shape).to(self.true_y.dtype)
        self.func = PlainField()
        if weights is not None:
            self.func.net.load_state_dict(weights)
        self.opt = torch.optim.RMSprop(self.func.parameters(), lr=1e-3)

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = torch.randint(0, 1000 - 10 + 1, (20,), generator=self.gen)
        batch_y0 = self.true_y[s]
        batch_t = self.t[:10]
        batch_y = torch.stack([self.true_y[s + i] for i in range(10)], dim=0)
        return batch_y0, batch_t, batch_y

    def step(self) -> None:
        self.opt.zero_grad()
        batch_y0, batch_t, batch_y = self.get_batch()
        pred_y = odeint(self.func, batch_y0, batch_t, rtol=1e-7, atol=1e-9)
        loss = torch.mean(torch.abs(pred_y - batch_y))
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def error(self) -> float:
        """ode_demo's test loss: mean L1 of the rollout from the true start over all points."""
        pred_y = odeint(self.func, self.true_y[0], self.t, rtol=1e-7, atol=1e-9)
        return float(torch.mean(torch.abs(pred_y - self.true_y)))


if __name__ == "__main__":
    # The script as a user would run it: 2000 iterations, then the final trajectory error.
    torch.set_num_threads(1)
    loop = PlainLoop(seed=0)
    for _ in range(2000):
        loop.step()
    print(f"mean L1 trajectory error {loop.error():.4f}")
