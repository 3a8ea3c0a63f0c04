"""`odecli eval <run folder>`: re-score a trained model without retraining, for any command.

The run's stored overrides are composed again with the user's on top, so `solver=rk4`,
`solver.rtol=1e-9`, `device=cuda` or (for `train`) `system.extrapolate=1.0` work as when
training. Keys that would change what the checkpoint means (model, system, data) are refused.
The model is the one the run reported (the best state for the VAEs); results and redrawn
figures go to `<run>/eval/<date>/<time>/` so the run's own files are never overwritten.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from odecli.errors import OdecliError, RunFailed, SolverError
from odecli.launch import overrides as ov

# What an evaluation may change: how the trained model is integrated and where, not the model.
EVAL_KEYS = ("solver", "gradient", "system.extrapolate", "device", "plots", "resume", "quiet",
             "train.niters", "train.test_freq", "train.checkpoint_every", "logger",
             "data.dir", "data.cache_dir")
EVAL_JSON = "eval.json"


def evaluate_run(path: str, overrides: list[str], out: str | None = None
                 ) -> tuple[dict[str, Any], Path]:
    """Reload the run's checkpoint, test it, write eval.json and figures."""
    from omegaconf import open_dict

    from odecli.engine import checkpoint, rundir
    from odecli.launch import bridge, sweeps
    from odecli.launch import resume as resume_mod
    from odecli.numerics import device as device_mod

    run_dir = resume_mod.run_folder(path)
    state = checkpoint.read(run_dir / rundir.CHECKPOINT)
    cmd = bridge.COMMANDS.get(str(state.get("command", "train")))
    if cmd is None:
        raise OdecliError(f"{run_dir} was written by an unknown command "
                          f"'{state.get('command')}'")
    for o in overrides:
        if "=" not in o or not ov.within(ov.key(o), EVAL_KEYS) or (
                cmd.name != "train" and ov.key(o).startswith("system")):
            extra = ", system.extrapolate" if cmd.name == "train" else ""
            raise OdecliError(f"odecli eval cannot change '{o}'; it takes overrides of "
                              f"solver, solver.*{extra}, device, plots and where the data "
                              f"is (data.dir)")
    merged = [o for o in resume_mod.merged_overrides(run_dir, overrides)
              if not o.startswith("resume=")]
    cfg = bridge.validate(cmd, merged)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    device_mod.quiet_warnings()
    out_dir = Path(out).expanduser().resolve() if out else sweeps.claim_dir(
        run_dir / "eval", "")
    try:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OdecliError(f"cannot write the output folder {out_dir}: "
                              f"{exc.strerror or exc}") from exc
        exp = bridge.load(cmd.experiment)(cfg, out_dir)
        checkpoint.check_compatible(state["config"], _plain(cfg), f"checkpoint {run_dir}",
                                    EVAL_KEYS)
        checkpoint.load_modules(exp.modules(), state.get("best") or state["modules"],
                                run_dir)
    except BaseException:
        if not out:
            _remove_empty(out_dir)
        raise
    t0 = time.perf_counter()
    try:
        test, status = exp.test(None), "ok"
    except SolverError as exc:
        test, status = {}, f"failed: {exc}"
    result: dict[str, Any] = {
        "status": status, "command": cmd.name, "system": exp.name, "run": str(run_dir),
        "checkpoint_iteration": int(state["iteration"]),
        "model": "best" if state.get("best") else "final",
        "best_iteration": state.get("best_iteration") if state.get("best") else None,
        "overrides": list(overrides), **test,
        "eval_seconds": time.perf_counter() - t0, "solver": exp.spec.method,
    }
    if exp.citation:
        result["data_license"] = exp.citation
    if bool(cfg.plots.get("enabled", True)) and status == "ok":
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


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _remove_empty(path: Path) -> None:
    for p in (path, path.parent):
        try:
            p.rmdir()
        except OSError:
            return
