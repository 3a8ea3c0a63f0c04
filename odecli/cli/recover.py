"""`odecli recover RUN`: equations back from a trained `train` run's field (PySINDy).

Every check comes before the run is loaded or anything is written: the options' ranges,
PySINDy being installed, the run being a `train` run with a checkpoint, and the output
files not existing (unless --overwrite). The figure is written first and recover.json last,
each atomically, so a recover.json means the whole result is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odecli.errors import CheckpointError, OdecliError

SUMMARY = "recover.json"


def outputs(run_dir: Path, out: str | None, overwrite: bool) -> tuple[Path, Path]:
    """recover.json and the figure's paths in `out` (default: the run folder), refusing
    files that exist unless `overwrite`."""
    from odecli.dynamics.recovery import FIGURE

    if out is not None and not out.strip():
        raise OdecliError("--out is empty; give a folder (or leave --out out: the run folder)")
    folder = run_dir if out is None else Path(out).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise OdecliError(f"--out {out} is a file; give a folder")
    if not folder.exists() and not folder.parent.is_dir():
        raise OdecliError(f"cannot write to {folder}: folder {folder.parent} does not exist")
    paths = (folder / SUMMARY, folder / FIGURE)
    there = [p for p in paths if p.exists()]
    if there and not overwrite:
        raise OdecliError(f"{there[0]} exists; give --overwrite to replace "
                          f"{' and '.join(p.name for p in paths)}, or --out another folder")
    return paths


def recover_run(run: str, degree: int, threshold: float, out: str | None = None,
                overwrite: bool = False, refit: bool = True) -> tuple[dict[str, Any], Path]:
    """Recover a run's equations; returns recover.json's content and its path."""
    from odecli import api
    from odecli.dynamics import recover, recovery
    from odecli.engine import rundir
    from odecli.launch import resume as resume_mod
    from odecli.launch.run_folders import stored_command

    recover.check_options(degree, threshold, prefix="--")
    recover.pysindy()
    run_dir = resume_mod.run_folder(run, need_checkpoint=False)
    made_by = stored_command(run_dir) or "train"
    if made_by != "train":
        raise OdecliError(f"{run_dir} is a '{made_by}' run; odecli recover takes `odecli "
                          "train` runs (a learned vector field)")
    if not (run_dir / rundir.CHECKPOINT).is_file():
        raise CheckpointError(f"{run} has no {rundir.CHECKPOINT}: the run stopped before "
                              "its first checkpoint, so there is no field to recover")
    summary_path, figure_path = outputs(run_dir, out, overwrite)
    result = recovery.Recovery(api.load(run_dir).experiment, degree, threshold, refit,
                               quiet=False)
    summary = result.summary()
    summary_path.parent.mkdir(exist_ok=True)
    result.figure(figure_path)
    rundir.write_json(summary_path, summary)
    return summary, summary_path


def report(s: dict[str, Any], summary_path: Path) -> str:
    """What the command prints: the equations, the fit, the truth's verdict, the refit, the
    trajectories, the files."""
    lines = [f"recovered ({s['regressed']}, degree {s['library']['degree']}, threshold "
             f"{s['optimizer']['threshold']}; {s['sampled']}):"]
    lines += [f"  {e}" for e in s["equations"]]
    lines.append("  R^2 against the network: " + ", ".join(
        f"{v} {r:.5f}" for v, r in s["r2"].items()))
    truth = s["truth"]
    if truth and "coefficients" in truth:
        lines.append("truth:")
        lines += [f"  {e}" for e in truth["equations"]]
        lines.append(f"  recovered: {_verdict(truth)}")
    if "note" in s:
        lines.append(f"note: {s['note']}")
    ref = s.get("refit")
    if ref and "failed" in ref:
        lines.append(f"not refitted to the data: {ref['failed']}")
    elif ref:
        lines.append(f"refitted to the observed trajectories ({ref['evaluations']} solves, "
                     f"{ref['seconds']:.1f} s; mean squared scaled error "
                     f"{ref['loss_before']:.4g} -> {ref['loss_after']:.4g}):")
        lines += [f"  {e}" for e in ref["equations"]]
        if "truth" in ref:
            lines.append(f"  refitted: {_verdict(ref['truth'])}")
        if "stopped" in ref:
            lines.append(f"  the search stopped early: {ref['stopped']}")
    lines += _trajectories(s["trajectory"])
    lines.append(f"wrote {summary_path} and {summary_path.with_name(s['figure'])}")
    return "\n".join(lines)


def _verdict(truth: dict[str, Any]) -> str:
    spur = (f"largest spurious term {truth['max_spurious']:.3g}" if truth["spurious"]
            else "no spurious term")
    return (f"largest coefficient error {100 * truth['max_rel_error']:.2f}%, {spur}"
            + (f", {len(truth['missed'])} true term(s) missed" if truth["missed"] else ""))


def _trajectories(tr: dict[str, Any]) -> list[str]:
    """The trajectory errors, one line per window: the training span, then the
    extrapolation window or the held-out part where the run has one."""
    if tr["diverged"]:
        return ["the recovered system's trajectory diverged from the data's start"]
    out = []
    for window, key in (("training span", "error_rel"),
                        ("after the span", "extrap_error_rel"),
                        ("held out", "heldout_error_rel")):
        if tr.get(key) is None:
            continue
        cells = [f"recovered {tr[key]:.4g}"]
        for who in ("refitted", "network"):
            if tr.get(f"{who}_{key}") is not None:
                cells.append(f"{who} {tr[f'{who}_{key}']:.4g}")
        out.append(f"trajectory error_rel, {window}: " + ", ".join(cells))
    return out
