"""True dynamical systems: vector fields, initial states and time spans.

A registry maps the config name to a constructor taking the checked `system` node, so adding
a system is one function here, its keys in odecli.dynamics.schema.SYSTEMS and one YAML file in
configs/system/ (which holds its defaults).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from odecli.dynamics import equations, schema
from odecli.errors import ConfigError, SolverError
from odecli.fields import to_plain
from odecli.numerics import solve
from odecli.paths import yaml_node


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
    key: str = ""              # the checked settings it was built from (the truth's cache key)

    @property
    def dim(self) -> int:
        return int(self.y0.shape[-1])

    @property
    def variables(self) -> list[str]:
        """The state variables' names (equations: as declared; x, y otherwise)."""
        names = getattr(self.field, "variables", None)
        return list(names) if names else equations.default_variables(self.dim)

    def trajectory(self, t: torch.Tensor | None = None, y0: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """The true solution, computed in float64 at tight tolerance: (len(t), dim)."""
        t = (self.t if t is None else t).to(torch.float64)
        y0 = (self.y0 if y0 is None else y0).to(torch.float64)
        # the members of a batched sweep (hydra/launcher=ensemble) share one system: solve it
        # once per process
        key = (self.key, tuple(t.tolist()), tuple(y0.reshape(-1).tolist()))
        if self.key and key in _TRUTHS:
            return _TRUTHS[key].clone()
        out = self._trajectory(t, y0)
        if self.key:
            while len(_TRUTHS) >= 8:
                _TRUTHS.pop(next(iter(_TRUTHS)))
            _TRUTHS[key] = out.clone()
        return out

    def _trajectory(self, t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        field = self.field.to(torch.float64)
        if isinstance(field, LinearField) and field.power == 1:
            # Exact: y(t) = y0 expm(A (t - t0)) in the row-vector convention.
            return y0 @ torch.linalg.matrix_exp(field.A * (t - t[0]).view(-1, 1, 1))
        try:
            return solve.reference(field, y0, t)
        except SolverError as exc:  # the user's equations, not training: say so
            raise ConfigError(
                f"the true system '{self.name}' cannot be solved from y0 "
                f"{[round(v, 6) for v in y0.reshape(-1).tolist()]} over t from "
                f"{float(t[0]):.4g} to {float(t[-1]):.4g} ({exc}): its solution blows up or "
                f"turns stiff there; check the right-hand sides, y0 or a shorter system.t1"
            ) from None

    def full_t(self) -> torch.Tensor:
        return torch.cat([self.t, self.t_extra])


_TRUTHS: dict[tuple[Any, ...], torch.Tensor] = {}


def _matrix(value: list[list[float]]) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _spiral(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(_matrix(s["A"])), False


def _spiral_cubic(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(_matrix(s["A"]), power=3), False


def random_matrix(seed: int, scale: float = 0.5) -> torch.Tensor:
    """randn(2, 2) * scale from its own generator, so the system is reproducible."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(2, 2, generator=gen, dtype=torch.float64) * scale


def _random(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(random_matrix(s["matrix_seed"], s["scale"])), False


def lotka_linear_matrix(a: float, b: float, c: float, d: float) -> torch.Tensor:
    """The seed's linearisation [[0, -b c/d], [d a/b, 0]]: a pure centre."""
    return torch.tensor([[0.0, -b * c / d], [d * a / b, 0.0]], dtype=torch.float64)


def _lotka(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LotkaVolterraField(s["a"], s["b"], s["c"], s["d"]), False


def _lotka_linear(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    return LinearField(lotka_linear_matrix(s["a"], s["b"], s["c"], s["d"])), False


def _nonlinear(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    centre = torch.tensor(s["centre"], dtype=torch.float64)
    return GatedField(_matrix(s["A2"]), _matrix(s["B2"]), centre), False


def _random_mlp(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    field = RandomMLPField(s["widths"], s["matrix_seed"], s["gain"])
    return field.to(torch.float64), True


def _equations(s: Mapping[str, Any]) -> tuple[nn.Module, bool]:
    field = equations.build_field(s["rhs"], s["variables"], s["params"], "system.rhs")
    y0 = torch.tensor(s["y0"], dtype=torch.float64)
    with torch.no_grad():
        rate = field(torch.tensor(s["t0"], dtype=torch.float64), y0)
    if not torch.isfinite(rate).all():
        bad = int((~torch.isfinite(rate)).nonzero()[0, 0])
        raise ConfigError(f"system.rhs[{bad}] ({s['rhs'][bad]}) is not finite at system.y0 "
                          f"{s['y0']}: the true trajectory cannot start there")
    return field, field.time_dependent


REGISTRY: dict[str, Callable[[Mapping[str, Any]], tuple[nn.Module, bool]]] = {
    "spiral": _spiral,
    "spiral_cubic": _spiral_cubic,
    "random": _random,
    "lotka": _lotka,
    "lotka_linear": _lotka_linear,
    "nonlinear": _nonlinear,
    "mlp": _random_mlp,
    **{name: _equations for name in schema.EQUATION_PRESETS},
}
# Systems read from a file rather than simulated (odecli.dynamics.datafile reads them).
FILE_SYSTEMS = schema.FILE_SYSTEMS


def check(cfg: Any) -> dict[str, Any]:
    """The `system` node checked by its system's schema (odecli.dynamics.schema.SYSTEMS).

    A partial node (tests, scripts: {"name": "spiral", "y0": [2, 0], ...}) takes the keys it
    lacks from configs/system/<name>.yaml, so defaults live only there, and keys its system
    does not use are left out; a composed config is checked whole, unknown keys included, by
    schema.check_train.
    """
    node = to_plain(cfg)
    if not isinstance(node, dict):
        raise ConfigError(f"system must be a config node (key: value), got {node!r}")
    if "name" not in node:
        raise ConfigError("system.name is missing from the config")
    name = schema.SYSTEM.choice.check(node["name"], "system.name")
    variant = schema.SYSTEM.variants[name]
    given = {k: v for k, v in node.items() if k in variant.fields}
    return variant.check({**yaml_node(f"system/{name}.yaml", "system"), **given}, "system")


def build(cfg: Mapping[str, Any]) -> System:
    """Construct the system named by `cfg.name` with its grid, after checking the values."""
    s = check(cfg)
    if s["name"] in FILE_SYSTEMS:
        raise ConfigError(f"system={s['name']} is data read from a file, not a simulated "
                          f"system (odecli.dynamics.datafile reads it)")
    field, time_dependent = REGISTRY[s["name"]](s)
    t0, t1, n = s["t0"], s["t1"], s["data_size"]
    t = torch.linspace(t0, t1, n, dtype=torch.float64)
    dt = (t1 - t0) / (n - 1)
    n_extra = int(round(s["extrapolate"] * (n - 1)))
    t_extra = t1 + dt * torch.arange(1, n_extra + 1, dtype=torch.float64)
    y0 = torch.tensor(s["y0"], dtype=torch.float64)
    return System(name=s["name"], field=field, y0=y0, t=t, t_extra=t_extra,
                  time_dependent=time_dependent, key=json.dumps(s, sort_keys=True, default=str))


def __getattr__(name: str) -> Any:
    """The seed's matrices (SPIRAL_A, NONLINEAR_A2, NONLINEAR_B2), read from the YAML that
    holds them as defaults rather than written here a second time."""
    where = {"SPIRAL_A": ("spiral", "A"), "NONLINEAR_A2": ("nonlinear", "A2"),
             "NONLINEAR_B2": ("nonlinear", "B2")}
    if name in where:
        system, key = where[name]
        return yaml_node(f"system/{system}.yaml", "system")[key]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
