"""What a run records and raises at its end: metrics.json's common part for every command,
and the error of a run that failed after its folder recorded why."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from odecli.engine import rundir
from odecli.engine.experiment import Experiment
from odecli.errors import RunFailed


class Finished(Protocol):
    """What metrics.json is read from: the engine (odecli.engine.loop.Engine) at its end."""

    exp: Experiment
    iteration: int
    opts: dict[str, Any]
    last_loss: float
    nfe_forward: int
    nfe_backward: int
    train_seconds: float
    best_iteration: int
    best_score: float
    run_dir: Path


def run_metrics(engine: Finished, status: str, reason: str | None, hint: str | None,
                test: dict[str, Any], start_wall: float) -> dict[str, Any]:
    """metrics.json: the same names for every command, then the family's test results."""
    exp, its = engine.exp, max(engine.iteration, 1)
    label = {"ok": "ok", "interrupted": "interrupted"}.get(status, f"failed: {reason}")
    test = dict(test)
    nfe_eval = test.pop("nfe_eval", None)
    m: dict[str, Any] = {
        "status": label, "command": exp.command, "system": exp.name,
        "iterations": engine.iteration, "niters": engine.opts["niters"],
        "final_loss": engine.last_loss, **test,
        "nfe_forward_per_iter": engine.nfe_forward / its,
        "nfe_backward_per_iter": engine.nfe_backward / its,
        "nfe_eval": nfe_eval,
        "wall_seconds": time.perf_counter() - start_wall,
        "train_seconds": engine.train_seconds,
        "seconds_per_iter": engine.train_seconds / its,
        "peak_memory_mb": rundir.peak_memory_mb(exp.rt.device),
        "device": str(exp.rt.device), "gradient": exp.spec.gradient,
        "solver": exp.spec.method, "solver_loop": exp.spec.loop,
        "environment": rundir.environment(exp.rt.device, exp.rt.dtype, exp.rt.threads),
    }
    if exp.track_best:
        m["best_iteration"] = engine.best_iteration
        m["best_score"] = engine.best_score
    if exp.citation:
        m["data_license"] = exp.citation
    if status == "interrupted":
        m["interrupted_by"] = reason
        m["resume"] = f"odecli {exp.command} resume={engine.run_dir}"
    if hint:
        m["hint"] = hint
    return m


class RunFailedWithMetrics(RunFailed):
    """A run that stopped on a solver failure; metrics.json already records it."""

    exit_code = 1

    def __init__(self, metrics: dict[str, Any]) -> None:
        hint = metrics.get("hint")
        text = metrics["status"] + (f" (hint: {hint})" if hint else "")
        if metrics.get("unrecorded"):
            text += f"; metrics.json could not record it either ({metrics['unrecorded']})"
        if metrics.get("resume") and metrics.get("checkpoint_iteration") is not None:
            text += (f"; the checkpoint of iteration {metrics['checkpoint_iteration']} is "
                     f"intact: once the folder is writable again, continue with "
                     f"`{metrics['resume']}`")
        elif metrics.get("resume"):
            text += (f"; no checkpoint was saved yet: once the folder is writable again, "
                     f"`{metrics['resume']}` starts it afresh")
        super().__init__(text)
        self.metrics = metrics
