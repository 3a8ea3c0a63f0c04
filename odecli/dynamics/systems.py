"""True dynamical systems: vector fields, initial states and time spans.

A registry maps the config name to a constructor taking the `cfg.system` node, so adding a
system is one function here plus one YAML file in configs/system/.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint

from odecli.errors import ConfigError

SPIRAL_A = [[-0.1, 2.0], [-2.0, -0.1]]
NONLINEAR_A2 = [[-0.1, -0.5], [0.5, -0.1]]
NONLINEAR_B2 = [[0.2, 1.0], [-1.0, 0.2]]


class LinearField(nn.Module):
    """dy/dt = (y ** power) A, the seed's row-vector convention."""

    def __init__(self, A: torch.Tensor, power: int = 1) -> None:
        super().__init__()
        self.register_buffer("A", A)
        self.power = power

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (y**self.power) @ self.A


class LotkaVolterraField(nn.Module):
    """x' = a x - b x y,  y' = d x y - c y (prey x, predator y)."""

    def __init__(self, a: float, b: float, c: float, d: float) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = a, b, c, d

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, p = y[..., 0], y[..., 1]
        return torch.stack((self.a * x - self.b * x * p, self.d * x * p - self.c * p), dim=-1)

    def invariant(self, y: torch.Tensor) -> torch.Tensor:
        """V = d x - c ln x + b y - a ln y is conserved along every orbit."""
        x, p = y[..., 0], y[..., 1]
        return self.d * x - self.c * torch.log(x) + self.b * p - self.a * torch.log(p)


