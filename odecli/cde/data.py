"""Series and labels for `odecli cde`: JapaneseVowels (shipped), any UEA folder, spirals.

The protocol is the paper's (Kidger et al. 2020, section 4.2): every series of the dataset is
pooled and re-split 70/15/15 by the seed (`data.split=pooled`; `data.split=archive` keeps
the archive's own TRAIN/TEST files, the validation part drawn from TRAIN); `data.drop`
removes that fraction of each series' points at random (seeded); what is left is written on
one shared time grid with NaN for a missing point, so series of unequal lengths and with
gaps need no special case anywhere: the interpolation fills gaps and holds the last value
after a series ends. The times can be a channel of the path (`data.time_channel`), and so can
the cumulative count of observations (`data.mask_channel`), which lets the model see where
points were missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odecli.cde.tsfile import TsFile, read_ts
from odecli.errors import ConfigError, OdecliError

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
VOWELS_FILES = ("JapaneseVowels_TRAIN.ts.gz", "JapaneseVowels_TEST.ts.gz")
VOWELS_CITATION = (
    "Japanese Vowels: M. Kudo, J. Toyama, M. Shimbo, UCI Machine Learning Repository, "
    "doi:10.24432/C5NS47 (CC BY 4.0), via the UEA archive (sktime's .ts files)")
MAX_FILES = 16  # .ts files read from one data.dir


@dataclass
class Series:
    """The dataset after the protocol: values (N, L, D) standardised with the training
    split's statistics, NaN where a point is missing; `t` (L,) the shared grid."""

    name: str
    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mean: np.ndarray      # per dimension, of the observed training values
    std: np.ndarray
    kept: np.ndarray      # points left per series after data.drop
    citation: str | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def path_channels(x: np.ndarray, t: np.ndarray, t_scale: float, time_channel: bool,
                  mask_channel: bool) -> np.ndarray:
    """The channels of the control path: [time], values, [observation count], (N, L, C).

    A point is observed where any of its values is; the time channel is NaN elsewhere too (the
    interpolation fills it back exactly, and holds it after the end, so the CDE's state stops
    there). The count channel rises by one at each observation (scaled by the grid length)."""
    observed = ~np.isnan(x).all(axis=-1)
    parts = []
    if time_channel:
        parts.append(np.where(observed, t[None, :] / t_scale, np.nan)[..., None])
    parts.append(x)
    if mask_channel:
        parts.append((np.cumsum(observed, axis=1) / x.shape[1])[..., None])
    return np.concatenate(parts, axis=-1)


def _stack(cases: list[np.ndarray]) -> np.ndarray:
    length = max(len(c) for c in cases)
    out = np.full((len(cases), length, cases[0].shape[1]), np.nan)
    for i, c in enumerate(cases):
        out[i, : len(c)] = c
    return out


@dataclass
class Raw:
    """A dataset as read: series (length_i, D), labels, and which archive file each came from
    ("train", "test", or None where the file's name says neither)."""

    name: str
    cases: list[np.ndarray]
    labels: list[str]
    classes: list[str]
    parts: list[str | None]
    citation: str | None = None


def archive_part(path: Path) -> str | None:
    """"train" or "test" from a UEA file name (NAME_TRAIN.ts, NAME_TEST.ts.gz), else None."""
    stem = path.name.split(".")[0].upper()
    return "train" if stem.endswith("_TRAIN") else "test" if stem.endswith("_TEST") else None


def _from_files(files: list[TsFile], citation: str | None = None) -> Raw:
    first = files[0]
    classes = list(first.classes or [])
    cases, labels, parts = [], [], []
    for f in files:
        if f.dimensions != first.dimensions:
            raise OdecliError(f"{f.path.name} has {f.dimensions} dimensions, "
                              f"{first.path.name} {first.dimensions}: one dataset per folder")
        classes += [c for c in (f.classes or []) if c not in classes]
        cases += f.values
        labels += f.labels
        parts += [archive_part(f.path)] * len(f.values)
    return Raw(first.name, cases, labels, classes, parts, citation)


def ts_folder(folder: str | Path) -> list[Path]:
    """The `.ts` / `.ts.gz` files of a data.dir (at most MAX_FILES)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.dir={folder} is not a folder")
    found = sorted(p for p in root.iterdir()
                   if p.is_file() and (p.name.endswith(".ts") or p.name.endswith(".ts.gz")))
    if not found:
        raise ConfigError(f"data.dir={folder} holds no .ts or .ts.gz files")
    if len(found) > MAX_FILES:
        raise ConfigError(f"data.dir={folder} holds {len(found)} .ts files; odecli reads at "
                          f"most {MAX_FILES} (one dataset per folder)")
    return found


def spirals(n: int, length: int, noise: float, rng: np.random.Generator
            ) -> tuple[list[np.ndarray], list[str]]:
    """Noisy 2-D spirals of random phase, speed and length; class = turning direction."""
    cases, labels = [], []
    for i in range(n):
        turn = 1.0 if i % 2 == 0 else -1.0
        steps = int(rng.integers(max(2, length // 2), length + 1))
        t = np.arange(steps)
        omega = rng.uniform(2.0, 4.0) * np.pi / length
        r = rng.uniform(0.5, 1.0) + t / length
        angle = rng.uniform(0, 2 * np.pi) + turn * omega * t
        xy = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
        cases.append(xy + noise * rng.standard_normal(xy.shape))
        labels.append("counterclockwise" if turn > 0 else "clockwise")
    return cases, labels


def raw(d: dict[str, Any], seed: int) -> Raw:
    """The data node's series as read, before the protocol."""
    if d["name"] == "japanese_vowels":
        return _from_files([read_ts(DATASETS_DIR / f) for f in VOWELS_FILES], VOWELS_CITATION)
    if d["name"] == "spirals":
        cases, labels = spirals(d["n"], d["length"], d["noise"],
                                np.random.default_rng([seed, 0]))
        return Raw("spirals", cases, labels, ["counterclockwise", "clockwise"],
                   [None] * len(cases))
    if d["name"] == "uea":
        if not d["dir"]:
            raise ConfigError("cde_data=uea needs data.dir=FOLDER (a folder of UEA .ts files)")
        return _from_files([read_ts(p) for p in ts_folder(d["dir"])])
    raise ConfigError(f"unknown dataset '{d['name']}'")


