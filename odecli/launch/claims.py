"""A run folder is claimed once: no run overwrites another, no two processes share a folder.

A claim is an exclusive `flock` on `<folder>/.odecli.lock`, held until the command ends. The
kernel drops the lock when its process dies, so a crashed run's folder is free again (for
`resume=`) with nothing to clean up, while a live run's folder can never be entered by a
second process. A folder that already holds a run (its config, metrics or checkpoint) is
refused unless the run is resumed, or `--overwrite` moves the old run aside (never deletes).
A run that stopped before its first checkpoint (killed in start-up) has nothing to continue:
a new run starts afresh in its folder, its earlier files kept in `.hydra/before-restart-N/`.
A folder this command created is removed again when the command fails before any training
(bad input, a full disk in Hydra's start-up, Ctrl-C), so no dead folder is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from odecli.engine.rundir import CHECKPOINT, HISTORY, METRICS, remove_stale_temps
from odecli.errors import OdecliError
from odecli.paths import resolved

LOCK = ".odecli.lock"
RUN_FILES = (".hydra/config.yaml", METRICS, CHECKPOINT)


def holds_run(folder: Path) -> bool:
    """True when the folder has the config, metrics or checkpoint of a run."""
    return any((folder / name).exists() for name in RUN_FILES)


def never_trained(folder: Path) -> bool:
    """A run folder without a checkpoint: stopped (or failed) before training saved anything,
    so there is nothing to continue and a run may start afresh in it."""
    return not (folder / CHECKPOINT).exists()


def set_aside_start(folder: Path) -> Path:
    """Keep a never-trained run's files (config, metrics, history) in
    `.hydra/before-restart-N/` before a new run starts in its folder."""
    hydra_dir = folder / ".hydra"
    n = 1
    while (hydra_dir / f"before-restart-{n}").exists():
        n += 1
    dest = hydra_dir / f"before-restart-{n}"
    dest.mkdir(parents=True)
    for f in hydra_dir.glob("*.yaml"):
        shutil.copy2(f, dest / f.name)
    for name in (METRICS, HISTORY):
        if (folder / name).exists():
            (folder / name).replace(dest / name)
    return dest


def sweep_jobs_in(folder: Path) -> list[Path]:
    """Job folders of an earlier sweep (or a run) inside a sweep folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and holds_run(p))


