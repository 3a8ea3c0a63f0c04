"""The neural CDE and its baselines for `odecli cde`, one interface for all four.

`features(path, x, t)` turns whole series (path channels and standardised values, NaN where
missing, on the grid `t`) into tensors computed once per dataset (the interpolation's
coefficients, filled inputs, resampled series); `forward(feats, t, spec)` maps a batch of them
to class logits.

- `cde` (Kidger et al. 2020): dz = f(z) dX(t), X the interpolated path (torchcde: linear, or
  Hermite cubic with backward differences, which is causal), f a small MLP with a matrix
  output (hidden x channels), solved by odecli's `solve` over the whole grid, so every solver
  and gradient mode applies; a series that ended early has a constant path, so its state stops.
- `gru_dt`: a GRU over the grid with the last observed values, the observed mask and the time
  since the last observation as inputs (GRU-dt in the paper).
- `odernn` (Rubanova et al. 2019): the hidden state flows by an ODE between grid points
  (solved by `solve` with the run's solver) and a GRU updates it where a point was observed.
- `knn`: 1-nearest-neighbour on each series resampled to `length` equal steps over its
  observed span; its one parameter is the temperature of a soft nearest-neighbour loss,
  which does not change a prediction (the nearest training series decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from odecli.errors import OdecliError
from odecli.numerics.solve import CountingField, SolverSpec, solve

Feats = dict[str, torch.Tensor]


def torchcde() -> Any:
    """torchcde, or one line saying how to get it."""
    try:
        import torchcde as tc
    except ImportError:
        raise OdecliError("odecli cde needs torchcde: pip install 'odecli[cde]'") from None
    return tc


def fill_gaps(path: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Each scalar channel of `path` (N, L, C) with its NaN filled by linear interpolation in
    `t` between its neighbouring observations, held constant before the first and after the
    last, zero where it has none: what torchcde does to missing values, vectorised (torchcde
    loops over every series and channel in Python, which made per-batch augmentation slow)."""
    seen = ~torch.isnan(path)
    length = path.shape[1]
    idx = torch.arange(length, device=path.device).view(1, -1, 1).expand_as(path)
    prev = torch.where(seen, idx, -1).cummax(dim=1).values
    nxt = torch.where(seen, idx, length).flip(1).cummin(dim=1).values.flip(1)
    none = prev < 0  # before the first observation; with nxt == length: none at all
    prev, nxt = torch.where(none, nxt, prev), torch.where(nxt >= length, prev, nxt)
    none = nxt < 0
    prev, nxt = prev.clamp(0, length - 1), nxt.clamp(0, length - 1)
    values = torch.nan_to_num(path)
    vp, vn = values.gather(1, prev), values.gather(1, nxt)
    tt = t.view(1, -1, 1).expand_as(path)
    tp, tn = tt.gather(1, prev), tt.gather(1, nxt)
    ratio = torch.where(nxt > prev, (tt - tp) / (tn - tp).clamp(min=1e-12), 0.0)
    return torch.where(none, 0.0, vp + ratio * (vn - vp))


