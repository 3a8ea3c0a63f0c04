"""What a `system=file` run trains and scores on: splits, scaling, windows, baselines, errors.

Every trajectory keeps its own (possibly irregular) times and a mask of observed cells; the
loss and every error count observed cells only. Splits: `forecast` trains on each
trajectory's times up to a cut and scores the rest (the model forecasts from the last
training point); `trajectories` holds out whole trajectories (the model starts from their
first point); `none` trains on everything. Three baselines are scored on the same held-out
cells from the same starting information: the last known value held constant, the training
mean, and a linear ODE dy/dt = A y + b fitted by least squares to the training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from odecli.dynamics.datafile import DataError, Table, Trajectory

BASELINES = ("last", "mean", "linear")


@dataclass
class Part:
    """One trajectory's rows used for one role, in the file's units (NaN: missing)."""

    name: str
    t: np.ndarray         # (n,)
    y: np.ndarray         # (n, dim)
    start_t: float        # the rollout starts here ...
    start_y: np.ndarray   # ... from this full state (missing cells filled)
    with_start: bool      # whether t[0] is the start itself (training) or after it (forecast)


@dataclass
class Split:
    train: list[Part]
    test: list[Part]
    kind: str


def fill(tr: Trajectory, upto: int | None = None) -> np.ndarray:
    """The trajectory's states with missing cells filled by linear interpolation in time
    between that variable's observations (held constant beyond the first and last), using
    rows [:upto] only."""
    t, y = tr.t[:upto], tr.y[:upto]
    out = y.copy()
    for j in range(y.shape[1]):
        seen = ~np.isnan(y[:, j])
        if seen.any():
            out[:, j] = np.interp(t, t[seen], y[seen, j])
    return out


def split(table: Table, kind: str, fraction: float) -> Split:
    """The training and held-out parts; DataError when a split leaves nothing to train on or
    nothing to score."""
    name, trs = table.source, table.trajectories
    train: list[Part] = []
    test: list[Part] = []
    if kind == "trajectories":
        if len(trs) < 2:
            raise DataError(name, [f"{name}: system.split=trajectories needs at least 2 "
                                   f"trajectories, the file has {len(trs)} (use "
                                   f"system.split=forecast)"])
        n_test = min(len(trs) - 1, max(1, round((1 - fraction) * len(trs))))
        for i, tr in enumerate(trs):
            filled = fill(tr)
            part = Part(tr.name, tr.t, tr.y, float(tr.t[0]), filled[0], True)
            (test if i >= len(trs) - n_test else train).append(part)
        return Split(train, test, kind)
    for tr in trs:
        filled = fill(tr)
        if kind == "none":
            train.append(Part(tr.name, tr.t, tr.y, float(tr.t[0]), filled[0], True))
            continue
        cut = tr.t[0] + fraction * (tr.t[-1] - tr.t[0])
        n = int(np.searchsorted(tr.t, cut, side="right"))
        head = tr.y[:n]
        if (~np.isnan(head)).any(1).sum() < 2:
            raise DataError(name, [f"{name}: trajectory '{tr.name}' has fewer than 2 observed "
                                   f"points before the forecast cut at {cut:g}; raise "
                                   f"system.train_fraction"])
        train.append(Part(tr.name, tr.t[:n], head, float(tr.t[0]), filled[0], True))
        if n < len(tr.t) and (~np.isnan(tr.y[n:])).any():
            last = fill(tr, n)[n - 1]
            test.append(Part(tr.name, tr.t[n:], tr.y[n:], float(tr.t[n - 1]), last, False))
    if kind == "forecast" and not test:
        raise DataError(name, [f"{name}: the forecast cut leaves no observations to score; "
                               f"lower system.train_fraction or use system.split=none"])
    return Split(train, test, kind)


def scaling(parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable mean and standard deviation over the observed training cells."""
    y = np.concatenate([p.y for p in parts])
    mean = np.nanmean(y, 0)
    std = np.sqrt(np.nanmean((y - mean) ** 2, 0))
    std = np.where(std > 0, std, np.maximum(np.abs(mean), 1.0))
    return mean, std


# ---------------------------------------------------------------------------- windows

@dataclass
class Windows:
    """All training parts as tensors in the model's (scaled) units, for window sampling."""

    t: list[torch.Tensor]      # per part (n,)
    z: list[torch.Tensor]      # per part (n, dim), observed cells, 0 where missing
    mask: list[torch.Tensor]   # per part (n, dim) bool
    zfill: list[torch.Tensor]  # per part (n, dim), missing cells filled: window start states
    starts: torch.Tensor       # (m, 2) long: (part, first row) of every possible window


def windows(parts: list[Part], mean: np.ndarray, std: np.ndarray, batch_time: int,
            device: torch.device, dtype: torch.dtype) -> Windows:
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    ts, zs, masks, fills, starts = [], [], [], [], []
    for i, p in enumerate(parts):
        z = (p.y - mean) / std
        seen = ~np.isnan(z)
        ts.append(tensor(p.t))
        zs.append(tensor(np.where(seen, z, 0.0)))
        masks.append(torch.as_tensor(seen, device=device))
        tr = Trajectory(p.name, p.t, p.y)
        fills.append(tensor((fill(tr) - mean) / std))
        last = max(len(p.t) - batch_time, 0)
        starts += [(i, s) for s in range(last + 1) if seen[s:].any()]
    return Windows(ts, zs, masks, fills, torch.tensor(starts, dtype=torch.long))


@dataclass
class MaskedBatch:
    y0: torch.Tensor        # (B, dim)
    t: torch.Tensor         # (U,) union of relative times, t[0] == 0
    pick: torch.Tensor      # (T, B) indices into t
    target: torch.Tensor    # (T, B, dim)
    mask: torch.Tensor      # (T, B, dim) bool
    t_start: torch.Tensor   # (B, 1)


