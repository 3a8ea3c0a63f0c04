"""Figures of the latent-ODE VAE commands (spiral and ECG); the engine draws the loss.

matplotlib is imported inside each function with the Agg backend, so importing this module
costs nothing at CLI start-up and works on machines without a display. Colours follow the
seed: real data blue, sampled/noisy input orange, model output green.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from odecli.engine.figures import pyplot, save

REAL, SAMPLED, MODEL = "tab:blue", "tab:orange", "tab:green"
_BASELINE_STYLES = ({"color": "0.45", "ls": "--"}, {"color": "tab:red", "ls": ":"})


def spiral_figure(path: Path, t: np.ndarray, truth: np.ndarray, obs: np.ndarray,
                  mask: np.ndarray, span: np.ndarray, pred: np.ndarray) -> None:
    """One panel per spiral: true path, noisy observations, reconstruction, extrapolations."""
    plt = pyplot()
    n = len(truth)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        a, b = int(span[i, 0]), int(span[i, 1])
        ax.plot(truth[i, :, 0], truth[i, :, 1], color=REAL, lw=1, alpha=0.6, label="true")
        ax.plot(pred[i, a:b, 0], pred[i, a:b, 1], color=MODEL, lw=2, label="reconstruction")
        ax.plot(pred[i, b - 1:, 0], pred[i, b - 1:, 1], color=MODEL, lw=1.5, ls="--",
                label="extrapolated forward")
        ax.plot(pred[i, :a + 1, 0], pred[i, :a + 1, 1], color="tab:purple", lw=1.5, ls=":",
                label="extrapolated backward")
        m = mask[i].astype(bool)
        ax.scatter(obs[i, m, 0], obs[i, m, 1], s=10, color=SAMPLED, zorder=3,
                   label="noisy observations")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"held-out spiral {i + 1}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save(fig, path)


def ecg_task_figure(path: Path, title: str, t: np.ndarray, real: np.ndarray,
                    inputs: np.ndarray, mask: np.ndarray, pred: np.ndarray,
                    baselines: Mapping[str, np.ndarray], notice: str) -> None:
    """Rows of held-out beats; time space (x over t) left, phase space (x, x') right.

    Arrays are in physical units (mV, mV/s) with shape (beats, points, 2). The data licence
    notice is printed under every figure, as ODC-By requires.
    """
    plt = pyplot()
    n = len(real)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n + 0.8), squeeze=False)
    ms = 1000.0 * np.asarray(t)
    for i in range(n):
        m = np.asarray(mask[i], dtype=bool)
        left, right = axes[i]
        left.plot(ms, real[i, :, 0], color=REAL, lw=1.5, label="real")
        left.scatter(ms[m], inputs[i, m, 0], s=9, color=SAMPLED, zorder=3, label="observed")
        left.plot(ms, pred[i, :, 0], color=MODEL, lw=1.5, label="model")
        right.plot(real[i, :, 0], real[i, :, 1], color=REAL, lw=1.2)
        right.scatter(inputs[i, m, 0], inputs[i, m, 1], s=9, color=SAMPLED, zorder=3)
        right.plot(pred[i, :, 0], pred[i, :, 1], color=MODEL, lw=1.2)
        for (label, values), style in zip(baselines.items(), _BASELINE_STYLES, strict=False):
            left.plot(ms, values[i, :, 0], lw=1, label=label, **style)
            right.plot(values[i, :, 0], values[i, :, 1], lw=1, **style)
        left.set_ylabel("x (mV)")
        right.set_ylabel("dx/dt (mV/s)")
        left.set_title(f"held-out beat {i + 1}: time space", fontsize=9)
        right.set_title(f"held-out beat {i + 1}: phase space", fontsize=9)
    axes[-1, 0].set_xlabel("time from R-peak (ms)")
    axes[-1, 1].set_xlabel("x (mV)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    save(fig, path, notice)
