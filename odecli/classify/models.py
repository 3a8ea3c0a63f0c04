"""ODE-Net and ResNet classifiers that share every part but the body.

Both are `down -> body -> head`. The body of the ODE-Net solves dy/dt = f(t, y) over [0, 1];
the ResNet's body applies N residual blocks `y <- y + (1/N) f_k(k/N, y)` of the same block
architecture. With `tied` all N blocks are one f, which is exactly Euler's method at step 1/N
on the ODE-Net's field: the state dicts of the two line up key for key (`body.field.func.*`),
so an ODE-Net solved with `solver=euler solver.step_size=1/N` and a tied ResNet with N blocks
given the same weights compute the same outputs (tests/test_classify.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from odecli.numerics.solve import CountingField, SolverSpec, solve


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with min(groups, channels) groups (torchdiffeq's odenet_mnist: 32)."""
    return nn.GroupNorm(min(groups, channels), channels)


class ConcatConv(nn.Module):
    """A 3x3 convolution that also sees the time as a constant input channel."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in + 1, c_out, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([tt, x], 1))


class ConvField(nn.Module):
    """torchdiffeq's odenet_mnist field: norm, ReLU, time-conv, norm, ReLU, time-conv, norm."""

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (_norm(channels, groups) for _ in range(3))
        self.conv1 = ConcatConv(channels, channels)
        self.conv2 = ConcatConv(channels, channels)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class MLPField(nn.Module):
    """Two tanh layers on a feature vector, with the time as an extra input of each."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features + 1, features)
        self.fc2 = nn.Linear(features + 1, features)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(x[:, :1]) * t
        h = torch.tanh(self.fc1(torch.cat([tt, x], 1)))
        return self.fc2(torch.cat([tt, h], 1))


class StepCounter:
    """The NFE counter of an untied ResNet (one count per residual block), shaped like
    CountingField for the engine: `nfe` and an `abort` hook."""

    def __init__(self) -> None:
        self.nfe = 0
        self.abort: Callable[[], bool] | None = None


class ODEBody(nn.Module):
    """Solve the field over [0, 1] with the run's solver and gradient mode."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = CountingField(field)
        self.spec: SolverSpec | None = None  # set_spec() before the first forward pass
        self.register_buffer("t", torch.tensor([0.0, 1.0]), persistent=False)

    @property
    def counter(self) -> Any:
        return self.field

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.spec is None:
            raise RuntimeError("ODEBody.set_spec() must be called before solving")
        return solve(self.field, y, self.t.to(y.dtype), self.spec)[-1]


class ResBody(nn.Module):
    """N residual blocks y <- y + (1/N) f_k(k/N, y); `tied`: one f for every block."""

    def __init__(self, make: Callable[[], nn.Module], blocks: int, tied: bool) -> None:
        super().__init__()
        self.n = blocks
        self.tied = tied
        if tied:
            self.field = CountingField(make())
        else:
            self.blocks = nn.ModuleList(make() for _ in range(blocks))
            self._counter = StepCounter()

    @property
    def counter(self) -> Any:
        return self.field if self.tied else self._counter

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = 1.0 / self.n
        for k in range(self.n):
            t = torch.tensor(k * h, dtype=y.dtype, device=y.device)
            if self.tied:
                y = y + h * self.field(t, y)
            else:
                c = self._counter
                c.nfe += 1
                if c.abort is not None and c.abort():
                    from odecli.numerics.solve import StepAborted

                    raise StepAborted("forward abandoned after a stop signal")
                y = y + h * self.blocks[k](t, y)
        return y


class Classifier(nn.Module):
    """down (features) -> zero augmentation -> body -> head (class logits)."""

    def __init__(self, m: dict[str, Any], in_shape: tuple[int, int, int], n_classes: int
                 ) -> None:
        super().__init__()
        c_in, h, w = in_shape
        width, aug, groups = m["width"], m["augment_dim"], m["norm_groups"]
        layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1)]
        for _ in range(m["downsample"]):
            layers += [_norm(width, groups), nn.ReLU(),
                       nn.Conv2d(width, width, 4, stride=2, padding=1)]
            h, w = h // 2, w // 2
        self.conv = m["field"] == "conv"
        if not self.conv:
            layers += [nn.ReLU(), nn.Flatten(), nn.Linear(width * h * w, width)]
        self.down = nn.Sequential(*layers)
        self.aug = aug
        state = width + aug
        make: Callable[[], nn.Module] = ((lambda: ConvField(state, groups)) if self.conv
                                         else (lambda: MLPField(state)))
        self.body: ODEBody | ResBody = (ODEBody(make()) if m["name"] == "odenet"
                                        else ResBody(make, m["blocks"], m["tied"]))
        # conv head: norm, ReLU, then every position's channels (flatten) or their
        # spatial average (pool: torchdiffeq's, which loses where on the image a stroke is)
        head: list[nn.Module] = [nn.ReLU()]
        features = state
        if self.conv:
            head = [_norm(state, groups), nn.ReLU()]
            if m["head"] == "pool":
                head.append(nn.AdaptiveAvgPool2d(1))
            else:
                features = state * h * w
            head.append(nn.Flatten())
        self.head = nn.Sequential(*head, nn.Linear(features, n_classes))

    @property
    def counter(self) -> Any:
        return self.body.counter

    def set_spec(self, spec: SolverSpec) -> None:
        if isinstance(self.body, ODEBody):
            self.body.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.aug:
            pad = (y.shape[0], self.aug, *y.shape[2:])
            y = torch.cat([y, y.new_zeros(pad)], 1)
        return self.head(self.body(y))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