def sample(w: Windows, batch_size: int, batch_time: int, generator: torch.Generator
           ) -> MaskedBatch:
    """batch_size windows of up to batch_time consecutive rows of one training part each,
    uniformly over every possible start; a short part gives a shorter, masked window."""
    chosen = w.starts[torch.randint(0, len(w.starts), (batch_size,), generator=generator)]
    dev = w.t[0].device
    offsets, targets, masks, y0, t_start = [], [], [], [], []
    for part, first in chosen.tolist():
        t, n = w.t[part], len(w.t[part])
        rows = torch.arange(first, first + batch_time).clamp_max(n - 1).to(dev)
        valid = (torch.arange(first, first + batch_time) < n).to(dev)
        offsets.append(t[rows] - t[first])
        targets.append(w.z[part][rows])
        masks.append(w.mask[part][rows] & valid.unsqueeze(-1))
        y0.append(w.zfill[part][first])
        t_start.append(t[first])
    off = torch.stack(offsets, 1)                       # (T, B)
    uniq, inverse = torch.unique(torch.round(off * 1e9), sorted=True, return_inverse=True)
    return MaskedBatch(y0=torch.stack(y0), t=(uniq / 1e9).to(off.dtype), pick=inverse,
                       target=torch.stack(targets, 1), mask=torch.stack(masks, 1),
                       t_start=torch.stack(t_start).unsqueeze(-1))


def gather(pred: torch.Tensor, batch: MaskedBatch) -> torch.Tensor:
    cols = torch.arange(pred.shape[1], device=pred.device).unsqueeze(0).expand_as(batch.pick)
    return pred[batch.pick, cols]


def masked_loss(pred: torch.Tensor, batch: MaskedBatch, kind: str) -> torch.Tensor:
    diff = (pred - batch.target).abs() if kind == "l1" else (pred - batch.target).pow(2)
    m = batch.mask.to(diff.dtype)
    return (diff * m).sum() / m.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------- scoring

def errors(preds: list[np.ndarray], parts: list[Part], scale: float) -> dict[str, float]:
    """RMS error over observed cells (file units) and relative to the data's scale."""
    se = [((pr - p.y) ** 2)[~np.isnan(p.y)] for pr, p in zip(preds, parts, strict=True)]
    cells = np.concatenate(se) if se else np.zeros(0)
    err = float(np.sqrt(cells.mean())) if cells.size else math.nan
    if cells.size and not np.isfinite(cells).all():
        err = math.inf
    return {"abs": err, "rel": err / scale if scale > 0 else math.nan}


def per_variable(preds: list[np.ndarray], parts: list[Part], std: np.ndarray,
                 variables: list[str]) -> dict[str, float]:
    """Each variable's RMS error relative to its own spread."""
    out = {}
    for j, v in enumerate(variables):
        se = np.concatenate([((pr[:, j] - p.y[:, j]) ** 2)[~np.isnan(p.y[:, j])]
                             for pr, p in zip(preds, parts, strict=True)])
        out[v] = float(np.sqrt(se.mean()) / std[j]) if se.size else math.nan
    return out


def data_scale(parts: list[Part], mean: np.ndarray) -> float:
    """RMS distance of the observed training cells from their variable's mean (file units):
    the size of the motion an error is compared with."""
    dev = np.concatenate([((p.y - mean) ** 2)[~np.isnan(p.y)] for p in parts])
    return float(np.sqrt(dev.mean()))


def linear_ode(parts: list[Part], mean: np.ndarray, std: np.ndarray
               ) -> np.ndarray | None:
    """M (dim+1, dim+1) of d[z; 1]/dt = M [z; 1], fitted by least squares (scaled units) to
    the finite differences of consecutive, fully observed training rows; None if too few."""
    xs, rates = [], []
    for p in parts:
        z = (p.y - mean) / std
        ok = ~np.isnan(z).any(1)
        both = ok[1:] & ok[:-1]
        dt = np.diff(p.t)[both]
        xs.append(((z[1:] + z[:-1]) / 2)[both])
        rates.append(((z[1:] - z[:-1])[both]) / dt[:, None])
    x, r = np.concatenate(xs), np.concatenate(rates)
    dim = len(mean)
    if len(x) < dim + 1:
        return None
    design = np.hstack([x, np.ones((len(x), 1))])
    coef = np.linalg.lstsq(design.T @ design + 1e-8 * np.eye(dim + 1), design.T @ r,
                           rcond=None)[0]
    m = np.zeros((dim + 1, dim + 1))
    m[:dim] = coef.T
    return m


def baselines(split_: Split, mean: np.ndarray, std: np.ndarray
              ) -> dict[str, list[np.ndarray] | None]:
    """Each baseline's predictions at every held-out part's times (file units)."""
    lin = linear_ode(split_.train, mean, std)
    out: dict[str, list[np.ndarray] | None] = {"last": [], "mean": [], "linear": []}
    for p in split_.test:
        n = len(p.t)
        out["last"].append(np.tile(p.start_y, (n, 1)))  # type: ignore[union-attr]
        out["mean"].append(np.tile(mean, (n, 1)))  # type: ignore[union-attr]
        if lin is not None:
            z0 = np.append((p.start_y - mean) / std, 1.0)
            mats = torch.linalg.matrix_exp(torch.as_tensor(lin)[None] * torch.as_tensor(
                p.t - p.start_t)[:, None, None])
            z = (mats @ torch.as_tensor(z0)).numpy()[:, :-1]
            out["linear"].append(z * std + mean)  # type: ignore[union-attr]
    if lin is None:
        out["linear"] = None
    return out
