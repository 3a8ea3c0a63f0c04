"""`odecli report PATH...`: many run folders -> one table and comparison figures.

Columns are the run, its system (dataset), the overrides that differ between the runs (a run
that did not override a key shows its config's value, or its group choice), then status, the
failure or interruption reason and the metrics. Reading the folders (in one vocabulary, old
ones through ALIASES) is odecli.launch.run_folders. No torch import.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

from odecli.engine import rundir as runs
from odecli.engine.figures import pyplot, save
from odecli.errors import OdecliError
from odecli.launch.run_folders import (
    Run,
    find_runs,
    load_run,
    lookup,
    natural_key,
    number,
    read_yaml,
)
from odecli.paths import resolved

SYSTEM = "system"
# Metric columns, in table order; ALWAYS are shown for every report, the rest when some run
# has them.
METRICS = ("error_rel", "extrap_error_rel", "reconstruction_mse", "gap_mse",
           "extrapolation_forward_mse", "extrapolation_backward_mse",
           "extrapolation_right_mse", "extrapolation_left_mse", "test_error",
           "test_accuracy", "n_params", "dial_nfe_ratio", "test_nll", "nll_gap",
           "true_nll", "kde_nll", "gaussian_nll", "test_bpd", "final_loss",
           "nfe_forward_per_iter", "nfe_backward_per_iter", "nfe_eval", "seconds_per_iter",
           "peak_memory_mb", "iterations", "best_iteration")
ALWAYS = ("final_loss", "nfe_forward_per_iter", "nfe_backward_per_iter")
DEFAULT_SORT = ("extrap_error_rel", "extrapolation_forward_mse", "extrapolation_right_mse",
                "error_rel", "reconstruction_mse", "test_error", "test_nll", "final_loss")
SEED_KEY = "seed"
FIGURES = ("report_error.png", "report_loss.png")


def _fill_defaults(items: list[Run]) -> list[str]:
    """Columns = override keys whose values differ; fill runs that did not set a key."""
    keys: list[str] = []
    for r in items:
        keys.extend(k for k in r.overrides if k not in keys)
    for r in items:
        missing = [k for k in keys if k not in r.overrides]
        if not missing:
            continue
        choices = lookup(read_yaml(r.path / ".hydra" / "hydra.yaml"), "hydra.runtime.choices")
        for k in missing:
            if isinstance(choices, dict) and k in choices:
                r.overrides[k] = str(choices[k])
            else:
                value = lookup(r.config, k)
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


def build(paths: list[str], sort: str | None = None, descending: bool = False
          ) -> tuple[list[Run], list[str], list[str], str]:
    """Load and sort runs; returns (runs, override columns, metric columns, sort key)."""
    items = [load_run(p) for p in find_runs(paths)]
    common = Path(os.path.commonpath([str(r.path.resolve()) for r in items]))
    for r in items:
        rel = r.path.resolve().relative_to(common) if len(items) > 1 else Path(r.path.name)
        r.name = str(rel) or r.path.name
    # Every run shows its system (a `system=` override is that column); it is a key, which
    # groups seeds in the figures, only where the runs differ in it.
    differing = [k for k in _fill_defaults(items) if k != SYSTEM]
    keys = [SYSTEM] * (len({r.system for r in items}) > 1) + differing
    for r in items:
        r.settings = {SYSTEM: r.system, **{k: r.overrides.get(k, "") for k in differing}}
    metric_cols = [m for m in METRICS if m in ALWAYS or any(m in r.metrics for r in items)]
    if sort is None:
        sort = next((m for m in DEFAULT_SORT if any(m in r.metrics for r in items)),
                    "final_loss")
    elif sort not in metric_cols and sort not in (SYSTEM, *differing):
        choices = ", ".join([*metric_cols, SYSTEM, *differing])
        raise OdecliError(f"cannot sort by '{sort}'; choose one of: {choices}")

    def order(r: Run) -> tuple[Any, ...]:
        name = natural_key(Path(r.name))
        if sort in r.settings:  # numbers as numbers (seed 2 before 10), then text
            text = r.settings.get(sort, "")
            try:
                v = float(text)
            except ValueError:
                return (1, 0.0, text, name)
            return (0, -v if descending else v, "", name) if math.isfinite(v) else (
                1, 0.0, text, name)
        v = number(r.metrics.get(sort))
        if math.isnan(v):
            return (1, 0.0, "", name)
        return (0, -v if descending else v, "", name)

    items.sort(key=order)
    return items, keys, metric_cols, sort


def rows(items: list[Run], metric_cols: list[str]) -> list[dict[str, Any]]:
    """Table rows as plain dicts: run, system, overrides, status, error, metrics."""
    return [{"run": r.name, **r.settings, "status": r.status, "error": r.reason,
             **{m: r.metrics.get(m) for m in metric_cols}} for r in items]


def _fmt(value: Any) -> str:
    if value is None or value == "":
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
    """GitHub markdown table, for pasting into notes and pull requests."""
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table:
        lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|")
                                       for c in cols) + " |")
    return "\n".join(lines) + "\n"


def csv_text(table: list[dict[str, Any]]) -> str:
    """CSV with empty cells for missing values, for pandas and spreadsheets."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def _config_label(r: Run, keys: list[str]) -> str:
    parts = [f"{k}={r.settings[k]}" for k in keys if k != SEED_KEY]
    return ", ".join(parts) or "all runs"


