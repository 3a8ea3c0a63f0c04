"""The 2-D toy densities of FFJORD (Grathwohl et al. 2019, `lib/toy_data.py`), their true
log-densities where closed-form, and the baselines a flow must beat on the same test set.

The generators follow FFJORD's definitions (scale, noise, offsets) but draw from one seeded
numpy Generator, and two moons / circles are written out here instead of calling
scikit-learn, so the train/validation/test samples are fixed by `seed` alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Generator = Callable[[np.random.Generator, int], np.ndarray]

# 8 gaussians: centres 4 * (unit directions), std 0.5, everything divided by 1.414.
_DIRS = [(1, 0), (-1, 0), (0, 1), (0, -1)] + [(a / math.sqrt(2), b / math.sqrt(2))
                                               for a in (1, -1) for b in (1, -1)]
GAUSS_CENTRES = np.array(_DIRS) * 4.0 / 1.414
GAUSS_STD = 0.5 / 1.414
CHECKER_AREA = 32.0  # 8 squares of side 2


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    idx = rng.integers(0, 8, size=n)
    return GAUSS_CENTRES[idx] + rng.standard_normal((n, 2)) * GAUSS_STD


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    x1 = rng.random(n) * 4 - 2
    x2_ = rng.random(n) - rng.integers(0, 2, n) * 2
    x2 = x2_ + (np.floor(x1) % 2)
    return np.stack([x1, x2], 1) * 2


def two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    h = n // 2
    r = np.sqrt(rng.random((h, 1))) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(r) * r + rng.random((h, 1)) * 0.5
    d1y = np.sin(r) * r + rng.random((h, 1)) * 0.5
    x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
    x = x + rng.standard_normal(x.shape) * 0.1
    return _top_up(x, rng, n, two_spirals)


def moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """scikit-learn's make_moons(noise=0.1), then FFJORD's * 2 + (-1, -0.2)."""
    n_out = n // 2
    n_in = n - n_out
    a, b = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.vstack([np.stack([np.cos(a), np.sin(a)], 1),
                   np.stack([1 - np.cos(b), 1 - np.sin(b) - 0.5], 1)])
    x = x + rng.standard_normal(x.shape) * 0.1
    return rng.permutation(x) * 2 + np.array([-1, -0.2])


def circles(rng: np.random.Generator, n: int) -> np.ndarray:
    """scikit-learn's make_circles(factor=0.5, noise=0.08), then FFJORD's * 3."""
    n_out = n // 2
    n_in = n - n_out
    a = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    b = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.vstack([np.stack([np.cos(a), np.sin(a)], 1),
                   0.5 * np.stack([np.cos(b), np.sin(b)], 1)])
    x = x + rng.standard_normal(x.shape) * 0.08
    return rng.permutation(x) * 3


def rings(rng: np.random.Generator, n: int) -> np.ndarray:
    q = n // 4
    sizes = [n - 3 * q, q, q, q]  # radius 0.25, 0.5, 0.75, 1 (times 3)
    parts = []
    for size, radius in zip(sizes, (0.25, 0.5, 0.75, 1.0), strict=True):
        a = np.linspace(0, 2 * np.pi, size, endpoint=False)
        parts.append(np.stack([np.cos(a), np.sin(a)], 1) * radius)
    x = rng.permutation(np.vstack(parts)) * 3.0
    return x + rng.normal(scale=0.08, size=x.shape)


def pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    k, per = 5, n // 5
    rads = np.linspace(0, 2 * np.pi, k, endpoint=False)
    feats = rng.standard_normal((k * per, 2)) * np.array([0.3, 0.1])
    feats[:, 0] += 1.0
    labels = np.repeat(np.arange(k), per)
    angles = rads[labels] + 0.25 * np.exp(feats[:, 0])
    rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
    rot = np.reshape(rot.T, (-1, 2, 2))
    x = 2 * rng.permutation(np.einsum("ti,tij->tj", feats, rot))
    return _top_up(x, rng, n, pinwheel)


def _top_up(x: np.ndarray, rng: np.random.Generator, n: int, gen: Generator) -> np.ndarray:
    """Generators that draw in equal groups may return a few points short of n."""
    if len(x) >= n:
        return x[:n]
    return np.vstack([x, gen(rng, max(n - len(x), 10))[: n - len(x)]])


GENERATORS: dict[str, Generator] = {
    "8gaussians": eight_gaussians, "checkerboard": checkerboard, "2spirals": two_spirals,
    "moons": moons, "circles": circles, "pinwheel": pinwheel, "rings": rings,
}


def log_density_8gaussians(x: np.ndarray) -> np.ndarray:
    """log of the equal-weight mixture of 8 isotropic Gaussians the generator draws from."""
    d2 = ((x[:, None, :] - GAUSS_CENTRES[None]) ** 2).sum(-1)
    comp = -d2 / (2 * GAUSS_STD**2) - math.log(2 * math.pi * GAUSS_STD**2)
    m = comp.max(1, keepdims=True)
    return (m + np.log(np.exp(comp - m).mean(1, keepdims=True)))[:, 0]


def log_density_checkerboard(x: np.ndarray) -> np.ndarray:
    """Uniform on the 8 squares: log(1/32) inside, -inf outside."""
    u = x / 2
    inside = (np.abs(u[:, 0]) <= 2) & (np.abs(u[:, 1]) <= 2) & (
        (np.floor(u[:, 0]) + np.floor(u[:, 1])) % 2 == 0)
    return np.where(inside, -math.log(CHECKER_AREA), -np.inf)


TRUE_LOG_DENSITY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "8gaussians": log_density_8gaussians, "checkerboard": log_density_checkerboard}


@dataclass
class ToyData:
    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_data(data: dict[str, Any], seed: int) -> ToyData:
    """Fixed train/validation/test samples of one density, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    gen = GENERATORS[data["name"]]
    parts = [gen(rng, data[k]).astype(np.float64) for k in ("n_train", "n_val", "n_test")]
    return ToyData(data["name"], *parts)


