"""Figures of `odecli classify`: training curves, confusion matrix, speed/accuracy dial."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from odecli.engine.figures import pyplot, save


def _col(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) if isinstance(r.get(key), (int, float)) else math.nan for r in rows]


def curves(path: Path, history: Sequence[Mapping[str, Any]], title: str,
           notice: str | None) -> None:
    """Loss (training batch, validation) and accuracy (training batch, validation)."""
    plt = pyplot()
    its = [r["iteration"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(its, _col(history, "train_loss"), marker="o", ms=3, label="training batch")
    left.plot(its, _col(history, "val_loss"), marker="o", ms=3, label="validation")
    left.set_yscale("log")
    left.set_title("cross-entropy", fontsize=9)
    right.plot(its, [100 * v for v in _col(history, "train_accuracy")], marker="o", ms=3,
               label="training batch")
    right.plot(its, [100 * v for v in _col(history, "val_accuracy")], marker="o", ms=3,
               label="validation")
    right.set_title("accuracy (%)", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path, notice)


def tradeoff(path: Path, rows: Sequence[Mapping[str, Any]], resnet: Mapping[str, Any] | None,
             title: str, notice: str | None) -> None:
    """Test accuracy against NFE per forward pass (left) and test-set seconds (right)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows[1:]:
        groups.setdefault(r["method"] if r["kind"] == "fixed" else
                          f"{r['method']} (rtol sweep)", []).append(r)
    for ax, key, label in ((axes[0], "nfe_per_forward", "NFE per forward pass"),
                           (axes[1], "seconds", "test-set inference seconds")):
        for name, rs in groups.items():
            ok = [r for r in rs if not math.isnan(r["accuracy"])]
            ax.plot([r[key] for r in ok], [100 * r["accuracy"] for r in ok], marker="o",
                    ms=4, label=f"ODE-Net, {name}")
            for r in ok:
                tag = f"{r['rtol']:g}" if r["kind"] == "adaptive" else f"k={r['steps']}"
                ax.annotate(tag, (r[key], 100 * r["accuracy"]), fontsize=6,
                            xytext=(2, 2), textcoords="offset points")
        ref = rows[0]
        ax.plot([ref[key]], [100 * ref["accuracy"]], marker="*", ms=12, color="k",
                ls="none", label=f"ODE-Net, reference: the run's solver ({ref['method']})")
        if resnet is not None:
            ax.plot([resnet[key]], [100 * resnet["accuracy"]], marker="s", ms=9,
                    color="tab:red", ls="none",
                    label=f"ResNet ({resnet.get('blocks')} blocks)")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        low = min([100 * r["accuracy"] for r in rows if not math.isnan(r["accuracy"])]
                  + [100.0])
        ax.set_ylim(max(low - 2, 0), 100.5)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title}: speed/accuracy at inference", fontsize=10)
    fig.tight_layout()
    save(fig, path, notice)
