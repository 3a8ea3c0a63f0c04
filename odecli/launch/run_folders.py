"""Run folders as `odecli report` reads them: one vocabulary for every command and version.

A run folder is any folder holding `.hydra/config.yaml` (single runs, sweep jobs, resumed
runs). Folders written before the commands shared one training engine use older names,
read through ALIASES. No torch import: reporting over copied cluster folders stays quick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odecli import registry
from odecli.engine import rundir as runs
from odecli.errors import OdecliError
from odecli.launch import overrides
from odecli.launch.claims import held_by

# Old name -> current name, per file. Folders written before the three commands shared one
# training engine use the old names; a current name wins where a file has both.
ALIASES: dict[str, dict[str, str]] = {
    runs.METRICS: {"nfe_forward_per_solve": "nfe_forward_per_iter"},  # old `train`
    # Old VAE history, told apart by its `loss` column. Its NFE columns counted one step, not
    # the run so far: renamed so nothing reads them as the cumulative counts.
    runs.HISTORY: {"loss": "train_loss", "nfe_forward": "nfe_forward_step",
                   "nfe_backward": "nfe_backward_step"},
}
# Overrides that never describe the experiment itself.
IGNORED_PREFIXES = ("hydra.", "hydra/", "resume", "quiet", "plots.")


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    name: str = ""
    command: str = ""  # train, spiral-vae, ecg-vae ("" if unknown)
    system: str = ""  # the system or dataset: lotka, spirals, mitdb/100
    overrides: dict[str, str] = field(default_factory=dict)
    status: str = "incomplete"
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # current names
    history: list[dict[str, Any]] = field(default_factory=list)  # current names
    config: dict[str, Any] = field(default_factory=dict)
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
    return sorted(unique.values(), key=natural_key)


def natural_key(p: Path) -> tuple[Any, ...]:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in p.parts)


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _renamed(row: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    return {aliases.get(k, k): v for k, v in row.items()
            if not (k in aliases and aliases[k] in row)}


def stored_command(path: Path) -> str | None:
    """The command that made a run folder: Hydra's job name (`spiral_vae` -> `spiral-vae`),
    which every odecli version has set, so old and unfinished runs are known too."""
    name = lookup(read_yaml(path / ".hydra" / "hydra.yaml"), "hydra.job.name")
    return None if name is None else str(name).replace("_", "-")


def _system(command: str, metrics: dict[str, Any], config: dict[str, Any]) -> str:
    if metrics.get("system"):
        return str(metrics["system"])
    if command == "train":
        name = lookup(config, "system.name")
        return "" if name is None else str(name)
    data = metrics.get("data")
    if command == "ecg-vae" and isinstance(data, dict) and data.get("record") is not None:
        return f"mitdb/{data['record']}"
    cmd = registry.COMMANDS.get(command)
    return cmd.dataset if cmd else ""


def _fill_from_history(metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """The final loss and NFE per iteration an old or unfinished run's metrics lack, from
    its history (NFE only from cumulative columns: per-step ones were renamed away)."""
    losses = [h["train_loss"] for h in history if not math.isnan(number(h.get("train_loss")))]
    if losses:
        metrics.setdefault("final_loss", losses[-1])
    for col in ("nfe_forward", "nfe_backward"):
        done = [h for h in history if number(h.get("iteration")) > 0
                and not math.isnan(number(h.get(col)))]
        if done:
            metrics.setdefault(f"{col}_per_iter", done[-1][col] / done[-1]["iteration"])


def load_run(path: Path) -> Run:
    """Overrides, status, metrics and history of one run folder in the current vocabulary
    (missing files are a status)."""
    run = Run(path=path)
    config = read_yaml(path / ".hydra" / "config.yaml")
    run.config = config if isinstance(config, dict) else {}
    for o in read_yaml(path / ".hydra" / "overrides.yaml") or []:
        key, value = overrides.key(str(o)), str(o).partition("=")[2]
        if not key.startswith(IGNORED_PREFIXES):
            run.overrides[key] = value
    metrics_path = path / runs.METRICS
    try:
        run.metrics = runs.read_json(metrics_path) if metrics_path.is_file() else {}
    except (OSError, ValueError):
        run.metrics, run.reason = {}, "metrics.json is unreadable"
    run.metrics = _renamed(run.metrics, ALIASES[runs.METRICS])
    run.history = runs.History.read(path / runs.HISTORY)
    if run.history and "loss" in run.history[0] and "train_loss" not in run.history[0]:
        run.history = [_renamed(h, ALIASES[runs.HISTORY]) for h in run.history]
    run.command = str(run.metrics.get("command") or stored_command(path) or "")
    run.system = _system(run.command, run.metrics, run.config)
    _fill_from_history(run.metrics, run.history)
    status = str(run.metrics.get("status", "")) if run.metrics else ""
    holder = held_by(path)
    if holder is not None:  # training now (perhaps resumed): its metrics are not final
        run.status, run.reason = "running", f"held by {holder}"
    elif status == "ok":
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
        last = (f" (last evaluation at iteration {run.history[-1].get('iteration')})"
                if run.history else "")
        run.reason = f"no metrics.json: still running, or killed{last}"
    return run


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)
