"""Observations of a true trajectory and the random training windows drawn from them.

Irregular observation grids are handled by solving each batch once on the union of its
windows' relative time offsets and picking every window's own times out of that solution,
so uneven data costs one solver call per batch, not one per window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from odecli.dynamics import schema
from odecli.errors import ConfigError
from odecli.fields import to_plain
from odecli.paths import yaml_node


@dataclass
class Observations:
    """What training sees: times, (noisy) states and their indices in the full grid."""

    t: torch.Tensor     # (n,)
    y: torch.Tensor     # (n, dim)
    index: torch.Tensor  # (n,) long, positions in the system's grid
    uniform: bool


@dataclass
class Batch:
    """Windows starting at observed points: solve from y0 on t, compare picks with target."""

    y0: torch.Tensor        # (B, dim)
    t: torch.Tensor         # (U,) relative times, strictly increasing, t[0] == 0
    pick: torch.Tensor | None  # (T, B) indices into t, or None when every window uses all of t
    target: torch.Tensor    # (T, B, dim)
    t_start: torch.Tensor   # (B, 1) absolute start times, for time-dependent fields


def observe(t: torch.Tensor, y_true: torch.Tensor, cfg: Mapping[str, Any],
            generator: torch.Generator) -> Observations:
    """Keep a random subset of time points (the first always) and add Gaussian noise."""
    fraction, noise = check_data(cfg)
    n = len(t)
    if fraction < 1:
        keep = observed_count(n, fraction)
        rest = torch.randperm(n - 1, generator=generator)[: keep - 1] + 1
        index = torch.cat([torch.zeros(1, dtype=torch.long), rest.sort().values])
    else:
        index = torch.arange(n)
    y = y_true[index].clone()
    if noise > 0:
        y = y + noise * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    return Observations(t=t[index], y=y, index=index, uniform=fraction >= 1)


def check_data(cfg: Mapping[str, Any]) -> tuple[float, float]:
    """The `data` node's observe_fraction and noise_std, checked by its schema; a partial
    node ({"observe_fraction": 0.4}) takes the keys it lacks from configs/train.yaml."""
    node = {**yaml_node("train.yaml", "data"), **to_plain(cfg)}
    d = schema.DATA.check(node, "data")
    return d["observe_fraction"], d["noise_std"]


def observed_count(n: int, fraction: float) -> int:
    """How many of n time points `observe` keeps (at least two)."""
    return n if fraction >= 1 else max(2, int(round(fraction * n)))


def check_window(n_observed: int, batch_time: int, key: str = "batch_time") -> None:
    """A window needs batch_time observed points; say so before training starts."""
    if batch_time > n_observed:
        raise ConfigError(
            f"train.{key} ({batch_time}) is larger than the number of observed points "
            f"({n_observed}); lower train.{key} or raise system.data_size")


def check_windows(n_observed: int, opts: Mapping[str, Any]) -> None:
    """check_window for the training windows and, where there is a final phase, its own."""
    check_window(n_observed, opts["batch_time"])
    if opts["final_iters"]:
        check_window(n_observed, opts["final_batch_time"], "final_batch_time")


def start_weights(obs: Observations, sampling: str, batch_time: int) -> torch.Tensor | None:
    """The windows' start weights for `train.sampling` (None: uniform)."""
    if sampling == "arclength":
        return arclength_weights(obs, batch_time)
    if sampling == "edges":
        return edge_weights(len(obs.t), batch_time)
    return None


def arclength_weights(obs: Observations, batch_time: int) -> torch.Tensor:
    """Weight each window start by the path length the window covers.

    Sampling windows uniformly in time starves fast stretches of a trajectory (the cubic
    spiral spends 4% of its time on its outer ring, where every rollout starts); weighting
    by distance travelled gives each part of the path its share of training.
    """
    seg = (obs.y[1:] - obs.y[:-1]).norm(dim=-1).to(torch.float64).cpu()
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])
    lengths = cum[batch_time - 1:] - cum[: len(cum) - batch_time + 1]
    return lengths.clamp_min(1e-12 * float(lengths.max().clamp_min(1e-300)))


def edge_weights(n: int, batch_time: int) -> torch.Tensor:
    """Weight each window start as if starts ran past both ends of the span and were clamped
    back into it: the first and last starts weigh batch_time, the others 1.

    Uniform starts put the span's first and last observations in one window for every
    batch_time windows that hold a middle one, so a fast event at an edge (FitzHugh-Nagumo's
    down-stroke at the end of its cycle) is trained on least; with these weights every
    observation is in at least as many windows as a middle one.
    """
    weights = torch.ones(n - batch_time + 1, dtype=torch.float64)
    weights[0] = weights[-1] = float(batch_time)
    if len(weights) == 1:
        weights[0] = 1.0
    return weights


def draw_starts(n: int, batch_size: int | None, batch_time: int,
                generator: torch.Generator, weights: torch.Tensor | None = None
                ) -> torch.Tensor:
    """The windows' first indices among n observed points (`sample`'s draw, shared with the
    ensemble trainer, which gathers its members' windows together); batch_size None: every
    window once, in order (nothing drawn)."""
    if batch_size is None:
        return torch.arange(n - batch_time + 1)
    if weights is None:
        return torch.randint(0, n - batch_time + 1, (batch_size,), generator=generator)
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator)


def sample(obs: Observations, batch_size: int | None, batch_time: int,
           generator: torch.Generator, weights: torch.Tensor | None = None) -> Batch:
    """Draw batch_size windows of batch_time consecutive observed points (uniformly over
    start points, or with the given per-start weights)."""
    starts = draw_starts(len(obs.t), batch_size, batch_time, generator, weights)
    steps = torch.arange(batch_time)
    idx = starts.unsqueeze(0) + steps.unsqueeze(1)          # (T, B)
    starts_dev = starts.to(obs.t.device)
    idx_dev = idx.to(obs.t.device)
    target = obs.y[idx_dev]                                  # (T, B, dim)
    y0 = obs.y[starts_dev]
    t_start = obs.t[starts_dev].unsqueeze(-1)
    if obs.uniform:
        return Batch(y0=y0, t=obs.t[:batch_time] - obs.t[0], pick=None, target=target,
                     t_start=t_start)
    offsets = obs.t[idx_dev] - obs.t[starts_dev].unsqueeze(0)  # (T, B)
    key = torch.round(offsets * 1e9)
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    t_union = uniq / 1e9
    return Batch(y0=y0, t=t_union.to(obs.t.dtype), pick=inverse, target=target,
                 t_start=t_start)


def gather(pred: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Pick each window's own times out of a solution on the union grid: (T, B, dim)."""
    if batch.pick is None:
        return pred
    cols = torch.arange(pred.shape[1], device=pred.device).unsqueeze(0).expand_as(batch.pick)
    return pred[batch.pick.to(pred.device), cols]
