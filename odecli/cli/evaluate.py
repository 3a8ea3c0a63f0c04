"""`odecli eval <run folder>`: re-evaluate a trained model without retraining.

The run's stored overrides are composed again with the user's on top, so `solver=rk4`,
`solver.rtol=1e-9` or `system.extrapolate=1.0` (a longer extrapolation window) work as in
`odecli train`. Keys that would change what the checkpoint means (model, system parameters,
data) are refused. Results and redrawn figures go to `<run>/eval/<date>/<time>/` so the
run's own files are never overwritten.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from odecli.errors import OdecliError, RunFailed

# What an evaluation may change: how the trained field is integrated and where, not the field.
EVAL_KEYS = ("solver", "gradient", "system.extrapolate", "device", "plots", "resume", "quiet",
             "train.niters", "train.test_freq", "train.checkpoint_every")
EVAL_JSON = "eval.json"


def evaluate_run(path: str, overrides: list[str], out: str | None = None
                 ) -> tuple[dict[str, Any], Path]:
    """Reload the run's checkpoint, evaluate it, write eval.json and figures."""
    from odecli.cli import bridge as hydra_bridge
    from odecli.cli import resume as resume_mod
    from odecli.engine import rundir as runs

    run_dir = resume_mod.run_folder(path)
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" not in o or not any(key == k or key.startswith(k + ".") or
                                   key.startswith(k + "/") for k in EVAL_KEYS):
            raise OdecliError(f"odecli eval cannot change '{o}'; it takes overrides of "
                              f"solver, solver.*, system.extrapolate, device and plots")
    merged = [o for o in resume_mod.merged_overrides(run_dir, overrides)
              if not o.startswith("resume=")]
    cmd = hydra_bridge.COMMANDS["train"]
    cfg = hydra_bridge.validate(cmd, merged)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.pop("hydra", None)
    from odecli.dynamics.experiment import Trainer
    from odecli.numerics import device as device_mod

    device_mod.quiet_warnings()
    out_dir = Path(out).expanduser().resolve() if out else hydra_bridge.claim_dir(
        run_dir / "eval", "")
    try:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OdecliError(f"cannot write the output folder {out_dir}: "
                              f"{exc.strerror or exc}") from exc
        trainer = Trainer(cfg, out_dir)
        state = trainer.load_checkpoint(run_dir / runs.CHECKPOINT, restore_training=False,
                                        allowed=EVAL_KEYS)
    except BaseException:
        if not out:
            _remove_empty(out_dir)
        raise
    t0 = time.perf_counter()
    from odecli.errors import SolverError

    try:
        ev = trainer.evaluate()
        status = "ok"
    except SolverError as exc:
        ev, status = {}, f"failed: {exc}"
    result: dict[str, Any] = {
        "status": status,
        "run": str(run_dir),
        "checkpoint_iteration": int(state["iteration"]),
        "overrides": list(overrides),
        **ev,
        "eval_seconds": time.perf_counter() - t0,
        "solver": trainer.spec.method,
        "system": trainer.system.name,
    }
    if bool(cfg.plots.get("enabled", True)) and status == "ok":
        try:
            trainer.figures()
        except Exception as exc:  # figures never hide the numbers
            result["figures_error"] = str(exc)
    runs.write_json(out_dir / EVAL_JSON, result)
    if status != "ok":
        raise RunFailed(f"evaluation {status} (results in {out_dir})")
    return result, out_dir


def _remove_empty(path: Path) -> None:
    for p in (path, path.parent):
        try:
            p.rmdir()
        except OSError:
            return
