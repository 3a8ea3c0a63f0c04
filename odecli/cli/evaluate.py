"""`odecli eval <run folder>`: re-score a trained model without retraining, for any command.

The run's stored overrides are composed again with the user's on top, so `solver=rk4`,
`solver.rtol=1e-9`, `device=cuda` or (for `train`) `system.extrapolate=1.0` and
`system.y0=[...]` (the true system from another initial state) work as when training.
Keys that would change what the checkpoint means (model, system, data) are refused.
The model is the one the run reported (the best state for the VAEs); results and redrawn
figures go to `<run>/eval/<date>/<time>/` so the run's own files are never overwritten.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from odecli.errors import RunFailed, SolverError

EVAL_JSON = "eval.json"


def evaluate_run(path: str, overrides: list[str], out: str | None = None,
                 overwrite: bool = False) -> tuple[dict[str, Any], Path]:
    """Reload the run's checkpoint, test it, write eval.json and figures."""
    from odecli.launch import claims, sweeps
    from odecli.launch import resume as resume_mod
    from odecli.launch.loading import load_run

    run_dir = resume_mod.run_folder(path, purpose="to evaluate")
    # --out is checked and claimed (like a run's folder) before any work; the default folder
    # is made once the run has loaded, so a bad run or override leaves nothing behind.
    if out:
        with claims.claim_output(Path(out), "eval", overwrite, keep=(EVAL_JSON,)) as out_dir:
            return _evaluate(run_dir, overrides, out_dir, load_run)
    loaded = load_run(run_dir, overrides, what="odecli eval", work_dir=run_dir / "eval")
    made = sweeps.claim_dir(run_dir / "eval", "")
    try:
        with claims.claim_output(made, "eval", keep=(EVAL_JSON,)) as out_dir:
            return _evaluate(run_dir, overrides, out_dir, lambda *a, **k: loaded)
    except BaseException:
        for folder in (made.parent, made.parent.parent):  # eval/<date>/ when left empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _evaluate(run_dir: Path, overrides: list[str], out_dir: Path, load: Any
              ) -> tuple[dict[str, Any], Path]:
    from odecli.engine import rundir

    loaded = load(run_dir, overrides, what="odecli eval", work_dir=out_dir)
    loaded.experiment.run_dir = out_dir
    exp, state, cmd, cfg = loaded.experiment, loaded.state, loaded.command, loaded.cfg
    t0 = time.perf_counter()
    try:
        test, status = exp.test(None), "ok"
    except SolverError as exc:
        test, status = {}, f"failed: {exc}"
    result: dict[str, Any] = {
        "status": status, "command": cmd.name, "system": exp.name, "run": str(run_dir),
        "checkpoint_iteration": int(state["iteration"]),
        "model": loaded.model_kind,
        "best_iteration": state.get("best_iteration") if state.get("best") else None,
        "overrides": list(overrides), **test,
        "eval_seconds": time.perf_counter() - t0, "solver": exp.spec.method,
    }
    if exp.citation:
        result["data_license"] = exp.citation
    if status == "ok":
        exp.write_files(out_dir, test)
    if bool(cfg.plots.enabled) and status == "ok":
        from odecli.engine.figures import loss_figure

        history = list(state.get("history") or [])
        try:
            if history:
                loss_figure(out_dir / "loss.png", history, f"{cmd.name} {exp.name}",
                            exp.loss_figure_columns, exp.citation)
            exp.figures(out_dir, history, test)
        except Exception as exc:  # figures never hide the numbers
            result["figures_error"] = str(exc)
    rundir.write_json(out_dir / EVAL_JSON, result)
    if status != "ok":
        raise RunFailed(f"evaluation {status} (results in {out_dir})")
    return result, out_dir
