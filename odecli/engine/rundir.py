"""The run folder's files: names, atomic writes, metrics JSON, history CSV, environment.

Everything that lands in a run folder is written atomically (temp file + rename) so a crash
or Ctrl-C never leaves a half-written metrics.json or checkpoint behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import resource
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from odecli.errors import WriteError

METRICS = "metrics.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
TMP = ".tmp"  # the suffix of atomic writes' temp files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target. The file
    gets the mode of a plain `open()` (0644 at umask 022), not mkstemp's 0600, so colleagues
    sharing a cluster filesystem can read and report on the run."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP)
    except OSError as exc:
        raise WriteError.of(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError.of(path, exc) from None
        raise


def remove_stale_temps(folder: Path) -> None:
    """Temp files of atomic writes that a killed process left (`.NAME.XXXX.tmp`): nobody
    else writes here while the folder's claim is held, so they are garbage."""
    with contextlib.suppress(OSError):
        for p in Path(folder).glob(f".*{TMP}"):
            with contextlib.suppress(OSError):
                p.unlink()


def current_umask() -> int:
    """This process's umask: read from /proc on Linux (without changing it), elsewhere set
    and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic JSON with NaN/Inf written as null (strict JSON readers reject NaN)."""
    text = json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, text.encode())


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


class History:
    """history.csv: one row per evaluation, header fixed by the first row."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = list(rows or [])
        # True: `append` leaves the write to the owner's `flush` (the ensemble trainer writes
        # its members' files together, engine/ensemble.py)
        self.defer = False

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        if not self.defer:
            self.flush()

    def flush(self) -> None:
        """Rewrite the whole file atomically (a few hundred rows at most)."""
        if not self.rows:
            return
        fields: list[str] = []
        for row in self.rows:
            fields.extend(k for k in row if k not in fields)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        if not Path(path).exists():
            return []
        with open(path, newline="") as fh:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _parse(text: str) -> Any:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def peak_memory_mb(device: Any = None) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def environment(device: Any = None, dtype: Any = None, threads: int | None = None
                ) -> dict[str, Any]:
    """Library versions and hardware, so a metrics file says what produced it."""
    import hydra
    import torch

    from odecli.numerics.backend import TORCHDIFFEQ_VERSION
    from odecli.version import __version__

    env: dict[str, Any] = {
        "odecli": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchdiffeq": TORCHDIFFEQ_VERSION,
        "hydra": hydra.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": str(device) if device is not None else "cpu",
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else "float32",
        "threads": threads if threads is not None else torch.get_num_threads(),
    }
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def notice(logger: Any, message: str) -> None:
    """A warning the user must see: the run log, and stderr as `note: ...` (the console log
    handler is silenced so the progress bar and summary own the terminal)."""
    logger.warning(message)
    print(f"note: {message}", file=sys.stderr, flush=True)


def outputs_root() -> Path:
    """Absolute outputs folder: $ODECLI_OUTPUTS or ./outputs."""
    return Path(os.environ.get("ODECLI_OUTPUTS", "outputs")).expanduser().resolve()


def sha256(path: Path) -> str:
    """A file's SHA-256, read in blocks (checks downloads and cached data files)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
