"""`odecli export RUN --out FILE`: a run's model as a file, checked against odecli as written.

The run is loaded as `odecli.load` loads it; its model becomes one function of tensors with
the solve unrolled (targets.py); the file is written to a temporary name, run by the
runtime its users will use (formats.py) on the run's own data and compared with odecli's
reference solve of the same model. Only an export within the tolerance (or one the user
forces, the error then in its name) gets its final name, and `export.json` beside it
records how it was made and what it was measured to do.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odecli.errors import OdecliError
from odecli.export import FORMATS, formats, targets
from odecli.numerics.unrolled import check_method
from odecli.version import __version__

METADATA = "export.json"


@dataclass
class Request:
    """What the user asked for, checked before anything is loaded or written."""

    run: str
    out: Path
    fmt: str
    what: str | None
    solver: str
    steps: int
    tolerance: float
    force: bool


def check_request(run: str, out: str, fmt: str | None, what: str | None, solver: str,
                  steps: int, tolerance: float, force: bool) -> Request:
    """The request, or one line saying what is wrong with it."""
    path = Path(out).expanduser()
    by_suffix = {s: f for f, s in FORMATS.items()}
    if fmt is None:
        fmt = by_suffix.get(path.suffix)
        if fmt is None:
            raise OdecliError(f"--out must end in {' or '.join(by_suffix)} (or give --format "
                              f"onnx|pt2), got '{out}'")
    if fmt not in FORMATS:
        raise OdecliError(f"--format takes {' or '.join(FORMATS)}, got '{fmt}'")
    if path.suffix != FORMATS[fmt]:
        raise OdecliError(f"a --format {fmt} file ends in {FORMATS[fmt]}, got '{out}'")
    if not path.parent.resolve().is_dir():
        raise OdecliError(f"cannot write {path}: folder {path.parent} does not exist")
    check_method(solver)
    if steps < 1:
        raise OdecliError(f"--steps must be a positive integer, got {steps}")
    if not (tolerance > 0 and np.isfinite(tolerance)):
        raise OdecliError(f"--tolerance must be a positive number, got {tolerance}")
    return Request(run, path, fmt, what, solver, steps, float(tolerance), force)


def export_run(req: Request) -> dict[str, Any]:
    """Export, verify and record one model; returns the metadata written (with `path`)."""
    from odecli import api

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    trained = api.load(req.run)
    target = targets.build(trained.command, trained.experiment, req.what, req.solver,
                           req.steps)
    with torch.no_grad():
        in_torch = target.module(*target.inputs).numpy()
        reference = target.reference(*[x.double() for x in target.inputs]).numpy()
    meta: dict[str, Any] = {
        "file": "", "format": req.fmt, "what": target.what, "odecli_version": __version__,
        "torch_version": torch.__version__, "source_run": str(trained.run_dir.resolve()),
        "command": trained.command,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "solver": req.solver if target.nfe is not None else None,
        "steps": req.steps if target.nfe is not None else None,
        "steps_are": "fixed steps between consecutive output times" if target.nfe else None,
        "nfe_per_call": target.nfe, "inputs": list(target.input_names),
        "output": target.output_name, "shapes": target.shapes, "data": target.data,
        "reference": target.reference_is, "tolerance": req.tolerance,
    }
    program = formats.export(target, req.fmt)
    tmp = req.out.with_name(f".{req.out.stem}.tmp-{os.getpid()}{req.out.suffix}")
    try:
        program.save(tmp, meta)
        got = formats.run(req.fmt, tmp, target.inputs, target.input_names)
        one = formats.run(req.fmt, tmp, _first(target), target.input_names)
        error = float(np.abs(got.astype(np.float64) - reference).max())
        meta.update(
            error=error, error_is="max absolute difference from the reference on the data",
            file_vs_torch=float(np.abs(got - in_torch).max()),
            batch_of_one_vs_batch=float(np.abs(one - _first_out(target, got)).max()),
            within_tolerance=error <= req.tolerance)
        if error > req.tolerance and not req.force:
            raise OdecliError(
                f"export refused: max error {error:.3g} against odecli's reference solve "
                f"exceeds --tolerance {req.tolerance:g}; raise --steps (now {req.steps}) or "
                "write it anyway with --force")
        path = req.out
        if error > req.tolerance:
            path = req.out.with_name(f"{req.out.stem}.err{error:.1e}{req.out.suffix}")
        meta["file"] = path.name
        program.save(tmp, meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _record(path, meta)
    return {**meta, "path": str(path)}


def _first(target: targets.Target) -> tuple[torch.Tensor, ...]:
    """The inputs cut to a batch of one (the dynamic batch axis checked)."""
    return tuple(x[:1] if d and 0 in d and d[0] == "batch" else x
                 for x, d in zip(target.inputs, target.dynamic, strict=True))


def _first_out(target: targets.Target, out: np.ndarray) -> np.ndarray:
    return out[:, :1] if target.what == "trajectory" else out[:1]


def _record(path: Path, meta: dict[str, Any]) -> None:
    """Add this file's entry to export.json beside it (one entry per exported file)."""
    from odecli.engine import rundir

    record = path.parent / METADATA
    entries = rundir.read_json(record) if record.is_file() else {}
    entries[path.name] = meta
    rundir.write_json(record, entries)


def summary(meta: dict[str, Any]) -> str:
    """The lines `odecli export` prints."""
    how = (f"{meta['solver']}, {meta['steps']} steps per interval, {meta['nfe_per_call']} "
           "field evaluations per call" if meta["solver"] else "no solve")
    flag = "" if meta["within_tolerance"] else "  (OVER the tolerance: --force)"
    return (f"export: wrote {meta['path']} ({meta['format']}, {meta['what']}; {how})\n"
            f"  max error {meta['error']:.3g} against {meta['reference']}, tolerance "
            f"{meta['tolerance']:g}{flag}\n"
            f"  checked on {meta['data']}; file vs torch {meta['file_vs_torch']:.2g}\n"
            f"  metadata: {Path(meta['path']).parent / METADATA}")