def true_nll(name: str, x: np.ndarray) -> float | None:
    """Mean negative log-likelihood of x under the true density, None where not closed-form."""
    f = TRUE_LOG_DENSITY.get(name)
    return None if f is None else float(-f(x).mean())


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Baseline: one full-covariance Gaussian fitted to the training sample."""
    mu = train.mean(0)
    cov = np.cov(train.T)
    diff = test - mu
    sol = np.linalg.solve(cov, diff.T).T
    _, logdet = np.linalg.slogdet(cov)
    return float(0.5 * ((diff * sol).sum(1) + logdet + 2 * math.log(2 * math.pi)).mean())


def kde_log_density(train: np.ndarray, x: np.ndarray, bandwidths: float | list[float],
                    chunk: int = 512) -> np.ndarray:
    """Isotropic Gaussian kernel density estimate of the training sample at x; with a list
    of bandwidths, one row per bandwidth (the distances are computed once)."""
    hs = [bandwidths] if isinstance(bandwidths, (int, float)) else list(bandwidths)
    tr = torch.as_tensor(train, dtype=torch.float64)
    out: list[list[torch.Tensor]] = [[] for _ in hs]
    for i in range(0, len(x), chunk):
        q = torch.as_tensor(x[i:i + chunk], dtype=torch.float64)
        d2 = torch.cdist(q, tr).pow_(2)
        for k, h in enumerate(hs):
            const = math.log(len(train)) + math.log(2 * math.pi * h**2)
            out[k].append(torch.logsumexp(d2 / (-2 * h**2), 1) - const)
    rows = np.stack([torch.cat(o).numpy() for o in out])
    return rows[0] if isinstance(bandwidths, (int, float)) else rows


def kde_nll(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Baseline: Gaussian KDE whose bandwidth (a grid around Scott's rule) is chosen on the
    validation sample; returns (test NLL, bandwidth)."""
    scott = float(train.std(0).mean()) * len(train) ** (-1 / 6)
    grid = [scott * f for f in (0.125, 0.177, 0.25, 0.35, 0.5, 0.71, 1.0, 1.41, 2.0)]
    scores = -kde_log_density(train, val, grid).mean(1)
    best = grid[int(np.argmin(scores))]
    return float(-kde_log_density(train, test, best).mean()), best
