"""Figures for any number of variables: data files, pairwise phase portraits, UDE parts.

A time panel per variable (observations as dots joined where consecutive, so a missing
observation is a gap; held-out parts shaded or marked), a grid of pairwise phase portraits
beyond two variables (with a 3-D view for three), the vector field only in 2-D, and the
known and learned parts of a known-physics model. matplotlib is imported inside the
functions (Agg backend).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from odecli.engine.figures import pyplot, save

MAX_PANELS = 12        # variables drawn in a time figure
MAX_GRID = 6           # variables in a pairwise phase grid
MAX_TRAJECTORIES = 8   # trajectories drawn per figure
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
          "tab:pink", "tab:olive")


def phase_grid(path: Path, variables: Sequence[str], truths: Sequence[np.ndarray] | None,
               preds: Sequence[np.ndarray | None] | None, obs: Sequence[np.ndarray] | None,
               title: str, truth_label: str = "observed", notice: str | None = None) -> None:
    """Pairwise phase portraits (variable j against i, i < j) of every trajectory; for three
    variables a 3-D view beside them."""
    plt = pyplot()
    d = min(len(variables), MAX_GRID)
    pairs = [(i, j) for j in range(d) for i in range(j)]
    n = d - 1
    three = len(variables) == 3
    fig = plt.figure(figsize=(3.0 * (n + (1 if three else 0)), 2.8 * n))
    gs = fig.add_gridspec(n, n + (1 if three else 0))
    for i, j in pairs:
        ax = fig.add_subplot(gs[j - 1, i])
        for k in range(min(len(truths or obs or []), MAX_TRAJECTORIES)):
            c = COLORS[k % len(COLORS)]
            if truths is not None:
                ax.plot(truths[k][:, i], truths[k][:, j], color=c, lw=1.2, alpha=0.8)
            if obs is not None:
                ax.scatter(obs[k][:, i], obs[k][:, j], s=4, color=c, alpha=0.5)
            if preds is not None and preds[k] is not None:
                ax.plot(preds[k][:, i], preds[k][:, j], color="k", lw=1.0, ls="--")
        if j == n:
            ax.set_xlabel(variables[i])
        if i == 0:
            ax.set_ylabel(variables[j])
    if three:
        ax3 = fig.add_subplot(gs[:, n], projection="3d")
        for k in range(min(len(truths or obs or []), MAX_TRAJECTORIES)):
            c = COLORS[k % len(COLORS)]
            src = truths[k] if truths is not None else obs[k]  # type: ignore[index]
            ax3.plot(src[:, 0], src[:, 1], src[:, 2], color=c, lw=1.0)
            if preds is not None and preds[k] is not None:
                p = preds[k]
                ax3.plot(p[:, 0], p[:, 1], p[:, 2], color="k", lw=0.9, ls="--")
        ax3.set_xlabel(variables[0])
        ax3.set_ylabel(variables[1])
        ax3.set_zlabel(variables[2])
    shown = "" if len(variables) <= MAX_GRID else f" (first {MAX_GRID} variables)"
    handles = [plt.Line2D([], [], color=COLORS[0], lw=1.2, label=truth_label),
               plt.Line2D([], [], color="k", ls="--", label="learned")]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle(title + shown, fontsize=10)
    save(fig, path, notice)


def data_figures(run_dir: Path, table: Any, split: Any, train: list[np.ndarray] | None,
                 held: list[np.ndarray] | None, title: str, notice: str | None,
                 field: Callable[[np.ndarray, float], np.ndarray]) -> None:
    """time.png, phase.png and (2-D only) vector_field.png of a data file's run; `train` and
    `held` are the learned rollouts of each split part on an even grid from its start."""
    variables = table.variables
    _time_panels(run_dir / "time.png", table, split, train, held, title, notice)
    trs = table.trajectories[:MAX_TRAJECTORIES]
    obs = [tr.y for tr in trs]
    preds = _whole(trs, split, train, held)
    if len(variables) == 2:
        _phase_2d(run_dir / "phase.png", variables, obs, preds, title, notice)
        from odecli.dynamics import plots

        y = np.concatenate([o[~np.isnan(o).any(1)] for o in obs])
        plots.vector_field(run_dir / "vector_field.png", field, y,
                           f"{title}: learned field ({table.time} as time)",
                           t=float(trs[0].t[0]), labels=variables, notice=notice)
    elif len(variables) > 2:
        phase_grid(run_dir / "phase.png", variables, None, preds, obs, title, notice=notice)


def _whole(trs: Sequence[Any], split: Any, train: list[np.ndarray] | None,
           held: list[np.ndarray] | None) -> list[np.ndarray | None]:
    """Each drawn trajectory's learned rollout, training and held-out parts joined."""
    out: list[np.ndarray | None] = []
    for tr in trs:
        pieces = []
        for parts, preds in ((split.train, train), (split.test, held)):
            for p, pr in zip(parts, preds or [], strict=False):
                if p.name == tr.name:
                    pieces.append(pr)
        out.append(np.concatenate(pieces) if pieces else None)
    return out


