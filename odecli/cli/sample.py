"""`odecli sample RUN --n N --out FILE`: draw points from a trained `cnf` run.

The run is loaded as `odecli.load` loads it (its reported model: the best validation state),
and N base draws are carried from t=T back to the data. Everything is checked before
anything is written: a bad count, file type or run is one `error:` line and no file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from odecli.errors import OdecliError

SUFFIXES = (".npy", ".csv")
# What sampling may change: how the flow is integrated and where, never the model.
SAMPLE_KEYS = ("solver", "device")


def check_request(n: int, out: str) -> Path:
    """The output path, once the count and file type are valid."""
    if n < 1:
        raise OdecliError(f"--n must be a positive integer, got {n}")
    path = Path(out).expanduser()
    if path.suffix not in SUFFIXES:
        raise OdecliError(f"--out must end in {' or '.join(SUFFIXES)}, got '{out}'")
    if not path.parent.resolve().is_dir():
        raise OdecliError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def sample_run(run: str, n: int, out: str, seed: int, overrides: list[str]) -> Path:
    """Write n model samples of a `cnf` run to `out` (.npy array (n, 2), or .csv x,y)."""
    from odecli import api
    from odecli.launch import overrides as ov
    from odecli.launch import resume as resume_mod
    from odecli.launch.run_folders import stored_command

    path = check_request(n, out)
    if seed < 0:
        raise OdecliError(f"--seed must be an integer >= 0, got {seed}")
    run_dir = resume_mod.run_folder(run)
    made_by = stored_command(run_dir) or "train"
    if made_by != "cnf":
        raise OdecliError(f"{run_dir} is a '{made_by}' run; odecli sample draws from "
                          "`odecli cnf` runs")
    for o in overrides:
        if "=" not in o or not ov.within(ov.key(o), SAMPLE_KEYS):
            raise OdecliError(f"odecli sample cannot change '{o}'; it takes overrides of "
                              "solver, solver.* and device")
    points = api.load(run_dir, overrides).sample(n, seed)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    if path.suffix == ".npy":
        with open(tmp, "wb") as fh:
            np.save(fh, points)
    else:
        np.savetxt(tmp, points, delimiter=",", header="x,y", comments="")
    tmp.replace(path)
    return path
