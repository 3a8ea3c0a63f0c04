"""Reading and checking a user's data file (`system=file`): a CSV with a header, or an NPZ.

The file is checked whole before any training: every problem is one line naming the file,
the row and the column (non-numeric cells, unsorted or repeated times within a trajectory, a
column with no values, a trajectory with fewer than two observed points, a missing or
unreadable file), all reported together with exit 2, nothing written. Empty cells and NaN are
missing observations. The file's size, rows and columns are bounded so a huge file cannot
hang the process or exhaust memory.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from odecli.errors import OdecliError

MAX_BYTES = 200 * 2**20     # the file on disk (and an NPZ's arrays once unpacked)
MAX_ROWS = 1_000_000
MAX_COLUMNS = 512
MAX_PROBLEMS = 20           # lines listed; the rest are counted
MISSING = {"", "nan", "na", "n/a", "null", "none", "-"}
# Datasets shipped with odecli: file in odecli/dynamics/datasets and the credit it carries.
DATASETS = {
    "hare_lynx": ("hare_lynx.csv",
                  "Data: Hudson's Bay Company hare and lynx pelts 1900-1920 (MacLulich 1937; "
                  "Elton & Nicholson 1942), via P. Howard (2009) and B. Carpenter's Stan case "
                  "study"),
}


class DataError(OdecliError):
    """A data file that cannot be trained on: one line per problem."""

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_PROBLEMS])
        more = len(problems) - len(shown)
        if more:
            shown.append(f"... and {more} more")
        head = (f"{name}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the "
                f"data, nothing was trained:")
        super().__init__("\n".join([head, *(f"  {p}" for p in shown)])
                         if len(problems) > 1 else f"{problems[0]}; nothing was trained")
        self.problems = list(problems)


@dataclass
class Trajectory:
    """One trajectory's observations in the file's units (NaN: missing)."""

    name: str
    t: np.ndarray      # (n,) float64, strictly increasing
    y: np.ndarray      # (n, dim) float64

    @property
    def observed(self) -> np.ndarray:
        return ~np.isnan(self.y)


@dataclass
class Table:
    """What a data file holds, checked."""

    source: str                  # the file's name as the user gave it (or the dataset's)
    time: str
    variables: list[str]
    trajectories: list[Trajectory]
    citation: str | None

    def summary(self) -> dict[str, Any]:
        cells = sum(tr.y.size for tr in self.trajectories)
        missing = sum(int(np.isnan(tr.y).sum()) for tr in self.trajectories)
        return {"file": self.source, "trajectories": len(self.trajectories),
                "points": sum(len(tr.t) for tr in self.trajectories),
                "variables": list(self.variables),
                "missing_fraction": missing / max(cells, 1),
                "t_min": min(float(tr.t[0]) for tr in self.trajectories),
                "t_max": max(float(tr.t[-1]) for tr in self.trajectories)}

    def summary_line(self) -> str:
        s = self.summary()
        return (f"data {s['file']}: {s['trajectories']} trajector"
                f"{'y' if s['trajectories'] == 1 else 'ies'}, {s['points']} points, "
                f"{len(s['variables'])} variables ({', '.join(s['variables'])}), "
                f"{100 * s['missing_fraction']:.1f}% missing, {self.time} from "
                f"{s['t_min']:g} to {s['t_max']:g}")


def locate(s: Mapping[str, Any]) -> tuple[Path, str, str | None]:
    """(path, name shown in messages, credit) of the checked `system` node's data."""
    if s["dataset"] is not None:
        name, credit = DATASETS[s["dataset"]]
        path = Path(str(resources.files("odecli.dynamics").joinpath("datasets", name)))
        return path, name, s["citation"] or credit
    if s["path"] is None:
        raise OdecliError("system.path is not set: give the data file, e.g. "
                          "system.path=data.csv (a CSV with a header row, or an NPZ)")
    return Path(s["path"]).expanduser(), s["path"], s["citation"]


def read(s: Mapping[str, Any]) -> Table:
    """Read and check the file named by the checked `system` node; DataError if unusable."""
    path, name, credit = locate(s)
    if not path.is_file():
        raise DataError(name, [f"{name}: no such file" + (
            " (it is a folder)" if path.is_dir() else "")])
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise DataError(name, [f"{name}: {_size(size)} is larger than the {_size(MAX_BYTES)} "
                               f"odecli reads"])
    fmt = s["format"]
    if fmt == "auto":
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in ("csv", "npz"):
            raise DataError(name, [f"{name}: not a CSV or NPZ file (by its name); set "
                                   f"system.format=csv or npz if it is one"])
    header, rows = _npz(path, name) if fmt == "npz" else _csv(path, name)
    return _check(name, header, rows, s, credit)