def loss_curves(items: list[Run]) -> dict[str, dict[int, float]]:
    """Training loss per iteration of each run that recorded one (run name -> curve), in the
    current vocabulary so old VAE folders get a curve too."""
    curves = {r.name: {h["iteration"]: number(h.get("train_loss")) for h in r.history
                       if isinstance(h.get("iteration"), int)
                       and not math.isnan(number(h.get("train_loss")))} for r in items}
    return {name: pts for name, pts in curves.items() if pts}


def credits(items: list[Run]) -> str | None:
    """The data credits of the runs drawn (each run's `data_license`, once each, in run
    order), for the figures' footer: a figure credits the sources its numbers came from."""
    found = [r.metrics.get("data_license") for r in items]
    unique = list(dict.fromkeys(c for c in found if isinstance(c, str) and c))
    return "; ".join(unique) or None


def figures(items: list[Run], keys: list[str], metric: str, out: Path,
            notice: str | None = None) -> list[Path]:
    """Error per configuration (seeds as dots, mean and std across seeds) and loss curves
    overlaid (mean line and std band where seeds were swept); notice: the data credit."""
    import numpy as np

    plt = pyplot()

    groups: dict[str, list[Run]] = {}
    for r in items:
        groups.setdefault(_config_label(r, keys), []).append(r)
    written = []
    labels = list(groups)
    if metric:
        fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(labels) + 2), 4.5))
        for i, label in enumerate(labels):
            values = np.array([number(r.metrics.get(metric)) for r in groups[label]])
            ok = values[~np.isnan(values)]
            if len(ok):
                # Mean and std as a marker with error bars (bars would mislead on a log axis).
                ax.errorbar(i, ok.mean(), yerr=ok.std() if len(ok) > 1 else None, fmt="s",
                            color="C1", ms=8, capsize=5, zorder=3)
                ax.plot(np.full(len(ok), i), ok, "o", color="C0", ms=4)
            if len(values) > len(ok):
                ax.annotate(f"{len(values) - len(ok)} failed", (i, 0), ha="center",
                            va="bottom", color="C3", fontsize=8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric)
        known = [v for v in (number(r.metrics.get(metric)) for r in items) if not math.isnan(v)]
        if known and min(known) > 0:
            ax.set_yscale("log")
        ax.set_title(f"{metric} per configuration\n(square: mean and std; dots: each run)",
                     fontsize=10)
        written.append(_save(fig, out / FIGURES[0], notice))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_run = loss_curves(items)
    drawn, positive = False, True
    for i, label in enumerate(labels):
        curves = [by_run[r.name] for r in groups[label] if r.name in by_run]
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
        positive = positive and bool(np.all(grid[~np.isnan(grid)] > 0))
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    if drawn:
        if positive:  # a VAE's loss (negative ELBO) can be negative: linear axis then
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_title("training loss (mean and std across seeds)")
    return [*written, _save(fig, out / FIGURES[1], notice)]


def _save(fig: Any, path: Path, notice: str | None = None) -> Path:
    with warnings.catch_warnings():  # long labels: the tight bounding box of save() fits them
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        fig.tight_layout()
    save(fig, path, notice)
    return path


def default_out(paths: list[str]) -> Path:
    """One PATH: the report goes there; several: into their common folder."""
    return Path(os.path.commonpath([str(resolved(p)) for p in paths]))


def check_out(out_dir: Path) -> None:
    """The report folder exists (made if need be) and takes a file, or one line saying why."""
    probe = out_dir / f".report-probe-{os.getpid()}{runs.TMP}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * 4096)
    except OSError as exc:
        raise OdecliError(f"cannot write the report folder {out_dir}: "
                          f"{exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def report(paths: list[str], sort: str | None = None, descending: bool = False,
           out: str | None = None, plots: bool = True) -> tuple[str, list[Path]]:
    """Build the table, write report.csv, report.md and the figures; returns (text, files)."""
    find_runs(paths)  # the PATHs hold runs: one line and nothing written if not
    out_dir = resolved(out) if out else default_out(paths)
    check_out(out_dir)  # before reading any run
    items, keys, metric_cols, sort_key = build(paths, sort, descending)
    table = rows(items, metric_cols)
    written = [out_dir / "report.csv", out_dir / "report.md"]
    runs.atomic_write_bytes(written[0], csv_text(table).encode())
    title = f"# odecli report: {len(items)} runs, sorted by {sort_key or 'run'}\n\n"
    searches = search_results(paths)
    credit = credits(items)
    runs.atomic_write_bytes(written[1], (title + markdown_table(table)
                                         + "".join(f"\n{s}\n" for s in searches)
                                         + (f"\nData: {credit}\n" if credit else "")).encode())
    metric = sort_key if sort_key in metric_cols else next(
        (m for m in DEFAULT_SORT if any(m in r.metrics for r in items)), "")
    if plots:
        written += figures(items, keys, metric, out_dir, credit)
    return "\n".join([text_table(table), *searches]), written


def search_results(paths: list[str]) -> list[str]:
    """One line per search sweep (Hydra's Optuna sweeper writes optimization_results.yaml
    into the sweep folder): its best value and parameters."""
    lines = []
    for text in paths:
        for found in sorted(Path(text).expanduser().rglob("optimization_results.yaml")):
            data = read_yaml(found) or {}
            if "best_value" in data or "best_values" in data:
                best = data.get("best_value", data.get("best_values"))
                params = ", ".join(f"{k}={v}" for k, v in (data.get("best_params") or {}).items())
                lines.append(f"search {found.parent}: best value {best}"
                             + (f" with {params}" if params else ""))
    return lines