def _time_panels(path: Path, table: Any, split: Any, train: list[np.ndarray] | None,
                 held: list[np.ndarray] | None, title: str, notice: str | None) -> None:
    plt = pyplot()
    variables = table.variables[:MAX_PANELS]
    fig, axes = plt.subplots(len(variables), 1, figsize=(7.5, 2.1 * len(variables) + 0.6),
                             sharex=True, squeeze=False)
    held_out = {p.name for p in split.test} if split.kind == "trajectories" else set()
    colors = {tr.name: COLORS[k % len(COLORS)]
              for k, tr in enumerate(table.trajectories[:MAX_TRAJECTORIES])}
    for j, ax in enumerate(axes[:, 0]):
        for tr in table.trajectories[:MAX_TRAJECTORIES]:
            c = colors[tr.name]
            mark = "x" if tr.name in held_out else "o"
            # a NaN breaks the line: a missing observation is a gap
            ax.plot(tr.t, tr.y[:, j], color=c, lw=0.6, alpha=0.6, marker=mark, ms=3)
        for parts, preds, ls in ((split.train, train, "--"), (split.test, held, ":")):
            for p, pr in zip(parts, preds or [], strict=False):
                if p.name in colors:
                    ax.plot(np.linspace(p.start_t, p.t[-1], len(pr)), pr[:, j], color="k",
                            lw=1.1, ls=ls)
        if split.kind == "forecast":
            for p in split.test:
                if p.name in colors:
                    ax.axvspan(p.start_t, p.t[-1], color="0.85", alpha=0.35, lw=0)
        ax.set_ylabel(variables[j])
    axes[-1, 0].set_xlabel(table.time)
    handles = [plt.Line2D([], [], color=COLORS[0], marker="o", ms=3, lw=0.6,
                          label="observed"),
               plt.Line2D([], [], color="k", ls="--", label="learned (training part)")]
    if split.test:
        handles.append(plt.Line2D([], [], color="k", ls=":", label="learned (held out)"))
    if split.kind == "forecast":
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.85", label="held out"))
    elif held_out:
        handles.append(plt.Line2D([], [], color="0.3", marker="x", lw=0,
                                  label="held-out trajectory"))
    axes[0, 0].legend(handles=handles, loc="upper right", fontsize=7)
    more = (f" (first {MAX_TRAJECTORIES} of {len(table.trajectories)} trajectories)"
            if len(table.trajectories) > MAX_TRAJECTORIES else "")
    axes[0, 0].set_title(title + more, fontsize=10)
    fig.tight_layout(rect=(0, 0.03 if notice else 0, 1, 1))  # room for the credit
    save(fig, path, notice)


def _phase_2d(path: Path, variables: Sequence[str], obs: Sequence[np.ndarray],
              preds: Sequence[np.ndarray | None], title: str, notice: str | None) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for k, o in enumerate(obs):
        c = COLORS[k % len(COLORS)]
        ax.plot(o[:, 0], o[:, 1], color=c, lw=0.6, marker="o", ms=3, alpha=0.7,
                label="observed" if k == 0 else None)
        if preds[k] is not None:
            ax.plot(preds[k][:, 0], preds[k][:, 1], color="k", lw=1.1, ls="--",
                    label="learned" if k == 0 else None)
    ax.set_xlabel(variables[0])
    ax.set_ylabel(variables[1])
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout(rect=(0, 0.04 if notice else 0, 1, 1))
    save(fig, path, notice)


def ude_parts(path: Path, t: np.ndarray, variables: Sequence[str], known: np.ndarray,
              learned: np.ndarray, missing: np.ndarray | None, title: str,
              notice: str | None = None) -> None:
    """Per variable against t: the known part's rate, the learned part's, and (where the
    truth is known) what the known part misses."""
    plt = pyplot()
    names = list(variables)[:MAX_PANELS]
    fig, axes = plt.subplots(len(names), 1, figsize=(7.5, 2.1 * len(names) + 0.6),
                             sharex=True, squeeze=False)
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(t, known[:, j], color="tab:gray", lw=1.4, label="known part")
        if missing is not None:
            ax.plot(t, missing[:, j], color="tab:green", lw=2.0,
                    label="missing term (truth - known)")
        ax.plot(t, learned[:, j], color="tab:blue", lw=1.4, ls="--", label="learned part")
        ax.set_ylabel(f"d{names[j]}/dt")
        ax.axhline(0, color="0.7", lw=0.5)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[0, 0].set_title(title, fontsize=10)
    axes[-1, 0].set_xlabel("t")
    fig.tight_layout(rect=(0, 0.03 if notice else 0, 1, 1))
    save(fig, path, notice)