def _finished(folder: Path) -> bool:
    import json

    try:
        return json.loads((folder / METRICS).read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def _lock(folder: Path) -> int:
    """Take the folder's lock or say who holds it; returns the open descriptor."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # held read-only (a flock needs no write access): a run keeps no file open for
        # writing, so its filesystem can still be remounted read-only under it
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OdecliError(f"cannot claim the run folder {folder}: "
                          f"{exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OdecliError(f"{folder} is in use by a running odecli command ({holder}); wait "
                          f"for it to finish or choose another folder") from None
    # who holds it, through a second descriptor: closing that one keeps the lock, which
    # belongs to `fd`'s open file
    with contextlib.suppress(OSError), open(folder / LOCK, "w") as fh:
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
    return fd


def held_by(folder: Path) -> str | None:
    """Who holds the folder's lock ("pid N on HOST"), or None when no live command does.
    Read from /proc/locks on Linux, so looking never takes the lock (a trial lock could make
    a run starting at that instant refuse its own folder); elsewhere a shared trial lock."""
    path = Path(folder) / LOCK
    try:
        st = path.stat()
        text = path.read_text(errors="replace").strip() or "another process"
    except OSError:
        return None
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:
        locks = None
    if locks is not None:
        want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in locks.splitlines():
            parts = line.split()
            if "FLOCK" in parts and any(p.lower() == want for p in parts):
                return text
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return text
    finally:
        os.close(fd)  # closing drops a trial lock we got
    return None


def _aside(folder: Path) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    return folder.with_name(f"{folder.name}.replaced-{stamp}")


@contextlib.contextmanager
def claim(folder: Path, command: str, *, resume: bool = False, overwrite: bool = False,
          sweep: bool = False) -> Iterator[Path]:
    """Hold `folder` for this command; refuse one that holds a run (or, for a sweep, earlier
    jobs) unless resuming it, or move that run aside with `overwrite`."""
    folder = resolved(folder)
    was_empty = not folder.exists() or not any(folder.iterdir())
    fd = _lock(folder)
    failed = False
    try:
        remove_stale_temps(folder)
        earlier = sweep_jobs_in(folder) if sweep else ([folder] if holds_run(folder) else [])
        if earlier and not sweep and never_trained(folder):
            kept = set_aside_start(folder)
            print(f"note: {folder} holds a run that stopped before its first checkpoint "
                  f"(nothing to continue): starting it afresh there (its earlier files are "
                  f"in {kept})", file=sys.stderr, flush=True)
            earlier = []
        if earlier and not resume:
            if not overwrite:
                what = (f"{len(earlier)} job folder(s) of an earlier sweep" if sweep
                        else "a run")
                finished = not sweep and _finished(folder)
                more = " train.niters=<more>" if finished else ""
                way = ("" if sweep else
                       f"continue it with `odecli {command} resume={folder}{more}`, ")
                raise OdecliError(f"{folder} already holds {what}; {way}choose another "
                                  f"{'hydra.sweep.dir' if sweep else 'hydra.run.dir'}, or "
                                  f"pass --overwrite to move it aside to "
                                  f"{folder.name}.replaced-<time>")
            moved = _aside(folder)
            folder.rename(moved)  # our lock moves with it: nobody enters it meanwhile
            new_fd = _lock(folder)
            os.close(fd)
            fd = new_fd
            print(f"note: moved the earlier run(s) in {folder} aside to {moved}",
                  file=sys.stderr, flush=True)
        try:
            yield folder
        except BaseException:
            failed = True
            raise
    finally:
        _tidy(folder, was_empty, failed and not sweep)  # a sweep keeps its failed jobs
        os.close(fd)


@contextlib.contextmanager
def claim_output(folder: Path, command: str, overwrite: bool = False,
                 keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Hold a folder a command writes its results into (`eval --out`), as a run's folder is
    held: never a run folder, one that already holds files only with `overwrite` (the
    command's own files in it are then replaced), a new one only inside an existing folder.
    A folder made here is removed again when the command fails before writing any of `keep`.
    """
    folder = resolved(folder)
    if not folder.parent.is_dir():
        raise OdecliError(f"cannot write {folder}: folder {folder.parent} does not exist")
    if folder.exists() and not folder.is_dir():
        raise OdecliError(f"{folder} is a file, not a folder; choose another --out")

    def check() -> bool:
        if holds_run(folder):
            raise OdecliError(f"{folder} is a run folder; odecli {command} never writes "
                              f"into one: choose another --out")
        names = sorted(p.name for p in folder.iterdir() if p.name != LOCK)
        if names and not overwrite:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise OdecliError(f"{folder} already holds files ({shown}); choose another "
                              f"--out, or pass --overwrite to replace odecli {command}'s "
                              f"files in it")
        return not names

    if folder.exists():
        check()
    was_empty = not folder.exists() or not any(folder.iterdir())
    fd = _lock(folder)
    failed = False
    try:
        check()  # again under the lock: nothing slipped in meanwhile
        remove_stale_temps(folder)
        try:
            yield folder
        except BaseException:
            failed = True
            raise
    finally:
        _tidy(folder, was_empty, failed, keep, quiet=True)
        os.close(fd)


def _tidy(folder: Path, was_empty: bool, failed: bool,
          keep: tuple[str, ...] = (CHECKPOINT, METRICS), quiet: bool = False) -> None:
    """Leave no folder this command made that holds nothing to keep: an empty one (bad
    input), or, when the command failed, one without any of `keep` (a run's: Hydra's
    start-up files only, after a full disk or Ctrl-C before training)."""
    if not was_empty:
        return
    with contextlib.suppress(OSError):
        names = {p.name for p in folder.iterdir()}
        if names <= {LOCK}:
            (folder / LOCK).unlink()
            folder.rmdir()
        elif failed and not any((folder / k).exists() for k in keep):
            shutil.rmtree(folder)
            if quiet:
                return
            print(f"note: removed {folder}: the command stopped before training, so it held "
                  f"nothing to continue", file=sys.stderr, flush=True)