def _draw(rows: np.ndarray, sizes: tuple[int, ...], what: str, rng: np.random.Generator
          ) -> list[np.ndarray]:
    """`rows` shuffled by the seed into held-out parts of `sizes` (in order) and training
    rows (the rest, returned first); each part sorted."""
    if len(rows) - sum(sizes) < 1:
        raise ConfigError(f"impossible split: {len(rows)} {what}leave none for training")
    parts = np.split(rng.permutation(rows), np.cumsum(sizes))
    return [np.sort(parts[-1]), *(np.sort(p) for p in parts[:-1])]


def split(n: int, val_fraction: float, test_fraction: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test rows; each held-out part has at least one series."""
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * val_fraction)))
    train, val, test = _draw(np.arange(n), (n_val, n_test), "series ", rng)
    return train, val, test


def archive_split(data: Raw, val_fraction: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The archive's own split: TEST file's series for test, TRAIN's re-split by the seed into
    training and val_fraction (of TRAIN) validation series."""
    parts = np.array([p or "" for p in data.parts])
    test, pool = np.nonzero(parts == "test")[0], np.nonzero(parts == "train")[0]
    if not len(test) or not len(pool):
        raise ConfigError(f"data.split=archive needs the archive's NAME_TRAIN and NAME_TEST "
                          f".ts files; {data.name} has {len(pool)} TRAIN and {len(test)} TEST "
                          f"series: use data.split=pooled")
    n_val = max(1, int(round(len(pool) * val_fraction)))
    train, val = _draw(pool, (n_val,), "TRAIN series ", rng)
    return train, val, test


def drop_points(cases: list[np.ndarray], rate: float, rng: np.random.Generator
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Each series with int(rate * its observed points) of them set to NaN, chosen at random;
    a series left with fewer than 2 points is an error (a path needs two)."""
    out, kept = [], np.zeros(len(cases), dtype=np.int64)
    for i, c in enumerate(cases):
        c = c.copy()
        seen = np.nonzero(~np.isnan(c).all(axis=1))[0]
        gone = rng.choice(seen, size=int(rate * len(seen)), replace=False) if rate else []
        c[gone] = np.nan
        kept[i] = len(seen) - len(gone)
        if kept[i] < 2:
            raise ConfigError(f"series {i + 1} ({len(seen)} points) keeps {kept[i]} after "
                              f"data.drop={rate:g}; a path needs at least 2: lower data.drop")
        out.append(c)
    return out, kept


def thin(x: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Training augmentation: each series (standardised, NaN missing) loses int(rate * n) of
    its n observed points at random, keeping at least 2."""
    x = x.copy()
    for series in x:
        seen = np.nonzero(~np.isnan(series).all(axis=1))[0]
        k = min(int(rate * len(seen)), len(seen) - 2)
        if k > 0:
            series[rng.choice(seen, size=k, replace=False)] = np.nan
    return x


def load(d: dict[str, Any], seed: int) -> Series:
    """The checked data node through the protocol: drop, split, standardise."""
    data = raw(d, seed)
    name, classes = data.name, data.classes
    if len(classes) < 2:
        raise OdecliError(f"{name}: {len(classes)} class; classification needs two or more")
    cases, kept = drop_points(data.cases, d["drop"], np.random.default_rng([seed, 1]))
    x = _stack(cases)
    y = np.array([classes.index(lab) for lab in data.labels], dtype=np.int64)
    rng = np.random.default_rng([seed, 2])
    train, val, test = (archive_split(data, d["val_fraction"], rng) if d["split"] == "archive"
                        else split(len(y), d["val_fraction"], d["test_fraction"], rng))
    with np.errstate(all="ignore"):
        flat = x[train].reshape(-1, x.shape[-1])
        mean = np.nanmean(flat, axis=0)
        std = np.nanstd(flat, axis=0)
    mean = np.nan_to_num(mean)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    x = (x - mean) / std
    t = np.arange(x.shape[1], dtype=np.float64)
    return Series(name, t, x, y, classes, train, val, test, mean, std, kept,
                  data.citation)
