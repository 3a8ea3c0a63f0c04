"""Figures of `odecli cde`: training curves and the test confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