class GatedField(nn.Module):
    """Sigmoid-gated mix of two linear fields around a centre x0 (the seed's nonlinear system).

    dy/dt = s(<y, x0>) (y - x0) A2^T + s(-<y, x0>) (y + x0) B2^T
    """

    def __init__(self, A2: torch.Tensor, B2: torch.Tensor, x0: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A2", A2)
        self.register_buffer("B2", B2)
        self.register_buffer("x0", x0)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gate = (y * self.x0).sum(-1, keepdim=True)
        return (torch.sigmoid(gate) * ((y - self.x0) @ self.A2.T)
                + torch.sigmoid(-gate) * ((y + self.x0) @ self.B2.T))


class RandomMLPField(nn.Module):
    """A fixed random 2-25-50-10-2 ELU network of y*t without biases (time-dependent)."""

    def __init__(self, widths: list[int], seed: int, gain: float) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        weights = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            weights.append(torch.randn(fan_out, fan_in, generator=gen) * gain / fan_in**0.5)
        for i, w in enumerate(weights):
            self.register_buffer(f"W{i}", w)
        self.n = len(weights)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = y * t
        for i in range(self.n):
            h = h @ getattr(self, f"W{i}").T
            if i < self.n - 1:
                h = torch.nn.functional.elu(h)
        return h


@dataclass
class System:
    """A true system with the grid it is observed on and an extrapolation window after it."""

    name: str
    field: nn.Module
    y0: torch.Tensor           # (dim,)
    t: torch.Tensor            # training span grid, (data_size,)
    t_extra: torch.Tensor      # grid after the training span, for extrapolation error
    time_dependent: bool = False

    @property
    def dim(self) -> int:
        return int(self.y0.shape[-1])

    def trajectory(self, t: torch.Tensor | None = None, y0: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """The true solution, computed in float64 at tight tolerance: (len(t), dim)."""
        t = (self.t if t is None else t).to(torch.float64)
        y0 = (self.y0 if y0 is None else y0).to(torch.float64)
        field = self.field.to(torch.float64)
        if isinstance(field, LinearField) and field.power == 1:
            # Exact: y(t) = y0 expm(A (t - t0)) in the row-vector convention.
            return y0 @ torch.linalg.matrix_exp(field.A * (t - t[0]).view(-1, 1, 1))
        with torch.no_grad():
            # step_t makes the solver land on every output time: dopri8's interpolant
            # between steps is far less accurate than its steps.
            return odeint(field, y0, t, method="dopri8", rtol=1e-10, atol=1e-12,
                          options={"step_t": t})

    def full_t(self) -> torch.Tensor:
        return torch.cat([self.t, self.t_extra])


def _matrix(cfg: Mapping[str, Any], key: str, default: list[list[float]]) -> torch.Tensor:
    value = cfg.get(key, default)
    try:
        A = torch.tensor([list(map(float, row)) for row in value], dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"system.{key} must be a 2x2 list of numbers") from exc
    if A.shape != (2, 2):
        raise ConfigError(f"system.{key} must be 2x2, got shape {tuple(A.shape)}")
    return A


def _spiral(cfg: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(_matrix(cfg, "A", SPIRAL_A)), False


def _spiral_cubic(cfg: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(_matrix(cfg, "A", SPIRAL_A), power=3), False


def random_matrix(seed: int, scale: float = 0.5) -> torch.Tensor:
    """randn(2, 2) * scale from its own generator, so the system is reproducible."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(2, 2, generator=gen, dtype=torch.float64) * scale


def _random(cfg: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(random_matrix(cfg.get("matrix_seed", 0), cfg.get("scale", 0.5))), False


def lotka_linear_matrix(a: float, b: float, c: float, d: float) -> torch.Tensor:
    """The seed's linearisation [[0, -b c/d], [d a/b, 0]]: a pure centre."""
    return torch.tensor([[0.0, -b * c / d], [d * a / b, 0.0]], dtype=torch.float64)


def _abcd(cfg: Mapping[str, Any]) -> tuple[float, float, float, float]:
    a, b, c, d = (float(cfg.get(k, v)) for k, v in (("a", 1.5), ("b", 1.0), ("c", 3.0),
                                                     ("d", 1.0)))
    if min(a, b, c, d) <= 0:
        raise ConfigError("Lotka-Volterra parameters a, b, c, d must all be positive")
    return a, b, c, d


def _lotka(cfg: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LotkaVolterraField(*_abcd(cfg)), False


def _lotka_linear(cfg: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(lotka_linear_matrix(*_abcd(cfg))), False


def _nonlinear(cfg: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    centre = torch.tensor([float(v) for v in cfg.get("centre", [-1.0, 0.0])], dtype=torch.float64)
    return GatedField(_matrix(cfg, "A2", NONLINEAR_A2), _matrix(cfg, "B2", NONLINEAR_B2),
                      centre), False


def _mlp(cfg: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    widths = [int(w) for w in cfg.get("widths", [2, 25, 50, 10, 2])]
    field = RandomMLPField(widths, int(cfg.get("matrix_seed", 0)), float(cfg.get("gain", 1.0)))
    return field.to(torch.float64), True


REGISTRY: dict[str, Callable[[Mapping[str, Any]], tuple[nn.Module, bool]]] = {
    "spiral": _spiral,
    "spiral_cubic": _spiral_cubic,
    "random": _random,
    "lotka": _lotka,
    "lotka_linear": _lotka_linear,
    "nonlinear": _nonlinear,
    "mlp": _mlp,
}


def build(cfg: Mapping[str, Any]) -> System:
    """Construct the system named by `cfg.name` with its grid, after checking the values."""
    name = str(cfg.get("name"))
    if name not in REGISTRY:
        raise ConfigError(f"unknown system '{name}'; choose one of: {', '.join(REGISTRY)}")
    t0, t1 = cfg.get("t0", 0.0), cfg.get("t1")
    n = cfg.get("data_size")
    for key, value in (("t0", t0), ("t1", t1)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"system.{key} must be a number, got {value!r}")
    if not t1 > t0:
        raise ConfigError(f"system.t1 ({t1}) must be greater than system.t0 ({t0})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"system.data_size must be an integer >= 2, got {n!r}")
    extra = cfg.get("extrapolate", 0.25)
    if isinstance(extra, bool) or not isinstance(extra, (int, float)) or extra < 0:
        raise ConfigError(f"system.extrapolate must be a non-negative fraction, got {extra!r}")
    try:
        y0 = torch.tensor([float(v) for v in cfg.get("y0")], dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError("system.y0 must be a list of numbers") from exc
    if y0.shape != (2,):
        raise ConfigError(f"system.y0 must have 2 entries, got {y0.numel()}")
    if name == "lotka" and bool((y0 <= 0).any()):
        raise ConfigError("system.y0 must be positive for Lotka-Volterra (populations)")
    field, time_dependent = REGISTRY[name](cfg)
    t = torch.linspace(float(t0), float(t1), n, dtype=torch.float64)
    dt = (float(t1) - float(t0)) / (n - 1)
    n_extra = int(round(float(extra) * (n - 1)))
    t_extra = float(t1) + dt * torch.arange(1, n_extra + 1, dtype=torch.float64)
    return System(name=name, field=field, y0=y0, t=t, t_extra=t_extra,
                  time_dependent=time_dependent)
