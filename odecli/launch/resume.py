"""`odecli <command> resume=<run folder>`: continue a run in its own folder.

The bridge asks this module for the overrides that rebuild the stored run (the folder's
`.hydra/overrides.yaml`, then the user's changes), checks the result against the stored
config and checkpoint *before* Hydra writes anything, backs up the folder's `.hydra` files,
and then runs the job with `hydra.run.dir` pointing at the same folder. The job restores the
checkpoint (model, optimiser, schedule, RNG states, counters, history) and trains on.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odecli.engine.rundir import CHECKPOINT
from odecli.errors import CheckpointError, OdecliError
from odecli.launch.overrides import key, quote, value
from odecli.paths import resolved


def target(overrides: list[str]) -> str | None:
    """The folder named by a `resume=` override, or None."""
    found = value(overrides, "resume")
    return None if found in (None, "", "null", "None") else found


def run_folder(value: str, need_checkpoint: bool = True, purpose: str = "to resume from"
               ) -> Path:
    """The run folder behind a path, or a one-line error saying why it is not one."""
    path = resolved(value)
    if not path.exists():
        raise OdecliError(f"{value} does not exist")
    if not path.is_dir() or not (path / ".hydra" / "config.yaml").is_file():
        raise OdecliError(f"{value} is not a run folder (no .hydra/config.yaml)")
    if need_checkpoint and not (path / CHECKPOINT).is_file():
        raise CheckpointError(f"{value} has no {CHECKPOINT} {purpose}: the run stopped before "
                              f"its first checkpoint (`odecli <command> resume={value}` "
                              f"starts it afresh)")
    return path


def never_trained(value: str) -> Path | None:
    """The folder behind `resume=` when it holds no checkpoint but is (or was becoming) a run
    folder: killed before its first checkpoint, or during start-up; None otherwise."""
    from odecli.launch.claims import LOCK

    path = resolved(value)
    if not path.is_dir() or (path / CHECKPOINT).exists():
        return None
    odecli_made = (path / ".hydra").is_dir() or (path / LOCK).exists()
    return path if odecli_made or not any(path.iterdir()) else None


def restart_overrides(run_dir: Path, user: list[str]) -> list[str]:
    """A fresh run in a never-trained folder: its stored overrides (where Hydra got to write
    them) with the user's on top, into the same folder, without `resume=`."""
    stored = (stored_overrides(run_dir)
              if (run_dir / ".hydra" / "overrides.yaml").is_file() else [])
    mine = [o for o in user if key(o) not in ("resume", "hydra.run.dir")]
    keys = {key(o) for o in mine}
    base = [o for o in stored if key(o) not in keys and key(o) != "resume"]
    return base + mine + [f"hydra.run.dir={quote(str(run_dir))}"]


def stored_overrides(run_dir: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError) as exc:
        raise OdecliError(f"{run_dir}/.hydra/overrides.yaml is unreadable: {exc}") from None
    return [str(o) for o in data]


def merged_overrides(run_dir: Path, user: list[str]) -> list[str]:
    """The stored run's overrides with the user's on top (same key: the user's wins)."""
    mine = [o for o in user if key(o) != "resume"]
    keys = {key(o) for o in mine}
    base = [o for o in stored_overrides(run_dir) if key(o) not in keys and key(o) != "resume"]
    return base + mine + [f"resume={quote(str(run_dir))}"]


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The run folder's checkpoint, checked to belong to that folder's command and run."""
    from odecli.engine.checkpoint import check_belongs, read
    from odecli.launch.run_folders import stored_command

    state = read(run_dir / CHECKPOINT)
    check_belongs(state, stored_command(run_dir), run_dir)
    return state


def check(run_dir: Path, composed: Any, given: Sequence[str] | None = None,
          state: dict[str, Any] | None = None) -> None:
    """Refuse a resume whose config or checkpoint does not match, before anything is written.
    `given`: the overrides `composed` came from; a key the run's config lacks (odecli gained it
    later) and none of them sets is taken at its default. `state`: the checkpoint, where the
    caller has read it (and checked it belongs to the folder) already."""
    from omegaconf import OmegaConf, open_dict

    from odecli.engine import rundir as runs
    from odecli.engine.checkpoint import check_compatible

    keys = None if given is None else [key(o) for o in given]
    stored = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    composed = composed.copy()
    with open_dict(composed):
        composed.pop("hydra", None)
    check_compatible(OmegaConf.to_container(stored, resolve=False),
                     OmegaConf.to_container(composed, resolve=False), f"resume of {run_dir}",
                     given_keys=keys)
    if state is None:
        state = read_checkpoint(run_dir)
    check_compatible(state["config"], OmegaConf.to_container(composed, resolve=True),
                     f"checkpoint {run_dir / CHECKPOINT}", given_keys=keys)
    done, niters = int(state["iteration"]), int(composed.train.niters)
    if done > niters:
        raise CheckpointError(f"the checkpoint in {run_dir} is at iteration {done}, beyond "
                              f"train.niters={niters}; raise train.niters to resume")
    status = None
    if (run_dir / runs.METRICS).is_file():
        status = runs.read_json(run_dir / runs.METRICS).get("status")
    if done == niters and status == "ok":
        raise OdecliError(f"{run_dir} already finished its {niters} iterations; raise "
                          f"train.niters to train further")


def backup_hydra_files(run_dir: Path) -> Path:
    """Keep the folder's previous .hydra files (Hydra rewrites them for the resumed job)."""
    hydra_dir = run_dir / ".hydra"
    n = 1
    while (hydra_dir / f"before-resume-{n}").exists():
        n += 1
    dest = hydra_dir / f"before-resume-{n}"
    dest.mkdir()
    for f in hydra_dir.glob("*.yaml"):
        shutil.copy2(f, dest / f.name)
    return dest