# ---------------------------------------------------------------------------- readers

def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n:,} bytes"


Rows = Iterator[tuple[int, Sequence[Any]]]


def _csv(path: Path, name: str) -> tuple[list[str], Rows]:
    """The header and the data rows with their line numbers; '#' lines before the header are
    comments."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
        first = handle.read(4096)
    except UnicodeDecodeError:
        raise DataError(name, [f"{name}: not a text CSV file (it is not UTF-8 text)"]) from None
    except OSError as exc:
        raise DataError(name, [f"{name}: cannot be read ({exc.strerror or exc})"]) from None
    if "\x00" in first:
        handle.close()
        raise DataError(name, [f"{name}: not a text CSV file (it holds binary data)"])
    handle.seek(0)
    lines = _numbered(handle, name)
    reader = csv.reader(line for _, line in lines)
    header: list[str] | None = None
    for row in reader:
        if header is None:
            if not row or (row[0].lstrip().startswith("#")):
                continue
            header = [c.strip() for c in row]
            break
    if header is None:
        handle.close()
        raise DataError(name, [f"{name}: no header row (a CSV needs one naming its columns)"])

    def data() -> Rows:
        try:
            for row in reader:
                line = lines.current
                if row and any(c.strip() for c in row):
                    yield line, row
        except csv.Error as exc:
            raise DataError(name, [f"{name}, row {lines.current}: {exc}"]) from None
        except UnicodeDecodeError:
            raise DataError(name, [f"{name}: not a text CSV file (it is not UTF-8 text)"]
                            ) from None
        finally:
            handle.close()
    return header, data()


class _numbered:
    """Lines of a text file with the number of the line last handed out."""

    def __init__(self, handle: io.TextIOBase, name: str) -> None:
        self.handle, self.name, self.current = handle, name, 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for line in self.handle:
            self.current += 1
            if self.current > 2 * MAX_ROWS + 1000:  # data rows are counted by the check
                raise DataError(self.name, [f"{self.name}: more than {MAX_ROWS} rows"])
            yield self.current, line


def _npz(path: Path, name: str) -> tuple[list[str], Rows]:
    """Equal-length 1-D arrays as columns (a 2-D array (n, k) as k columns key1..keyk);
    never unpickles anything."""
    try:
        with zipfile.ZipFile(path) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError):
        raise DataError(name, [f"{name}: not an NPZ file (not a zip archive)"]) from None
    if unpacked > MAX_BYTES:
        raise DataError(name, [f"{name}: its arrays unpack to {_size(unpacked)}, more than "
                               f"the {_size(MAX_BYTES)} odecli reads"])
    columns: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                a = npz[key]
                if a.ndim == 2:
                    columns.update({f"{key}{i + 1}": a[:, i] for i in range(a.shape[1])})
                elif a.ndim == 1:
                    columns[key] = a
                else:
                    raise DataError(name, [f"{name}, column '{key}': an array of shape "
                                           f"{a.shape}; columns must be 1-D (or 2-D: n x k)"])
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(name, [f"{name}: cannot be read as NPZ ({exc})"]) from None
    lengths = {len(a) for a in columns.values()}
    if len(lengths) > 1:
        raise DataError(name, [f"{name}: its arrays have different lengths "
                               f"({', '.join(f'{k}: {len(a)}' for k, a in columns.items())})"])
    n = lengths.pop() if lengths else 0
    if n > MAX_ROWS:
        raise DataError(name, [f"{name}: more than {MAX_ROWS} rows"])
    header = list(columns)
    arrays = [a if a.dtype.kind in "fiub" else a.astype(str) for a in columns.values()]
    return header, ((i + 1, [a[i] for a in arrays]) for i in range(n))


# ---------------------------------------------------------------------------- the check

def _columns(name: str, header: list[str], s: Mapping[str, Any], problems: list[str]
             ) -> tuple[int | None, int, list[int]]:
    """Indices of the trajectory, time and state columns from the system.* keys."""
    if len(header) > MAX_COLUMNS:
        raise DataError(name, [f"{name}: more than {MAX_COLUMNS} columns"])
    seen: dict[str, int] = {}
    for i, col in enumerate(header):
        if not col:
            problems.append(f"{name}, row 1, column {i + 1}: the header names no column")
        elif col in seen:
            problems.append(f"{name}, row 1, column '{col}': named twice in the header")
        seen.setdefault(col, i)

    def find(col: str, key: str) -> int | None:
        if col not in seen:
            problems.append(f"{name}: {key}={col!r} is not a column (columns: "
                            f"{', '.join(header)})")
            return None
        return seen[col]

    traj = find(s["trajectory"], "system.trajectory") if s["trajectory"] is not None else None
    rest = [i for i in range(len(header)) if i != traj]
    if s["time"] is not None:
        time = find(s["time"], "system.time")
    else:
        time = rest[0] if rest else None
    if s["states"] is not None:
        states = [find(c, "system.states") for c in s["states"]]
    else:
        states = [i for i in rest if i != time]
    if time is None or not [i for i in states if i is not None]:
        problems.append(f"{name}: needs a time column and at least one state column "
                        f"(columns: {', '.join(header)})")
        raise DataError(name, problems)
    if problems:
        raise DataError(name, problems)
    if time in states or (traj is not None and traj in states):
        raise DataError(name, [f"{name}: the time or trajectory column is also a state"])
    return traj, time, [i for i in states if i is not None]


def _number(cell: Any) -> float | None:
    """A cell as a float, NaN when missing, None when not a number."""
    if isinstance(cell, (float, int, np.floating, np.integer)) and not isinstance(cell, bool):
        return float(cell)
    text = str(cell).strip()
    if text.lower() in MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def _check(name: str, header: list[str], rows: Rows, s: Mapping[str, Any],
           credit: str | None) -> Table:
    problems: list[str] = []
    traj, time, states = _columns(name, header, s, problems)
    tcol = header[time]
    found: dict[str, tuple[list[float], list[list[float]], list[int]]] = {}
    n_rows = 0
    for line, row in rows:
        n_rows += 1
        if n_rows > MAX_ROWS:
            raise DataError(name, [f"{name}: more than {MAX_ROWS} rows"])
        if len(problems) > 10 * MAX_PROBLEMS:
            break
        if len(row) != len(header):
            problems.append(f"{name}, row {line}: {len(row)} cells for {len(header)} columns")
            continue
        key = "" if traj is None else str(row[traj]).strip()
        if traj is not None and not key:
            problems.append(f"{name}, row {line}, column '{header[traj]}': no trajectory name")
            continue
        tv = _number(row[time])
        if tv is None or not math.isfinite(tv):
            what = ("the time is missing" if tv is not None and math.isnan(tv)
                    else f"{row[time]!r} is not a time (a finite number)")
            problems.append(f"{name}, row {line}, column '{tcol}': {what}")
            continue
        values = []
        for i in states:
            v = _number(row[i])
            if v is None or math.isinf(v):
                problems.append(f"{name}, row {line}, column '{header[i]}': {row[i]!r} is "
                                f"not a number")
                v = math.nan
            values.append(v)
        ts, ys, lines = found.setdefault(key, ([], [], []))
        if ts and tv <= ts[-1]:
            how = "repeats the time" if tv == ts[-1] else "comes before the time"
            where = f" of trajectory '{key}'" if traj is not None else ""
            problems.append(f"{name}, row {line}, column '{tcol}': {tv:g} {how} of row "
                            f"{lines[-1]}{where}; times must increase within a trajectory")
            continue
        ts.append(tv)
        ys.append(values)
        lines.append(line)
    if n_rows == 0:
        problems.append(f"{name}: no data rows after the header")
    variables = [header[i] for i in states]
    trajectories = []
    for key, (ts, ys, lines) in found.items():
        y = np.asarray(ys, dtype=np.float64).reshape(len(ys), len(states))
        seen_rows = (~np.isnan(y)).any(1)
        if seen_rows.sum() < 2:
            label = f"trajectory '{key}'" if traj is not None else "the data"
            problems.append(f"{name}, rows {lines[0]}-{lines[-1]}: {label} has fewer than 2 "
                            f"observed points")
        trajectories.append(Trajectory(key or "1", np.asarray(ts, dtype=np.float64), y))
    if trajectories:
        for j, var in enumerate(variables):
            if all(np.isnan(tr.y[:, j]).all() for tr in trajectories):
                problems.append(f"{name}, column '{var}': no values (every cell is empty)")
    if problems:
        raise DataError(name, problems)
    return Table(source=name, time=tcol, variables=variables, trajectories=trajectories,
                 citation=credit)
