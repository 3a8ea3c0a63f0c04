"""Noisy 2-D spirals for `spiral-vae`, and the trivial predictors the model must beat."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from odecli.errors import ConfigError
from odecli.latent.masks import random_subset


@dataclass
class Spirals:
    t: np.ndarray  # (T,)
    truth: np.ndarray  # (N, T, 2)
    obs: np.ndarray  # (N, T, 2) noisy values (meaningful where mask)
    mask: np.ndarray  # (N, T)
    span: np.ndarray  # (N, 2) first and one-past-last index of the observed window
    train: np.ndarray
    val: np.ndarray  # picks the best iteration, so the test spirals stay unseen
    test: np.ndarray


def make_spirals(data: Mapping[str, Any], seed: int) -> Spirals:
    """Noisy 2-D Archimedean spirals turning either way, seen on an irregular window.

    Each spiral has its own direction, phase and growth; its observed span is a random window
    of the grid, sampled at a random subset of points. Points outside the span are the
    forward and backward extrapolation targets.
    """
    rng = np.random.default_rng(seed)
    n, n_points, t_max = data["n_spirals"], data["n_points"], data["t_max"]
    window, fraction, noise = data["window"], data["obs_fraction"], data["noise_std"]
    test_fraction = data["test_fraction"]
    t = np.linspace(0.0, t_max, n_points)
    direction = rng.choice([-1.0, 1.0], size=n)
    phase = rng.uniform(0, 2 * math.pi, size=n)
    r0 = rng.uniform(*data["radius_start"], size=n)
    r1 = rng.uniform(*data["radius_end"], size=n)
    radius = r0[:, None] + (r1 - r0)[:, None] * (t / t_max)[None, :]
    angle = direction[:, None] * t[None, :] + phase[:, None]
    truth = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    obs = truth + noise * rng.standard_normal(truth.shape)
    width = max(3, int(round(window * n_points)))
    starts = rng.integers(0, n_points - width + 1, size=n)
    mask = np.zeros((n, n_points), dtype=bool)
    for i, s in enumerate(starts):
        mask[i, s:s + width] = random_subset(width, fraction, rng)
    span = np.stack([starts, starts + width], axis=1)
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * data["val_fraction"])))
    if n - n_test - n_val < 1:
        raise ConfigError("data.val_fraction + data.test_fraction leave no training spirals")
    return Spirals(t=t, truth=truth, obs=obs, mask=mask, span=span,
                   train=np.arange(n - n_test - n_val),
                   val=np.arange(n - n_test - n_val, n - n_test), test=np.arange(n - n_test, n))


def spiral_baselines(data: Spirals, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Trivial predictors of the whole grid, for the extrapolation comparison.

    `hold`: the last observed (noisy) value carried forward and the first carried backward;
    `centre`: the spirals' common centre, the origin (the best constant for a full turn).
    """
    mask = data.mask[rows]
    obs = data.obs[rows]
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    k = np.arange(mask.shape[1])[None, :]
    i = np.arange(len(rows))
    hold = np.where((k <= first[:, None])[..., None], obs[i, first][:, None],
                    obs[i, last][:, None])
    return {"hold": hold, "centre": np.zeros_like(obs)}
