"""Learned vector fields: an MLP of any depth and width, optional time input and augmentation.

The field can normalise its input and output with fixed statistics of the training data, so
one set of optimiser settings fits systems whose states and speeds differ by orders of
magnitude (Lotka-Volterra populations vs a unit spiral). With `normalize: false` and
`init: seed` it is exactly the seed notebook's network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from odecli.dynamics import schema
from odecli.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}
INITS = schema.INITS
OUTPUT_SCALES = schema.OUTPUT_SCALES
# The same activations as functions: the field calls them directly (see ODEField.forward).
FUNCTIONS: dict[str, Any] = {
    "tanh": torch.tanh, "relu": torch.relu, "elu": F.elu, "softplus": F.softplus,
    "silu": F.silu, "gelu": F.gelu, "sigmoid": torch.sigmoid,
}


def hidden_widths(cfg: Mapping[str, Any]) -> list[int]:
    """Hidden layer widths from `model.depth` and `model.width` (an int or one per layer)."""
    m = schema.MODEL.check(cfg, "model", partial=True)
    for key in ("depth", "width"):
        if key not in m:
            raise ConfigError(f"model.{key} is missing from the config")
    return _widths(m)


def _widths(m: Mapping[str, Any]) -> list[int]:
    width = m["width"]
    return [width] * m["depth"] if isinstance(width, int) else list(width)


class ODEField(nn.Module):
    """dy/dt = scale_out * net((y - mean) / std [, t]) for a state of `dim + augment_dim`."""

    def __init__(self, dim: int, widths: list[int], activation: str = "tanh",
                 time_dependent: bool = False, augment_dim: int = 0, init: str = "seed",
                 init_std: float = 0.1, input_power: int = 1, output_scale: str = "max"
                 ) -> None:
        super().__init__()
        self.input_power = input_power
        self.output_scale = output_scale
        self.dim, self.augment_dim, self.time_dependent = dim, augment_dim, time_dependent
        state = dim + augment_dim
        sizes = [state + int(time_dependent), *widths, state]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        # forward walks the layers itself: a small field is evaluated tens of times per
        # training step, and each module call costs about as much as the layer's arithmetic
        self._linears = [m for m in layers if isinstance(m, nn.Linear)]
        self._activation = FUNCTIONS[activation]
        if init == "seed":
            for m in self.net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, mean=0.0, std=init_std)
                    nn.init.zeros_(m.bias)
        self.register_buffer("in_mean", torch.zeros(state))
        self.register_buffer("in_std", torch.ones(state))
        self.register_buffer("out_scale", torch.ones(state))
        self.register_buffer("t_mid", torch.zeros(()))
        self.register_buffer("t_half", torch.ones(()))
        # Per-sample start times for time-dependent fields solved on relative time grids.
        self.t_offset: torch.Tensor | None = None

    @torch.no_grad()
    def fit_normalization(self, t: torch.Tensor, y: torch.Tensor,
                          rates: torch.Tensor | None = None) -> None:
        """Set input/output statistics from observed states y (time, dim) on times t.

        `rates`: samples of what the network outputs, dy/dt (m, dim), where finite differences
        of y along t are not it (several trajectories; the residual a known part leaves);
        NaN marks a missing value in y or rates.
        """
        d = self.dim
        seen = y**self.input_power
        if torch.isnan(seen).any():
            mean = seen.nanmean(0)
            self.in_mean[:d] = mean
            self.in_std[:d] = (seen - mean).pow(2).nanmean(0).sqrt().nan_to_num(1.0
                                                                                  ).clamp_min(1e-6)
        else:
            self.in_mean[:d] = seen.mean(0)
            self.in_std[:d] = seen.std(0).clamp_min(1e-6)
        if rates is None and len(t) > 1:
            rates = (y[1:] - y[:-1]) / (t[1:] - t[:-1]).unsqueeze(-1)
        if rates is not None and len(rates):
            # "max": the network outputs O(1) even where the motion is fastest (the cubic
            # spiral's outer ring is 30x its mean speed); "mean" suits fields whose speed is
            # even along the path (the gated nonlinear system fits 10x better with it).
            speed = rates.abs()
            if torch.isnan(speed).any():
                scale = {"max": speed.nan_to_num(0.0).amax(0), "mean": speed.nanmean(0),
                         "rms": speed.pow(2).nanmean(0).sqrt()}[self.output_scale]
                scale = scale.nan_to_num(1.0)
            else:
                scale = {"max": speed.amax(0), "mean": speed.mean(0),
                         "rms": speed.pow(2).mean(0).sqrt()}[self.output_scale]
            self.out_scale[:d] = scale.clamp_min(1e-6)
        self.t_mid.fill_(float((t.max() + t.min()) / 2))
        self.t_half.fill_(float(max((t.max() - t.min()) / 2, 1e-6)))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.input_power != 1:  # ode_demo's network sees y**3
            y = y**self.input_power
        h = (y - self.in_mean) / self.in_std
        if self.time_dependent:
            tt = t if self.t_offset is None else t + self.t_offset
            tt = (tt - self.t_mid) / self.t_half
            h = torch.cat([h, tt.expand(*h.shape[:-1], 1)], dim=-1)
        last = len(self._linears) - 1
        for i, layer in enumerate(self._linears):
            h = F.linear(h, layer.weight, layer.bias)
            if i < last:
                h = self._activation(h)
        return h * self.out_scale


def build(cfg: Mapping[str, Any], dim: int) -> ODEField:
    """Construct the learned field from the `cfg.model` node (checked whole by its schema)."""
    m = schema.MODEL.check(cfg, "model")
    return ODEField(
        dim=dim,
        widths=_widths(m),
        activation=m["activation"],
        time_dependent=m["time_dependent"],
        augment_dim=m["augment_dim"],
        init=m["init"],
        init_std=m["init_std"],
        input_power=m["input_power"],
        output_scale=m["output_scale"],
    )
