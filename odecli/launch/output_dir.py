"""Where a run's folder goes, and whether it can go there, settled before Hydra makes it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from odecli.engine.rundir import outputs_root
from odecli.errors import OdecliError
from odecli.launch import overrides as ov
from odecli.paths import resolved
from odecli.registry import Command


def default_hydra_overrides(cmd: Command, user: list[str]) -> list[str]:
    """Run/sweep folders with microseconds (parallel shell loops never collide)."""
    stamp = "${now:%Y-%m-%d}/${now:%H-%M-%S-%f}"
    wanted = {
        "hydra.run.dir": f"${{odecli_outputs:}}/{cmd.name}/{stamp}{cmd.tag}",
        "hydra.sweep.dir": f"${{odecli_outputs:}}/multirun/{stamp}",
        "hydra.sweep.subdir": "${hydra.job.num}",
        "hydra.job.chdir": "false",
        "hydra.job.name": cmd.name.replace("-", "_"),
        "+hydra.callbacks.odecli_sweep._target_": "odecli.launch.sweeps.SweepDirCallback",
    }
    given = ov.keys(user)
    return [f"{k}={v}" for k, v in wanted.items() if k.lstrip("+") not in given]


def static_prefix(path: str) -> Path:
    """The part of a run-dir pattern before its first interpolation."""
    head = path.split("${", 1)[0]
    return resolved(head or ".")


def check_writable(overrides: list[str], multirun: bool) -> None:
    """Fail before any work when the output folder cannot be created or written."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    root = outputs_root()
    for o in overrides:
        if ov.key(o) == key:
            root = static_prefix(ov.parsed_value(o))
    made = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".odecli-write-test-{os.getpid()}"
        try:
            probe.write_bytes(b"\0" * 4096)  # a full disk refuses a block, not an empty file
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    except OSError as exc:
        for p in made:  # what this check created, innermost first
            with contextlib.suppress(OSError):
                p.rmdir()
        reason = exc.strerror or str(exc)
        raise OdecliError(f"cannot write the output folder {root}: {reason}; "
                          f"set ODECLI_OUTPUTS or hydra.run.dir to a writable folder") from exc
