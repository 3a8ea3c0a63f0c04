"""Figures for dynamics runs: phase portrait, time series, vector field, training GIF.

matplotlib is imported inside the functions (Agg backend) so `odecli --help` stays fast and
runs work without a display.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from odecli.engine.figures import pyplot, save

TRUE_STYLE = {"color": "tab:green", "lw": 2.0, "label": "true"}
LEARNED_STYLE = {"color": "tab:blue", "lw": 1.6, "ls": "--", "label": "learned"}


def _split_mark(ax: Any, t_split: float | None) -> None:
    if t_split is not None:
        ax.axvline(t_split, color="grey", lw=0.8, ls=":")


def label(labels: Sequence[str] | None, i: int) -> str:
    """Axis label of state i: its variable name, or $y_{i+1}$."""
    return labels[i] if labels else f"$y_{i + 1}$"


def phase(path: Path, y_true: np.ndarray, y_pred: np.ndarray | None, title: str,
          obs: np.ndarray | None = None, n_train: int | None = None,
          labels: Sequence[str] | None = None) -> None:
    """Phase portrait: true solid, learned dashed, observations as dots."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot(y_true[:, 0], y_true[:, 1], **TRUE_STYLE)
    if y_pred is not None:
        ax.plot(y_pred[:, 0], y_pred[:, 1], **LEARNED_STYLE)
    if obs is not None:
        ax.scatter(obs[:, 0], obs[:, 1], s=6, color="tab:orange", alpha=0.6, label="observed",
                   zorder=3)
    if n_train is not None and n_train < len(y_true):
        ax.plot(*y_true[n_train - 1], "k|", ms=10, label="end of training span")
    ax.set_xlabel(label(labels, 0))
    ax.set_ylabel(label(labels, 1))
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    save(fig, path)


def time_series(path: Path, t: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray | None,
                title: str, t_obs: np.ndarray | None = None, obs: np.ndarray | None = None,
                t_split: float | None = None, labels: Sequence[str] | None = None) -> None:
    """Each state component against t; the dotted line marks the end of the training span."""
    plt = pyplot()
    dim = y_true.shape[1]
    fig, axes = plt.subplots(dim, 1, figsize=(7, 2.2 * dim), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, y_true[:, i], **TRUE_STYLE)
        if y_pred is not None:
            ax.plot(t, y_pred[:, i], **LEARNED_STYLE)
        if obs is not None and t_obs is not None:
            ax.scatter(t_obs, obs[:, i], s=5, color="tab:orange", alpha=0.6, label="observed")
        _split_mark(ax, t_split)
        ax.set_ylabel(label(labels, i))
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("t")
    save(fig, path)


def vector_field(path: Path, field: Callable[[np.ndarray, float], np.ndarray],
                 y_true: np.ndarray, title: str, t: float = 0.0, grid: int = 25,
                 labels: Sequence[str] | None = None, notice: str | None = None) -> None:
    """Streamlines of the learned field over the true trajectory."""
    plt = pyplot()
    lo, hi = y_true.min(0), y_true.max(0)
    pad = 0.15 * np.maximum(hi - lo, 1e-3)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], grid)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], grid)
    X, Y = np.meshgrid(xs, ys)
    pts = np.stack([X.ravel(), Y.ravel()], axis=-1)
    dY = field(pts, t)
    U, V = dY[:, 0].reshape(X.shape), dY[:, 1].reshape(X.shape)
    speed = np.hypot(U, V)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.streamplot(xs, ys, U, V, color=speed, cmap="Blues", density=1.2, linewidth=0.8)
    ax.plot(y_true[:, 0], y_true[:, 1], **TRUE_STYLE)
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_xlabel(label(labels, 0))
    ax.set_ylabel(label(labels, 1))
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    save(fig, path, notice)


def training_gif(path: Path, y_true: np.ndarray, frames: Sequence[tuple[int, np.ndarray]],
                 title: str, fps: int = 6) -> None:
    """Phase portraits in iteration order, written with matplotlib's Pillow writer."""
    plt = pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax = plt.subplots(figsize=(4.5, 4.3))
    ax.plot(y_true[:, 0], y_true[:, 1], **TRUE_STYLE)
    (line,) = ax.plot([], [], **LEARNED_STYLE)
    lo, hi = y_true.min(0), y_true.max(0)
    pad = 0.2 * np.maximum(hi - lo, 1e-3)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.legend(loc="upper right", fontsize=8)
    label = ax.set_title(title)

    def draw(i: int) -> tuple[Any, ...]:
        it, pred = frames[i]
        line.set_data(pred[:, 0], pred[:, 1])
        label.set_text(f"{title}: iteration {it}")
        return line, label

    anim = FuncAnimation(fig, draw, frames=len(frames), blit=False)
    tmp = Path(path).with_name(f".{Path(path).stem}.tmp.gif")
    anim.save(tmp, writer=PillowWriter(fps=fps))
    tmp.replace(path)
    plt.close(fig)


