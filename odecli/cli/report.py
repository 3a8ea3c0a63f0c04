"""`odecli report PATH...`: many run folders -> one table and comparison figures.

A run folder is any folder holding `.hydra/config.yaml` (single runs, sweep jobs, resumed
runs). Columns are the overrides that differ between the runs (a run that did not override a
key shows its config's value, or its group choice), then status, the failure or interruption
reason and the metrics. No torch import: reporting on a laptop over copied cluster folders
should be quick.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odecli.engine import rundir as runs
from odecli.errors import OdecliError

# Metric columns, in table order; only those some run has are shown.
METRICS = ("error_rel", "extrap_error_rel", "reconstruction_mse", "gap_mse",
           "extrapolation_forward_mse", "extrapolation_backward_mse",
           "extrapolation_right_mse", "extrapolation_left_mse", "final_loss",
           "nfe_forward_per_solve", "nfe_backward_per_iter", "seconds_per_iter",
           "peak_memory_mb", "iterations")
DEFAULT_SORT = ("extrap_error_rel", "extrapolation_forward_mse", "extrapolation_right_mse",
                "error_rel", "reconstruction_mse", "final_loss")
# Overrides that never describe the experiment itself.
IGNORED_PREFIXES = ("hydra.", "hydra/", "resume", "quiet", "plots.")
SEED_KEY = "seed"
FIGURES = ("report_error.png", "report_loss.png")


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    name: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    status: str = "incomplete"
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # the differing overrides


def find_runs(paths: list[str]) -> list[Path]:
    """Every run folder under the given paths (each path may itself be one)."""
    found: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if not path.exists():
            raise OdecliError(f"{text} does not exist")
        if not path.is_dir():
            raise OdecliError(f"{text} is not a run folder or a folder of runs")
        here = sorted(p.parent.parent for p in path.rglob(".hydra/config.yaml"))
        if (path / ".hydra" / "config.yaml").is_file() and path.resolve() not in {
                h.resolve() for h in here}:
            here.insert(0, path)
        if not here:
            raise OdecliError(f"{text} is not a run folder and contains none "
                              f"(no .hydra/config.yaml below it)")
        found.extend(here)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return sorted(unique.values(), key=_natural)


def _natural(p: Path) -> tuple[Any, ...]:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in p.parts)


def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def load_run(path: Path) -> Run:
    """Overrides, status and metrics of one run folder (missing files are a status)."""
    run = Run(path=path)
    for o in _yaml(path / ".hydra" / "overrides.yaml") or []:
        key, _, value = str(o).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(IGNORED_PREFIXES):
            run.overrides[key] = value
    metrics_path = path / runs.METRICS
    try:
        run.metrics = runs.read_json(metrics_path) if metrics_path.is_file() else {}
    except (OSError, ValueError):
        run.metrics, run.reason = {}, "metrics.json is unreadable"
    status = str(run.metrics.get("status", "")) if run.metrics else ""
    if status == "ok":
        run.status = "ok"
    elif status.startswith("failed"):
        run.status, run.reason = "failed", status.partition(": ")[2] or status
        if run.metrics.get("hint"):
            run.reason += f" (hint: {run.metrics['hint']})"
    elif status == "interrupted":
        run.status = "interrupted"
        run.reason = (f"{run.metrics.get('interrupted_by', 'signal')} at iteration "
                      f"{run.metrics.get('iterations')}; resume with resume=<folder>")
    elif status:
        run.status, run.reason = status, ""
    elif not run.reason:
        rows = runs.History.read(path / runs.HISTORY)
        last = f" (last evaluation at iteration {rows[-1].get('iteration')})" if rows else ""
        run.reason = f"no metrics.json: still running, or killed{last}"
    return run


def _fill_defaults(items: list[Run]) -> list[str]:
    """Columns = override keys whose values differ; fill runs that did not set a key."""
    keys: list[str] = []
    for r in items:
        keys.extend(k for k in r.overrides if k not in keys)
    for r in items:
        missing = [k for k in keys if k not in r.overrides]
        if not missing:
            continue
        config = _yaml(r.path / ".hydra" / "config.yaml") or {}
        choices = _lookup(_yaml(r.path / ".hydra" / "hydra.yaml"), "hydra.runtime.choices")
        for k in missing:
            if isinstance(choices, dict) and k in choices:
                r.overrides[k] = str(choices[k])
            else:
                value = _lookup(config, k)
                r.overrides[k] = "" if value is None else _plain(value)
    if len(items) == 1:
        return keys
    return [k for k in keys if len({r.overrides.get(k) for r in items}) > 1]


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    return str(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def build(paths: list[str], sort: str | None = None, descending: bool = False
          ) -> tuple[list[Run], list[str], list[str], str]:
    """Load and sort runs; returns (runs, override columns, metric columns, sort key)."""
    items = [load_run(p) for p in find_runs(paths)]
    common = Path(os.path.commonpath([str(r.path.resolve()) for r in items]))
    for r in items:
        rel = r.path.resolve().relative_to(common) if len(items) > 1 else Path(r.path.name)
        r.name = str(rel) or r.path.name
    keys = _fill_defaults(items)
    for r in items:
        r.settings = {k: r.overrides.get(k, "") for k in keys}
    metric_cols = [m for m in METRICS if any(m in r.metrics for r in items)]
    if sort is None:
        sort = next((m for m in DEFAULT_SORT if m in metric_cols),
                    metric_cols[0] if metric_cols else "")
    elif sort not in metric_cols and sort not in keys:
        choices = ", ".join(metric_cols + keys) or "none (no run has metrics)"
        raise OdecliError(f"cannot sort by '{sort}'; choose one of: {choices}")

    def order(r: Run) -> tuple[Any, ...]:
        name = _natural(Path(r.name))
        if sort in keys:
            return (0, r.settings.get(sort, ""), name)
        v = _number(r.metrics.get(sort))
        if math.isnan(v):
            return (1, 0.0, name)
        return (0, -v if descending else v, name)

    items.sort(key=order)
    return items, keys, metric_cols, sort


def rows(items: list[Run], keys: list[str], metric_cols: list[str]) -> list[dict[str, Any]]:
    """Table rows as plain dicts: run, overrides, status, error, metrics."""
    out = []
    for r in items:
        row: dict[str, Any] = {"run": r.name, **r.settings, "status": r.status,
                               "error": r.reason}
        for m in metric_cols:
            row[m] = r.metrics.get(m)
        out.append(row)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def text_table(table: list[dict[str, Any]]) -> str:
    """Aligned plain-text table for the terminal."""
    if not table:
        return ""
    cols = list(table[0])
    cells = [[_fmt(row.get(c)) for c in cols] for row in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def markdown_table(table: list[dict[str, Any]]) -> str:
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table:
        lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|")
                                       for c in cols) + " |")
    return "\n".join(lines) + "\n"


def csv_text(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def _config_label(r: Run, keys: list[str]) -> str:
    parts = [f"{k}={r.settings[k]}" for k in keys if k != SEED_KEY]
    return ", ".join(parts) or "all runs"


def figures(items: list[Run], keys: list[str], metric: str, out: Path) -> list[Path]:
    """Error per configuration (seeds as dots, mean and std across seeds) and loss curves
    overlaid (mean line and std band where seeds were swept)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[str, list[Run]] = {}
    for r in items:
        groups.setdefault(_config_label(r, keys), []).append(r)
    written = []
    labels = list(groups)
    if metric:
        fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(labels) + 2), 4.5))
        for i, label in enumerate(labels):
            values = np.array([_number(r.metrics.get(metric)) for r in groups[label]])
            ok = values[~np.isnan(values)]
            if len(ok):
                # Mean and std as a marker with error bars (bars would mislead on a log axis).
                ax.errorbar(i, ok.mean(), yerr=ok.std() if len(ok) > 1 else None, fmt="s",
                            color="C1", ms=8, capsize=5, zorder=3)
                ax.plot(np.full(len(ok), i), ok, "o", color="C0", ms=4)
            failed = len(values) - len(ok)
            if failed:
                ax.annotate(f"{failed} failed", (i, 0), ha="center", va="bottom",
                            color="C3", fontsize=8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric)
        positive = [_number(r.metrics.get(metric)) for r in items]
        if all(v > 0 for v in positive if not math.isnan(v)) and any(
                not math.isnan(v) for v in positive):
            ax.set_yscale("log")
        ax.set_title(f"{metric} per configuration\n(square: mean and std; dots: each run)",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(out / FIGURES[0], dpi=100)
        plt.close(fig)
        written.append(out / FIGURES[0])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for i, label in enumerate(labels):
        curves = []
        for r in groups[label]:
            hist = runs.History.read(r.path / runs.HISTORY)
            pts = {int(h["iteration"]): _number(h.get("train_loss")) for h in hist
                   if isinstance(h.get("iteration"), int)}
            if any(not math.isnan(v) for v in pts.values()):
                curves.append(pts)
        if not curves:
            continue
        its = sorted(set().union(*curves))
        grid = np.array([[c.get(t, math.nan) for t in its] for c in curves])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(grid, axis=0)
            std = np.nanstd(grid, axis=0)
        color = f"C{i % 10}"
        n = f" ({len(curves)} seeds)" if len(curves) > 1 else ""
        ax.plot(its, mean, color=color, label=label + n, marker="o", ms=2)
        if len(curves) > 1:
            ax.fill_between(its, mean - std, mean + std, color=color, alpha=0.2)
        drawn = True
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_title("training loss (mean and std across seeds)")
    fig.tight_layout()
    fig.savefig(out / FIGURES[1], dpi=100)
    plt.close(fig)
    written.append(out / FIGURES[1])
    return written


def default_out(paths: list[str]) -> Path:
    """One PATH: the report goes there; several: into their common folder."""
    resolved = [str(Path(p).expanduser().resolve()) for p in paths]
    return Path(os.path.commonpath(resolved))


def report(paths: list[str], sort: str | None = None, descending: bool = False,
           out: str | None = None, plots: bool = True) -> tuple[str, list[Path]]:
    """Build the table, write report.csv, report.md and the figures; returns (text, files)."""
    items, keys, metric_cols, sort_key = build(paths, sort, descending)
    out_dir = Path(out).expanduser() if out else default_out(paths)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OdecliError(f"cannot write the report folder {out_dir}: "
                          f"{exc.strerror or exc}") from None
    table = rows(items, keys, metric_cols)
    written = [out_dir / "report.csv", out_dir / "report.md"]
    runs.atomic_write_bytes(written[0], csv_text(table).encode())
    title = f"# odecli report: {len(items)} runs, sorted by {sort_key or 'run'}\n\n"
    runs.atomic_write_bytes(written[1], (title + markdown_table(table)).encode())
    metric = sort_key if sort_key in metric_cols else next(
        (m for m in DEFAULT_SORT if m in metric_cols), "")
    if plots:
        written += figures(items, keys, metric, out_dir)
    return text_table(table), written
