"""Which points an encoder sees: random subsets, gaps, edges, and the windows cut around them.

Observations live on a shared time grid with a per-trajectory mask, so irregular sampling,
gaps and the observed part of an extrapolation task are all just masks.
"""

from __future__ import annotations

import math

import numpy as np


def random_subset(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Observe an irregular random subset of n points (at least two)."""
    k = max(2, int(round(n * fraction)))
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=min(k, n), replace=False)] = True
    return mask


def gap_mask(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Everything observed except one contiguous stretch inside the window."""
    length = min(max(1, int(round(n * fraction))), n - 2)
    start = int(rng.integers(1, n - length))
    mask = np.ones(n, dtype=bool)
    mask[start:start + length] = False
    return mask


def edge_mask(n: int, fraction: float, side: str) -> np.ndarray:
    """Observe the first (side='right': predict to the right) or last part of the window."""
    k = min(max(2, int(round(n * fraction))), n - 1)
    mask = np.zeros(n, dtype=bool)
    if side == "right":
        mask[:k] = True
    else:
        mask[n - k:] = True
    return mask


def anchored_windows(obs: np.ndarray, mask: np.ndarray, width: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each trajectory's observations into a window that starts at its first observation.

    Returns (values (N, width, D), mask (N, width), anchor (N,)): column j of row i is grid
    point first[i] + j (columns past the grid's end are unobserved), and anchor[i] is the grid
    index halfway between the first and last observation, where the latent state is placed.
    The encoder so never has to infer a state far from what it sees, and forward and backward
    predictions are integrated over the same horizons (anchored at the first observation,
    forward predictions ran across the whole window and then beyond it, and drifted).
    """
    n = mask.shape[1]
    first = np.asarray(mask, dtype=bool).argmax(axis=1)
    cols = first[:, None] + np.arange(width)[None, :]
    inside = cols < n
    cols = np.minimum(cols, n - 1)
    rows = np.arange(len(mask))[:, None]
    m = np.asarray(mask, dtype=bool)[rows, cols] & inside
    return np.where(m[..., None], obs[rows, cols], 0.0), m, first + _middle(m)


def partial_windows(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    share: float, min_length: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hide all but a random contiguous part of some training windows from the encoder.

    A `share` of the windows keep only a stretch of `min_length` to all of their length; the
    encoder input starts at the first observation it keeps, the latent state is placed in the
    middle of the kept observations, and the likelihood still scores the whole window, so the
    model learns to extrapolate both ways from what it sees. Returns (encoder values, encoder
    mask, anchor: the window column where the latent state sits).
    """
    n, width = mask.shape
    keep = np.ones_like(mask, dtype=bool)
    shortest = max(2, int(math.ceil(min_length * width)))
    for i in np.flatnonzero(rng.random(n) < share):
        length = int(rng.integers(min(shortest, width), width + 1))
        start = int(rng.integers(0, width - length + 1))
        part = np.zeros(width, dtype=bool)
        part[start:start + length] = True
        if (mask[i] & part).sum() >= 2:
            keep[i] = part
    seen = mask & keep
    first = seen.argmax(axis=1)
    cols = first[:, None] + np.arange(width)[None, :]
    inside = cols < width
    cols = np.minimum(cols, width - 1)
    rows = np.arange(n)[:, None]
    m = seen[rows, cols] & inside
    return np.where(m[..., None], x[rows, cols], 0.0), m, first + _middle(m)


def _middle(mask: np.ndarray) -> np.ndarray:
    """Column halfway between each row's first (column 0) and last observation."""
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    return last // 2