RECOVERED_STYLE = {"color": "tab:red", "lw": 1.4, "label": "recovered equations (SINDy)"}
REFITTED_STYLE = {"color": "black", "lw": 1.0, "ls": ":", "label": "refitted to the data"}


def recovered(path: Path, variables: Sequence[str], t: np.ndarray, y_true: np.ndarray,
              y_rec: np.ndarray | None, y_net: np.ndarray | None, t_obs: np.ndarray,
              obs: np.ndarray, n_train: int, title: str,
              y_refit: np.ndarray | None = None) -> None:
    """`odecli recover` on a simulated system: the recovered equations' trajectory (and
    the refitted one's) against the data, the truth and the network, from the true initial
    state; below, each one's distance from the truth on a log scale, where curves that
    overlap in the panels above come apart."""
    plt = pyplot()
    dim = len(variables)
    fig, axes = plt.subplots(dim + 1, 1, figsize=(7, 2.2 * (dim + 1)), sharex=True,
                             squeeze=False)
    split = float(t[n_train - 1]) if len(t) > n_train else None
    for i, ax in enumerate(axes[:dim, 0]):
        ax.scatter(t_obs, obs[:, i], s=5, color="tab:orange", alpha=0.6, label="data")
        ax.plot(t, y_true[:, i], **{**TRUE_STYLE, "lw": 1.2})
        if y_net is not None:
            ax.plot(t, y_net[:, i], **{**LEARNED_STYLE, "label": "network"})
        if y_rec is not None:
            ax.plot(t, y_rec[:, i], **RECOVERED_STYLE)
        if y_refit is not None:
            ax.plot(t, y_refit[:, i], **REFITTED_STYLE)
        _split_mark(ax, split)
        ax.set_ylabel(variables[i])
    dist = axes[dim, 0]
    for y, style in ((y_net, {**LEARNED_STYLE, "label": "network"}), (y_rec, RECOVERED_STYLE),
                     (y_refit, REFITTED_STYLE)):
        if y is not None:
            # from the second time on: every path starts at the truth (distance 0)
            dist.plot(t[1:], np.linalg.norm(y - y_true, axis=-1)[1:], **style)
    dist.set_yscale("log")
    dist.set_ylabel("distance\nfrom the truth")
    if split is not None:
        dist.axvline(split, color="grey", lw=0.8, ls=":", label="end of the data")
    axes[0, 0].set_title(title if y_rec is not None else f"{title} (recovered: diverged)")
    handles = {}
    for ax in axes[:, 0]:  # one legend for every panel, beside the figure
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(0.99, 0.97),
               fontsize=8)
    axes[-1, 0].set_xlabel("t")
    save(fig, path)


def recovered_parts(path: Path, variables: Sequence[str], parts: Sequence[Any],
                    curves: Sequence[Any], y_rec: Sequence[np.ndarray | None],
                    y_net: Sequence[np.ndarray],
                    n_train: int, title: str, notice: str | None = None,
                    most: int = 6,
                    y_refit: Sequence[np.ndarray | None] | None = None) -> None:
    """`odecli recover` on a data file: per trajectory part (training solid markers,
    held-out hollow), the data, and the network and the recovered equations on the fine
    grids of `curves` (one per part)."""
    plt = pyplot()
    dim = len(variables)
    fig, axes = plt.subplots(dim, 1, figsize=(7, 2.2 * dim), sharex=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shown = list(range(min(len(parts), most)))
    for k in shown:
        p, c = parts[k], colors[k % len(colors)]
        held = k >= n_train
        for i, ax in enumerate(axes[:, 0]):
            ax.scatter(p.t, p.y[:, i], s=10, color=c, facecolors="none" if held else c,
                       label=f"data {p.name}{' (held out)' if held else ''}" if i == 0 else None)
            ax.plot(curves[k].t, y_net[k][:, i], color=c, lw=1.0, ls="--",
                    label="network" if i == 0 and k == 0 else None)
            if y_rec[k] is not None:
                ax.plot(curves[k].t, y_rec[k][:, i], color=c, lw=1.6,
                        label="recovered equations" if i == 0 and k == 0 else None)
            if y_refit is not None and y_refit[k] is not None:
                ax.plot(curves[k].t, y_refit[k][:, i],
                        **{**REFITTED_STYLE, "label": REFITTED_STYLE["label"]
                           if i == 0 and k == 0 else None})
    for i, ax in enumerate(axes[:, 0]):
        ax.set_ylabel(variables[i])
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    axes[-1, 0].set_xlabel("t")
    save(fig, path, notice)
