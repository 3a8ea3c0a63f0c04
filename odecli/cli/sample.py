"""`odecli sample RUN --n N --out FILE`: draw points from a trained `cnf` run.

The run is loaded as `odecli.load` loads it (its reported model: the best validation state),
and N base draws are carried from t=T back to the data. Everything is checked before any
work: a bad count, file type or run, an existing target (replaced only with `--overwrite`,
a folder never), an unwritable folder or a disk too small for the file is one `error:` line
and no file. The points are streamed to a temp file in chunks (bounded memory for any N,
with a progress bar) that is renamed onto FILE at the end and removed on any failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import IO

import numpy as np

from odecli.errors import OdecliError, WriteError

SUFFIXES = (".npy", ".csv")
# What sampling may change: how the flow is integrated and where, never the model.
SAMPLE_KEYS = ("solver", "device")
# Bytes per point on disk: two float64 in .npy; a csv row of two '%.18e' numbers is 50.
BYTES_PER_POINT = {".npy": 16, ".csv": 50}
HEADER_BYTES = 4096


def check_request(n: int, out: str, overwrite: bool = False) -> Path:
    """The output path, once the count, file type and target are valid and the file fits."""
    from odecli.launch.claims import holds_run
    from odecli.paths import resolved

    if n < 1:
        raise OdecliError(f"--n must be a positive integer, got {n}")
    path = resolved(out)
    if path.suffix not in SUFFIXES:
        raise OdecliError(f"--out must end in {' or '.join(SUFFIXES)}, got '{out}'")
    if not path.parent.is_dir():
        raise OdecliError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        what = "a run folder" if holds_run(path) else "a folder"
        raise OdecliError(f"{path} is {what}; odecli sample writes a file and never "
                          f"replaces a folder: choose another --out")
    if path.exists() and not overwrite:
        raise OdecliError(f"{path} already exists; choose another --out, or pass "
                          f"--overwrite to replace it")
    probe = path.with_name(f".{path.name}.probe{os.getpid()}")
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise OdecliError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    need = HEADER_BYTES + n * BYTES_PER_POINT[path.suffix]
    free = shutil.disk_usage(path.parent).free
    if need > free:
        raise OdecliError(f"{n} points need about {need / 1e9:.3g} GB in {path.parent}, "
                          f"which has {free / 1e9:.3g} GB free; lower --n or choose another "
                          f"--out")
    return path


def sample_run(run: str, n: int, out: str, seed: int, overrides: list[str],
               overwrite: bool = False, quiet: bool = False) -> Path:
    """Write n model samples of a `cnf` run to `out` (.npy array (n, 2), or .csv x,y)."""
    from odecli import api
    from odecli.engine.schema import RUN
    from odecli.launch import overrides as ov
    from odecli.launch import resume as resume_mod
    from odecli.launch.run_folders import stored_command

    path = check_request(n, out, overwrite)
    RUN.fields["seed"].check(seed, "--seed")
    run_dir = resume_mod.run_folder(run, purpose="to sample from")
    made_by = stored_command(run_dir) or "train"
    if made_by != "cnf":
        raise OdecliError(f"{run_dir} is a '{made_by}' run; odecli sample draws from "
                          "`odecli cnf` runs")
    for o in overrides:
        if "=" not in o or not ov.within(ov.key(o), SAMPLE_KEYS):
            raise OdecliError(f"odecli sample cannot change '{o}'; it takes overrides of "
                              "solver, solver.* and device")
    experiment = api.load(run_dir, overrides).experiment
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            _stream(fh, path.suffix, experiment.sample_chunks(n, seed), n, quiet)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:  # never replace a file that appeared meanwhile
            os.link(tmp, path)
            os.unlink(tmp)
    except FileExistsError:
        raise OdecliError(f"{path} appeared while sampling; the points were not written "
                          f"(pass --overwrite to replace it)") from None
    except OSError as exc:
        raise WriteError.of(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def _stream(fh: IO[bytes], suffix: str, chunks: object, n: int, quiet: bool) -> None:
    """Write the chunks as they come: the .npy header first (the shape is known), or the
    csv header line; a progress bar counts points."""
    from odecli.engine.progress import progress

    if suffix == ".npy":
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (n, 2)})
    else:
        fh.write(b"x,y\n")
    done = 0
    with progress(n, "sample", quiet) as bar:
        for chunk in chunks:  # type: ignore[attr-defined]
            if suffix == ".npy":
                fh.write(np.ascontiguousarray(chunk, dtype="<f8").tobytes())
            else:
                np.savetxt(fh, chunk, delimiter=",")
            done += len(chunk)
            bar.update(done)