def _mlp(n_in: int, width: int, n_out: int, layers: int) -> list[nn.Module]:
    mods: list[nn.Module] = []
    size = n_in
    for _ in range(layers):
        mods += [nn.Linear(size, width), nn.ReLU()]
        size = width
    return [*mods, nn.Linear(size, n_out)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class CDEField(nn.Module):
    """f(z) dX/dt: an MLP's (hidden x channels) matrix times the path's derivative at t."""

    def __init__(self, hidden: int, channels: int, width: int, layers: int) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = nn.Sequential(*_mlp(hidden, width, hidden * channels, layers), nn.Tanh())
        self.use(None)

    def use(self, path: Any) -> None:
        """The batch's interpolation (a torchcde module, kept out of the state dict)."""
        object.__setattr__(self, "path", path)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = self.net(z).view(*z.shape[:-1], self.hidden, self.channels)
        dx = self.path.derivative(torch.as_tensor(t))
        return (g @ dx.unsqueeze(-1)).squeeze(-1)


class NeuralCDE(nn.Module):
    def __init__(self, m: Mapping[str, Any], channels: int, n_classes: int) -> None:
        super().__init__()
        self.interpolation = m["interpolation"]
        self.initial = nn.Linear(channels, m["hidden"])
        self.counter = CountingField(CDEField(m["hidden"], channels, m["width"], m["layers"]))
        self.readout = nn.Linear(m["hidden"], n_classes)

    def features(self, path: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> Feats:
        tc = torchcde()
        path = fill_gaps(path, t)
        if self.interpolation == "hermite":
            return {"coeffs": tc.hermite_cubic_coefficients_with_backward_differences(path, t)}
        return {"coeffs": tc.linear_interpolation_coeffs(path, t)}

    def forward(self, feats: Feats, t: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        tc = torchcde()
        kind = tc.CubicSpline if self.interpolation == "hermite" else tc.LinearInterpolation
        path = kind(feats["coeffs"], t)
        z0 = self.initial(path.evaluate(t[0]))
        self.counter.func.use(path)  # kept: a checkpointed backward replays the steps
        return self.readout(solve(self.counter, z0, t[[0, -1]], spec)[-1])


def _filled(path: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> Feats:
    """Inputs of the recurrent baselines: the path's channels carried forward from their last
    observation (zero before the first), the observed mask, the time since the last
    observation (in grid lengths), and whether the series is still running."""
    p = path.detach().cpu().numpy()
    tt = t.detach().cpu().numpy()
    observed = ~np.isnan(x.detach().cpu().numpy()).all(axis=-1)
    n, length, _ = p.shape
    filled = np.zeros_like(p)
    since = np.zeros((n, length))
    last = np.zeros_like(p[:, 0])
    last_t = np.full(n, tt[0])
    for i in range(length):
        last = np.where(np.isnan(p[:, i]), last, p[:, i])
        last_t = np.where(observed[:, i], tt[i], last_t)
        filled[:, i] = last
        since[:, i] = (tt[i] - last_t) / max(tt[-1] - tt[0], 1.0)
    end = np.array([np.nonzero(row)[0][-1] if row.any() else 0 for row in observed])
    alive = np.arange(length)[None, :] <= end[:, None]
    inputs = np.concatenate([filled, observed[..., None], since[..., None]], axis=-1)
    return {"inputs": torch.as_tensor(inputs, dtype=path.dtype, device=path.device),
            "observed": torch.as_tensor(observed, device=path.device),
            "alive": torch.as_tensor(alive, device=path.device)}


class GRUdt(nn.Module):
    def __init__(self, m: Mapping[str, Any], channels: int, n_classes: int) -> None:
        super().__init__()
        self.hidden = m["hidden"]
        self.cell = nn.GRUCell(channels + 2, self.hidden)
        self.readout = nn.Linear(self.hidden, n_classes)
        self.counter = CountingField(nn.Identity())  # no ODE: its NFE stay 0

    def features(self, path: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> Feats:
        return _filled(path, x, t)

    def forward(self, feats: Feats, t: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        inp, alive = feats["inputs"], feats["alive"]
        h = inp.new_zeros(len(inp), self.hidden)
        for i in range(inp.shape[1]):
            h = torch.where(alive[:, i, None], self.cell(inp[:, i], h), h)
        return self.readout(h)


class _Flow(nn.Module):
    def __init__(self, hidden: int, width: int, layers: int) -> None:
        super().__init__()
        self.net = nn.Sequential(*_mlp(hidden, width, hidden, layers), nn.Tanh())

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class ODERNN(nn.Module):
    def __init__(self, m: Mapping[str, Any], channels: int, n_classes: int) -> None:
        super().__init__()
        self.hidden = m["hidden"]
        self.cell = nn.GRUCell(channels + 2, self.hidden)
        self.counter = CountingField(_Flow(self.hidden, m["width"], m["layers"]))
        self.readout = nn.Linear(self.hidden, n_classes)

    def features(self, path: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> Feats:
        return _filled(path, x, t)

    def forward(self, feats: Feats, t: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        inp, alive, observed = feats["inputs"], feats["alive"], feats["observed"]
        h = inp.new_zeros(len(inp), self.hidden)
        for i in range(inp.shape[1]):
            if i:
                flowed = solve(self.counter, h, t[i - 1:i + 1], spec)[-1]
                h = torch.where(alive[:, i, None], flowed, h)
            h = torch.where(observed[:, i, None], self.cell(inp[:, i], h), h)
        return self.readout(h)


def resample(x: np.ndarray, t: np.ndarray, length: int) -> np.ndarray:
    """Each series' observed points linearly interpolated at `length` equal steps over its
    observed span, flattened: (N, length * D)."""
    out = np.empty((len(x), length, x.shape[-1]))
    for i, series in enumerate(x):
        seen = ~np.isnan(series).all(axis=-1)
        ts, vs = t[seen], series[seen]
        grid = np.linspace(ts[0], ts[-1], length)
        for k in range(series.shape[-1]):
            ok = ~np.isnan(vs[:, k])
            out[i, :, k] = np.interp(grid, ts[ok], vs[ok, k]) if ok.any() else 0.0
    return out.reshape(len(x), -1)


class NearestNeighbour(nn.Module):
    def __init__(self, m: Mapping[str, Any], channels: int, n_classes: int) -> None:
        super().__init__()
        self.length, self.n_classes = m["length"], n_classes
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.counter = CountingField(nn.Identity())  # no ODE: its NFE stay 0
        self.register_buffer("ref", torch.zeros(0), persistent=False)
        self.register_buffer("ref_y", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("ref_row", torch.zeros(0, dtype=torch.long), persistent=False)

    def features(self, path: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> Feats:
        flat = resample(x.detach().cpu().numpy(), t.detach().cpu().numpy(), self.length)
        return {"flat": torch.as_tensor(flat, dtype=x.dtype, device=x.device),
                "row": torch.full((len(x),), -1, dtype=torch.long, device=x.device)}

    def remember(self, feats: Feats, y: torch.Tensor, rows: torch.Tensor) -> None:
        """The training series every prediction compares with."""
        self.ref, self.ref_y, self.ref_row = feats["flat"], y, rows

    def forward(self, feats: Feats, t: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        d = torch.cdist(feats["flat"], self.ref).pow(2) / feats["flat"].shape[-1]
        d = d.masked_fill(feats["row"][:, None] == self.ref_row[None, :], float("inf"))
        per_class = torch.full((len(d), self.n_classes), float("inf"), dtype=d.dtype,
                               device=d.device)
        per_class = per_class.scatter_reduce(1, self.ref_y.expand(len(d), -1), d, "amin")
        return -self.log_scale.exp() * per_class.clamp(max=1e6)


MODELS = {"cde": NeuralCDE, "gru_dt": GRUdt, "odernn": ODERNN, "knn": NearestNeighbour}


def build(m: Mapping[str, Any], channels: int, n_classes: int) -> nn.Module:
    return MODELS[m["name"]](m, channels, n_classes)
