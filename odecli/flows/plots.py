"""Figures of a CNF run: true samples, model density, model samples; the flow over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odecli.engine.figures import pyplot, save


def _scatter(ax, pts: np.ndarray, extent: float, title: str) -> None:  # noqa: ANN001
    ax.hist2d(pts[:, 0], pts[:, 1], bins=120, range=[[-extent, extent], [-extent, extent]],
              cmap="viridis")
    _frame(ax, extent, title)


def _frame(ax, extent: float, title: str) -> None:  # noqa: ANN001
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def density_figure(path: Path, true_pts: np.ndarray, density: np.ndarray,
                   model_pts: np.ndarray, extent: float, title: str) -> None:
    """Three panels: test samples, the model's density on a grid, model samples."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    _scatter(axes[0], true_pts, extent, "true samples (test)")
    axes[1].imshow(density, origin="lower", extent=(-extent, extent, -extent, extent),
                   cmap="viridis")
    _frame(axes[1], extent, "model density")
    _scatter(axes[2], model_pts, extent, "model samples")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)


def flow_strip(path: Path, frames: np.ndarray, times: np.ndarray, extent: float,
               name: str) -> None:
    """Base samples (t=T) carried to the data (t=0), one panel per time."""
    plt = pyplot()
    k = len(frames)
    fig, axes = plt.subplots(1, k, figsize=(2.2 * k, 2.5))
    for ax, pts, t in zip(np.atleast_1d(axes), frames, times, strict=True):
        _scatter(ax, pts, extent, f"t = {t:.2f}")
    fig.suptitle(f"{name}: flow from the base N(0, I) (t=T) to the data (t=0)", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def flow_gif(path: Path, frames: np.ndarray, times: np.ndarray, extent: float, name: str,
             fps: int = 8) -> None:
    """The same flow as an animation (matplotlib's Pillow writer), held on the data."""
    plt = pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax = plt.subplots(figsize=(4, 4))
    order = list(range(len(frames))) + [len(frames) - 1] * fps

    def draw(i: int) -> tuple:
        ax.clear()
        _scatter(ax, frames[order[i]], extent, f"{name}: t = {times[order[i]]:.2f}")
        return ()

    anim = FuncAnimation(fig, draw, frames=len(order), blit=False)
    tmp = Path(path).with_name(f".{Path(path).stem}.tmp.gif")
    anim.save(tmp, writer=PillowWriter(fps=fps))
    tmp.replace(path)
    plt.close(fig)
