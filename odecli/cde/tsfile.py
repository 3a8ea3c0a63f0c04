"""Reading UEA/UCR `.ts` files (sktime's text format for the time-series archives).

A file is `#` comments, `@key value` headers (`@problemName`, `@dimensions`, `@classLabel
true 1 2 ...`, `@missing`, `@timeStamps`, ...), then `@data` and one line per case: its
dimensions separated by `:`, each a comma-separated list of numbers (`?` or `NaN` for a missing
value), the class label last. The file is the user's: every malformed line is one error line
naming the file and the line number, and sizes are bounded before anything is allocated.
Timestamped files (`@timeStamps true`, values written as `(t,v)`) are refused: odecli's
series are evenly indexed, with missing points as NaN.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from odecli.errors import OdecliError

MAX_BYTES = 256 * 2**20      # one file, uncompressed
MAX_CASES = 200_000
MAX_LENGTH = 10_000          # points per series
MAX_DIMENSIONS = 1_000
_TRUE, _FALSE = "true", "false"


@dataclass
class TsFile:
    """The cases of one `.ts` file: values[i] is (length_i, dimensions), labels as text."""

    path: Path
    name: str
    dimensions: int
    values: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    classes: list[str] | None = None  # as declared by @classLabel, in its order


def _text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise OdecliError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    if len(raw) > MAX_BYTES:
        raise OdecliError(f"{path} is larger than {MAX_BYTES >> 20} MiB; odecli reads at most "
                          f"that much of a .ts file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OdecliError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _number(text: str, where: str) -> float:
    s = text.strip()
    if s in ("?", "") or s.lower() == "nan":
        return math.nan
    try:
        value = float(s)
    except ValueError:
        raise OdecliError(f"{where}: '{s[:40]}' is not a number") from None
    if math.isinf(value):
        raise OdecliError(f"{where}: infinite value '{s[:40]}'")
    return value


def read_ts(path: Path) -> TsFile:
    """One `.ts` (or `.ts.gz`) file; a classification file (labels) is required."""
    path = Path(path)
    text = _text(path)
    headers: dict[str, str] = {}
    out: TsFile | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path.name} line {number}"
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if out is None:
            if not s.startswith("@"):
                raise OdecliError(f"{where}: expected an @header or @data before the data")
            key, _, value = s[1:].partition(" ")
            key = key.lower()
            if key != "data":
                headers[key] = value.strip()
                continue
            out = _start(path, headers, where)
            continue
        if len(out.values) >= MAX_CASES:
            raise OdecliError(f"{where}: more than {MAX_CASES} cases")
        values, label = _case(s, out, where)
        out.values.append(values)
        out.labels.append(label)
    if out is None:
        raise OdecliError(f"{path.name}: no @data line; not a .ts file")
    if not out.values:
        raise OdecliError(f"{path.name}: no cases after @data")
    return out


def _start(path: Path, headers: dict[str, str], where: str) -> TsFile:
    """Check the headers when @data is reached."""
    if headers.get("timestamps", _FALSE).lower() == _TRUE:
        raise OdecliError(f"{where}: @timeStamps true files are not supported (write the "
                          f"series on an even index with missing points as '?')")
    label = headers.get("classlabel", "").split()
    if not label or label[0].lower() != _TRUE or len(label) < 3:
        raise OdecliError(f"{where}: needs '@classLabel true LABEL LABEL ...' (a "
                          f"classification file with two or more classes)")
    dims = 1 if headers.get("univariate", _FALSE).lower() == _TRUE else None
    if "dimensions" in headers:
        try:
            dims = int(headers["dimensions"])
        except ValueError:
            raise OdecliError(f"{where}: @dimensions '{headers['dimensions']}' is not an "
                              f"integer") from None
    if dims is not None and not 1 <= dims <= MAX_DIMENSIONS:
        raise OdecliError(f"{where}: @dimensions must be in [1, {MAX_DIMENSIONS}]")
    name = headers.get("problemname", path.name.split(".")[0].rsplit("_", 1)[0])
    return TsFile(path, name, dims or 0, classes=label[1:])


def _case(line: str, out: TsFile, where: str) -> tuple[np.ndarray, str]:
    parts = line.split(":")
    label = parts[-1].strip()
    dims = parts[:-1]
    if not dims:
        raise OdecliError(f"{where}: a case needs its values and a class label after ':'")
    if out.dimensions == 0:
        if len(dims) > MAX_DIMENSIONS:
            raise OdecliError(f"{where}: more than {MAX_DIMENSIONS} dimensions")
        out.dimensions = len(dims)
    if len(dims) != out.dimensions:
        raise OdecliError(f"{where}: {len(dims)} dimensions, expected {out.dimensions}")
    if out.classes is not None and label not in out.classes:
        raise OdecliError(f"{where}: class label '{label[:40]}' is not one of the "
                          f"@classLabel values ({' '.join(out.classes)})")
    series = []
    for k, d in enumerate(dims):
        if "(" in d:
            raise OdecliError(f"{where}: dimension {k + 1} holds '(t,v)' pairs; "
                              f"timestamped values are not supported")
        items = d.split(",")
        if len(items) > MAX_LENGTH:
            raise OdecliError(f"{where}: dimension {k + 1} has more than {MAX_LENGTH} points")
        series.append([_number(v, f"{where}, dimension {k + 1}") for v in items])
    lengths = {len(s) for s in series}
    if len(lengths) > 1:
        raise OdecliError(f"{where}: the dimensions have different lengths "
                          f"({', '.join(str(len(s)) for s in series)})")
    values = np.asarray(series, dtype=np.float64).T  # (length, dimensions)
    # trailing missing points are padding in archive files of unequal lengths
    observed = ~np.isnan(values).all(axis=1)
    if not observed.any():
        raise OdecliError(f"{where}: every value is missing")
    return values[: int(np.nonzero(observed)[0][-1]) + 1], label
