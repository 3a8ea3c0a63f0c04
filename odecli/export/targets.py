"""What an export holds: a loaded run's model as a plain torch module, with the run's data.

Each `Target` is one function of tensors to tensors (a trajectory, the field, logits) with
the solve unrolled (numerics/unrolled.py), the inputs it is checked on (the run's own data)
and odecli's reference answer on them: the same model in float64 through odecli's adaptive
solve (dopri5 at rtol 1e-7), far more accurate than a float32 file can be.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from odecli.errors import ConfigError
from odecli.export import WHAT
from odecli.numerics import solve
from odecli.numerics.unrolled import UnrolledSolve

# The reference: the learned model in float64, solved far below float32's resolution (a
# classifier's conv field is costly at such tolerances: looser, and on at most CHECK_IMAGES)
REFERENCE_SOLVER = {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9}
CLASSIFY_SOLVER = {"method": "dopri5", "rtol": 1e-6, "atol": 1e-6}
CHECK_IMAGES = 128
REFERENCE = "odecli's solve of the same model in float64: dopri5, rtol {rtol:g}, atol {atol:g}"
FIELD_REFERENCE = "odecli's field of the same model in float64"


@dataclass
class Target:
    """One exportable function and how it is checked."""

    what: str
    module: nn.Module                  # float32, eval mode, what the file holds
    reference: nn.Module               # the same model, float64, adaptive reference solve
    inputs: tuple[torch.Tensor, ...]   # the run's data (batch first, except a trajectory's t)
    input_names: tuple[str, ...]
    output_name: str
    dynamic: tuple[dict[int, str] | None, ...]  # each input's dynamic axes: axis -> name
    data: str                          # where the inputs come from, for export.json
    shapes: dict[str, str] = field(default_factory=dict)
    nfe: int | None = None             # field evaluations of one forward pass of the file
    reference_is: str = REFERENCE.format(**REFERENCE_SOLVER)


class Reference(nn.Module):
    """odecli's adaptive solve (numerics.solve) at REFERENCE_SOLVER, landing on every
    output time, as a body."""

    def __init__(self, field_: nn.Module, solver: dict[str, Any]) -> None:
        super().__init__()
        self.field, self.solver = field_, solver

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        spec = solve.SolverSpec(gradient="direct", fast=False, options={"step_t": t},
                                **self.solver)
        out = solve.solve(self.field, y0, t, spec, grad=False)
        assert isinstance(out, torch.Tensor)
        return out


class Scaled(nn.Module):
    """States in the data's units around a field on scaled, zero-augmented states."""

    def __init__(self, dim: int, augment: int, scaling: nn.Module | None) -> None:
        super().__init__()
        self.dim, self.augment, self.scaling = dim, augment, scaling

    def to_model(self, y: torch.Tensor) -> torch.Tensor:
        z = y if self.scaling is None else (y - self.scaling.mean) / self.scaling.std
        if self.augment:
            z = torch.cat([z, z.new_zeros(z.shape[0], self.augment)], dim=-1)
        return z

    def to_data(self, z: torch.Tensor, rate: bool = False) -> torch.Tensor:
        z = z[..., : self.dim]
        if self.scaling is None:
            return z
        return z * self.scaling.std if rate else z * self.scaling.std + self.scaling.mean


class Trajectory(Scaled):
    """(y0 (batch, dim), t (T,)) -> trajectory (T, batch, dim)."""

    def __init__(self, body: nn.Module, dim: int, augment: int, scaling: nn.Module | None
                 ) -> None:
        super().__init__(dim, augment, scaling)
        self.body = body

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.to_data(self.body(self.to_model(y0), t))


class Field(Scaled):
    """(t (), y (batch, dim)) -> dy/dt (batch, dim)."""

    def __init__(self, field_: nn.Module, dim: int, augment: int, scaling: nn.Module | None
                 ) -> None:
        super().__init__(dim, augment, scaling)
        self.field = field_

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.to_data(self.field(t, self.to_model(y)), rate=True)


