"""Figure plumbing every family shares: headless pyplot, atomic saves, the loss figure.

matplotlib is imported inside the functions (Agg backend) so `odecli --help` stays fast and
runs work without a display.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from odecli.engine.rundir import TMP
from odecli.errors import WriteError


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, notice: str | None = None) -> None:
    """Save via a temp name and rename, so a crash never leaves a truncated PNG; a data
    credit, when given, goes in the footer."""
    if notice:
        fig.text(0.5, 0.005, notice, ha="center", va="bottom", fontsize=7, color="0.3")
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP}")  # a killed run's is removed on resume
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or None)
        tmp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise WriteError.of(path, exc) from None
        raise
    finally:
        pyplot().close(fig)


def _numbers(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(v) if isinstance(v, (int, float)) else math.nan
            for v in (r.get(key) for r in rows)]


def loss_figure(path: Path, rows: Sequence[Mapping[str, Any]], title: str,
                evaluations: Sequence[tuple[str, str]], notice: str | None = None) -> None:
    """Training loss (left) and the family's evaluation columns (right) against iteration.

    The loss axis is logarithmic only when every loss is positive (a negative ELBO can go
    below zero); markers keep a one-point series visible.
    """
    plt = pyplot()
    its = [r["iteration"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss = _numbers(rows, "train_loss")
    left.plot(its, loss, color="tab:green", marker="o", ms=3)
    if all(v > 0 for v in loss if not math.isnan(v)) and any(not math.isnan(v) for v in loss):
        left.set_yscale("log")
    left.set_title("training loss (batch)", fontsize=9)
    for key, label in evaluations:
        values = _numbers(rows, key)
        if any(not math.isnan(v) for v in values):
            right.plot(its, values, label=label, marker="o", ms=3)
    right.set_yscale("log")
    right.set_title("evaluation", fontsize=9)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path, notice)


def confusion(path: Path, matrix: Any, title: str, notice: str | None,
              classes: Sequence[str] | None = None) -> None:
    """Test-set confusion matrix of any classifier: rows are the true class, columns the
    prediction; `classes` names them (their indices when None)."""
    import numpy as np

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
        labels = [str(c)[:12] for c in (classes if classes is not None else range(n))]
        ax.set_xticks(range(n), labels, rotation=90 if max(map(len, labels)) > 3 else 0,
                      fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{title}\ntest accuracy {100 * acc:.2f}%", fontsize=9)
    fig.tight_layout()
    save(fig, path, notice)
