"""Known physics plus a network (universal differential equations, Rackauckas et al. 2020).

`model.known.rhs` gives the part of the field one knows, as equations (parameters trained
or fixed); the network learns only what is missing: dy/dt = known(y, t) + network(y, t).
With `model.known.network: false` the known equations are the whole model (a mechanistic fit
by the same training loop). The known part is written in the data's own units; when the
field works on scaled states (system=file), it is converted: dz/dt = known(y) / std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from odecli.dynamics import equations, models, schema
from odecli.errors import ConfigError


class Scaling(nn.Module):
    """Per-variable affine scaling z = (y - mean) / std, fitted on the training part and kept
    in the checkpoint (so a trained field is read in the file's units later)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("std", torch.ones(dim, dtype=torch.float64))

    def to_model(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean.to(y.dtype)) / self.std.to(y.dtype)

    def to_data(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z.dtype) + self.mean.to(z.dtype)


class HybridField(nn.Module):
    """known(t, y) + net(t, y) on the model's states (scaled by `scaling` when given)."""

    def __init__(self, known: equations.EquationField, net: models.ODEField | None,
                 scaling: Scaling | None = None) -> None:
        super().__init__()
        self.known, self.net = known, net
        self.scaling = scaling
        self.dim = len(known.variables)
        self.augment_dim = net.augment_dim if net is not None else 0
        self.time_dependent = known.time_dependent or bool(net and net.time_dependent)
        self._t_offset: torch.Tensor | None = None

    @property
    def t_offset(self) -> torch.Tensor | None:
        return self._t_offset

    @t_offset.setter
    def t_offset(self, value: torch.Tensor | None) -> None:
        self._t_offset = value
        self.known.t_offset = value
        if self.net is not None:
            self.net.t_offset = value

    def known_part(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The known equations' rate in the model's states (augmented dimensions: zero)."""
        state = z[..., : self.dim]
        if self.scaling is None:
            rate = self.known(t, state)
        else:
            rate = self.known(t, self.scaling.to_data(state)) / self.scaling.std.to(z.dtype)
        if self.augment_dim:
            rate = torch.cat([rate, rate.new_zeros(*rate.shape[:-1], self.augment_dim)], -1)
        return rate

    def learned_part(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            return torch.zeros_like(z)
        return self.net(t, z)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = self.known_part(t, z)
        return out if self.net is None else out + self.net(t, z)

    @torch.no_grad()
    def fit_normalization(self, t: torch.Tensor, y: torch.Tensor,
                          rates: torch.Tensor | None = None) -> None:
        """The network's statistics, its output scale from what the known part leaves."""
        if self.net is None:
            return
        if rates is None and len(t) > 1:
            rates = (y[1:] - y[:-1]) / (t[1:] - t[:-1]).unsqueeze(-1)
            rates = rates - rate_at(self.known_part, (t[1:] + t[:-1]) / 2,
                                    (y[1:] + y[:-1]) / 2, self.known.time_dependent)
        self.net.fit_normalization(t, y, rates)


def rate_at(field: Any, t: torch.Tensor, y: torch.Tensor, time_dependent: bool
            ) -> torch.Tensor:
    """field(t_i, y_i) for states y (n, dim) at times t (n,): one batched call when the field
    does not depend on t."""
    if not time_dependent:
        return field(t[0], y)
    return torch.cat([field(t[i], y[i: i + 1]) for i in range(len(t))])


def known_node(model_cfg: Any) -> dict[str, Any]:
    """The checked `model.known` node."""
    return schema.MODEL.check(model_cfg, "model")["known"]


def build(model_cfg: Any, dim: int, variables: Sequence[str],
          scaling: Scaling | None = None) -> nn.Module:
    """The learned field: a plain network, or known equations plus (or without) one."""
    m = schema.MODEL.check(model_cfg, "model")
    k = m["known"]
    if k["rhs"] is None:
        return models.build(model_cfg, dim)
    if len(k["rhs"]) != dim:
        raise ConfigError(f"model.known.rhs has {len(k['rhs'])} right-hand sides for the "
                          f"{dim} variables ({', '.join(variables)}); give one per variable "
                          f"(0 where nothing is known)")
    known = equations.EquationField(
        equations.parse_system(k["rhs"], list(variables), k["params"], "model.known.rhs"),
        list(variables), k["params"], trainable=k["trainable"])
    if k["network"] is False and m["augment_dim"]:
        raise ConfigError("model.augment_dim needs a network (model.known.network=true)")
    net = models.build(model_cfg, dim) if k["network"] else None
    return HybridField(known, net, scaling)


def missing_term_error(field: HybridField, truth: nn.Module, t: torch.Tensor,
                       y: torch.Tensor, time_dependent: bool) -> dict[str, float]:
    """How far the learned part is from what the known part misses (truth - known), RMS over
    the true states y (n, dim) at times t, relative to the missing term's RMS size."""
    with torch.no_grad():
        dep = time_dependent or field.time_dependent
        true_rate = rate_at(truth, t.double(), y.double(), dep)
        missing = true_rate - rate_at(field.known, t, y, dep).double()
        learned = rate_at(field.learned_part, t, y, dep)[..., : field.dim].double()
        err = float((learned - missing).pow(2).sum(-1).mean().sqrt())
        size = float(missing.pow(2).sum(-1).mean().sqrt())
    return {"missing_term_error_abs": err,
            "missing_term_error_rel": err / size if size > 0 else float("nan")}


def describe(field: nn.Module) -> dict[str, Any]:
    """metrics.json's account of a known part: its equations and parameters as trained."""
    if not isinstance(field, HybridField):
        return {}
    return {"known_equations": field.known.describe(), "known_params": field.known.values(),
            "known_network": field.net is not None}


def parameters_of(params: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items())