class Logits(nn.Module):
    """images (batch, C, H, W) -> logits (batch, classes): down, body over [0, 1], head."""

    def __init__(self, classifier: nn.Module, body: nn.Module | None) -> None:
        super().__init__()
        self.down, self.head, self.aug = classifier.down, classifier.head, classifier.aug
        self.body = body if body is not None else classifier.body  # a ResNet's own blocks
        self.ode = body is not None
        self.register_buffer("t", torch.tensor([0.0, 1.0]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        y = self.down(images)
        if self.aug:
            y = torch.cat([y, y.new_zeros(y.shape[0], self.aug, *y.shape[2:])], 1)
        y = self.body(y, self.t)[-1] if self.ode else self.body(y)
        return self.head(y)


def build(command: str, exp: Any, what: str | None, method: str, steps: int) -> Target:
    """The Target of `what` for a loaded run's experiment `exp` (odecli.load's)."""
    if command not in WHAT:
        raise ConfigError(
            f"odecli export takes `train` and `classify` runs; a '{command}' run is not "
            "exported (see docs/export.md for why)")
    choices = WHAT[command]
    what = what or choices[0]
    if what not in choices:
        raise ConfigError(f"a '{command}' run exports --what {' or '.join(choices)}, "
                          f"not '{what}'")
    for m in exp.modules().values():
        m.eval()
    if command == "classify":
        return _logits(exp, method, steps)
    return _trajectory(exp, method, steps) if what == "trajectory" else _field(exp)


def _float64(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).double().eval()


def _dynamics_parts(exp: Any) -> tuple[nn.Module, int, int, nn.Module | None]:
    f = exp.field
    if getattr(f, "t_offset", None) is not None:
        f.t_offset = None
    scaling = getattr(exp, "scaling", None)
    dim = int(exp.dim if scaling is not None else exp.system.dim)
    return f, dim, int(f.augment_dim), scaling


def _run_states(exp: Any) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Initial states (batch, dim) and times (T,) from the run's data, in its units."""
    if getattr(exp, "scaling", None) is not None:  # system=file: the file's trajectories
        parts = exp.split.train
        longest = max(parts, key=lambda p: len(p.t))
        y0 = np.stack([p.start_y for p in parts])
        # a batch of one would be traced as a constant: add complete observed states
        rows = np.asarray(longest.y)[1:][np.isfinite(np.asarray(longest.y)[1:]).all(1)][:3]
        y0 = np.concatenate([y0, rows])
        t = torch.as_tensor(np.asarray(longest.t, dtype=np.float64))
        return (torch.as_tensor(y0, dtype=torch.float64), t,
                f"the start states of the {len(parts)} training trajectories of the data file "
                f"and {len(rows)} observed states of '{longest.name}', on its {len(t)} times")
    obs = exp.obs.y
    idx = torch.linspace(0, len(obs) - 1, 4).round().long()[1:]
    y0 = torch.cat([exp.truth[:1], obs[idx]]).double().cpu()
    t = exp.t_full.double().cpu()
    return (y0, t, f"the true initial state and {len(idx)} observed states, on the run's "
            f"{len(t)} times (training span and extrapolation)")


def _trajectory(exp: Any, method: str, steps: int) -> Target:
    f, dim, aug, scaling = _dynamics_parts(exp)
    y0, t, data = _run_states(exp)
    body = UnrolledSolve(f, method, steps)
    module = Trajectory(body, dim, aug, scaling).cpu().float().eval()
    ref = _float64(module)
    ref.body = Reference(ref.body.field, REFERENCE_SOLVER)  # type: ignore[assignment]
    return Target("trajectory", module, ref, (y0.float(), t.float()), ("y0", "t"),
                  "trajectory", ({0: "batch"}, {0: "times"}), data,
                  {"y0": "(batch, dim)", "t": "(times,)", "trajectory": "(times, batch, dim)"},
                  body.nfe(len(t)))


def _field(exp: Any) -> Target:
    f, dim, aug, scaling = _dynamics_parts(exp)
    y0, t, _ = _run_states(exp)
    if scaling is not None:
        states = np.concatenate([np.asarray(p.y) for p in exp.split.train])
        states = states[np.isfinite(states).all(1)]
        y = torch.as_tensor(states)
        data = f"the {len(y)} complete observed states of the data file's training trajectories"
    else:
        y = exp.obs.y.double().cpu()
        data = f"the run's {len(y)} observed states"
    tt = t[len(t) // 2].reshape(())
    module = Field(f, dim, aug, scaling).cpu().float().eval()
    return Target("field", module, _float64(module), (tt.float(), y.float()), ("t", "y"),
                  "dydt", (None, {0: "batch"}), data + f", at t = {float(tt):.6g}",
                  {"t": "()", "y": "(batch, dim)", "dydt": "(batch, dim)"},
                  reference_is=FIELD_REFERENCE)


def _logits(exp: Any, method: str, steps: int) -> Target:
    model = exp.model
    ode = model.body.__class__.__name__ == "ODEBody"
    body = UnrolledSolve(model.body.field.func, method, steps, loop=False) if ode else None
    module = Logits(model, body).cpu().float().eval()
    ref = _float64(module)
    if ode:
        ref.body = Reference(ref.body.field, CLASSIFY_SOLVER)  # type: ignore[assignment]
    rows = np.asarray(exp.data.test)[:CHECK_IMAGES]
    x = torch.as_tensor(exp.data.x[rows], dtype=torch.float32)
    c, h, w = x.shape[1:]
    return Target("logits", module, ref, (x,), ("images",), "logits", ({0: "batch"},),
                  f"the first {len(rows)} of the run's test images", {
                      "images": f"(batch, {c}, {h}, {w})",
                      "logits": f"(batch, {int(exp.data.n_classes)})"},
                  body.nfe(2) if body is not None else None,
                  REFERENCE.format(**CLASSIFY_SOLVER) if ode else
                  "odecli's ResNet in float64")
