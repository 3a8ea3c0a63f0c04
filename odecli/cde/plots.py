"""Figures of `odecli cde`: training curves and the test confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from odecli.engine.figures import pyplot, save


def _col(rows: Sequence[Mapping[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [scale * float(r[key]) if isinstance(r.get(key), (int, float)) else math.nan
            for r in rows]


def curves(path: Path, history: Sequence[Mapping[str, Any]], title: str,
           notice: str | None) -> None:
    """Loss and accuracy of the training batches and of the validation series."""
    plt = pyplot()
    its = [r["iteration"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, scale, name in ((left, "loss", 1.0, "cross-entropy"),
                                 (right, "accuracy", 100.0, "accuracy (%)")):
        ax.plot(its, _col(history, f"train_{key}", scale), marker="o", ms=3,
                label="training batch")
        ax.plot(its, _col(history, f"val_{key}", scale), marker="o", ms=3, label="validation")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_yscale("log")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path, notice)


def confusion(path: Path, matrix: np.ndarray, classes: Sequence[str], title: str,
              notice: str | None) -> None:
    """Test-set confusion matrix: rows are the true class, columns the prediction."""
    plt = pyplot()
    n = matrix.shape[0]
    size = min(4.0 + 0.25 * n, 12.0)
    fig, ax = plt.subplots(figsize=(size + 0.4, size))
    ax.imshow(matrix, cmap="Blues")
    top = matrix.max() or 1
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > top / 2 else "black")
        labels = [c[:12] for c in classes]
        ax.set_xticks(range(n), labels, rotation=90 if max(map(len, labels)) > 3 else 0,
                      fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{title}\ntest accuracy {100 * acc:.2f}%", fontsize=9)
    fig.tight_layout()
    save(fig, path, notice)
