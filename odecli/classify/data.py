"""Images and labels for `odecli classify`: scikit-learn's bundled digits and MNIST.

Digits (1,797 8x8 images) ship inside scikit-learn, so the default needs no download. MNIST
is read from the four standard IDX files (gzipped or not) in `data.dir` or $ODECLI_MNIST_DIR,
else from the cache, else downloaded into the cache and checked by SHA-256. torchvision is not
used: it does not import beside every torch build. Splits are fixed by the seed.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odecli.classify.schema import split_sizes
from odecli.engine.rundir import sha256
from odecli.errors import ConfigError, OdecliError

MNIST_ENV = "ODECLI_MNIST_DIR"
# name -> SHA-256 of the gzipped file as distributed (the same bytes on every mirror).
MNIST_FILES = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_CITATION = ("MNIST: Y. LeCun, C. Cortes, C. J. C. Burges, "
                  "http://yann.lecun.com/exdb/mnist/")
DIGITS_CITATION = ("Digits: UCI Optical Recognition of Handwritten Digits (E. Alpaydin, "
                   "C. Kaynak), as bundled with scikit-learn")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}


@dataclass
class Images:
    """Images (N, 1, H, W) in [0, 1] as float32, labels (N,), and the split's row indices."""

    name: str
    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    citation: str
    n_classes: int = 10


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (LeCun's format: magic 0 0 type ndim, big-endian sizes, then the data),
    from a plain or gzipped file; a malformed file is one clear error."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise OdecliError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise OdecliError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 0
    if len(raw) != head + count * dtype.itemsize:
        raise OdecliError(f"{path}: IDX header says {shape} of {dtype}, but the file holds "
                          f"{len(raw) - head} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=head, count=count).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (gzipped when the name ends in .gz): tests and local conversions."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    a = np.ascontiguousarray(array)
    header = bytes([0, 0, codes[a.dtype], a.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in a.shape)
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + a.tobytes())


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def locate_mnist(d: dict[str, Any]) -> dict[str, Path]:
    """The four MNIST files: data.dir (or $ODECLI_MNIST_DIR) as given, else the cache, else a
    checked download into the cache; one error line saying what to do when none works."""
    given = d["dir"] or os.environ.get(MNIST_ENV)
    if given:
        folder = Path(given).expanduser()
        found = {n: _find(folder, n) for n in MNIST_FILES}
        missing = [n for n, p in found.items() if p is None]
        if missing:
            raise ConfigError(f"MNIST: {folder} lacks {', '.join(missing)} (.gz or plain IDX "
                              f"files); fix data.dir or ${MNIST_ENV}")
        return found  # type: ignore[return-value]
    cache = Path(d["cache_dir"]).expanduser()
    paths: dict[str, Path] = {}
    for name, digest in MNIST_FILES.items():
        path = cache / f"{name}.gz"
        if not (path.is_file() and sha256(path) == digest):
            if not d["download"]:
                raise ConfigError(f"MNIST is not in {cache} and data.download=false; put the "
                                  f"four IDX files in a folder and pass data.dir=FOLDER")
            _download(d["base_url"].rstrip("/") + f"/{name}.gz", path, digest, d["timeout"])
        paths[name] = path
    return paths


def _download(url: str, path: Path, digest: str, timeout: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + f".part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(f"MNIST is unavailable: downloading {url} failed ({reason}); "
                          f"offline, put the four IDX files in a folder and pass "
                          f"data.dir=FOLDER (or set ${MNIST_ENV})") from None
    if sha256(part) != digest:
        part.unlink(missing_ok=True)
        raise ConfigError(f"MNIST: {url} does not match its SHA-256 checksum; try another "
                          f"data.base_url or pass data.dir=FOLDER")
    os.replace(part, path)


def _split(n: int, val_fraction: float, test_fraction: float, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_train, n_val, _ = split_sizes(n, val_fraction, test_fraction)
    return (np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_val]),
            np.sort(order[n_train + n_val:]))


def load(d: dict[str, Any], seed: int) -> Images:
    """The checked data node as images and a seeded train/val/test split."""
    rng = np.random.default_rng(seed)
    if d["name"] == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise OdecliError("classify_data=digits needs scikit-learn: pip install "
                              "scikit-learn (or odecli[classify])") from None
        bunch = load_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None]
        y = bunch.target.astype(np.int64)
        if d["limit"] is not None:
            keep = np.sort(rng.permutation(len(y))[: d["limit"]])
            x, y = x[keep], y[keep]
        train, val, test = _split(len(y), d["val_fraction"], d["test_fraction"], rng)
        return Images("digits", x, y, train, val, test, DIGITS_CITATION)
    if d["name"] != "mnist":
        raise ConfigError(f"unknown dataset '{d['name']}'")
    files = locate_mnist(d)
    xs = [read_idx(files[f"{p}-images-idx3-ubyte"]) for p in ("train", "t10k")]
    ys = [read_idx(files[f"{p}-labels-idx1-ubyte"]) for p in ("train", "t10k")]
    for x_, y_ in zip(xs, ys, strict=True):
        if x_.ndim != 3 or y_.ndim != 1 or len(x_) != len(y_):
            raise OdecliError("MNIST: the image and label files do not match")
    pool = rng.permutation(len(ys[0]))
    if d["limit"] is not None:
        pool = pool[: d["limit"]]
    n_train, n_val, _ = split_sizes(len(pool), d["val_fraction"], 0)
    n_test = len(ys[1]) if d["test_limit"] is None else min(d["test_limit"], len(ys[1]))
    rows = np.concatenate([np.sort(pool[:n_train]), np.sort(pool[n_train:n_train + n_val])])
    x = np.concatenate([xs[0][rows], xs[1][:n_test]]).astype(np.float32)[:, None] / 255.0
    y = np.concatenate([ys[0][rows], ys[1][:n_test]]).astype(np.int64)
    idx = np.arange(len(y))
    return Images("mnist", x, y, idx[:n_train], idx[n_train:n_train + n_val],
                  idx[n_train + n_val:], MNIST_CITATION)
