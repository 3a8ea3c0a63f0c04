"""ECG records (WFDB) -> heartbeats -> 2-D phase-space paths for the latent-ODE VAE.

Every way of getting a record (a local folder, `ODECLI_ECG_DIR`, the download cache, a fresh
PhysioNet download verified by SHA-256) ends in the same reader, and every failure a user can
cause (missing or corrupt files, a lead that does not exist, no beats, no network) becomes one
`OdecliError` line. The package holds no ECG data: it is read from where the user keeps it (the
tests carry a five-minute excerpt of MIT-BIH record 100 under tests/data/mitdb, with its notice).
Whatever is read is credited by `attribution`: MIT-BIH's citation only for MIT-BIH records.
`data` is always the `data:` node as odecli.latent.schema.ECG_DATA checked it (every key, in
range; defaults only in configs/ecg_vae.yaml): nothing here repeats a default or a range rule.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odecli.engine.rundir import atomic_write_bytes, sha256
from odecli.errors import OdecliError, one_line

ENV_DIR = "ODECLI_ECG_DIR"  # the records' folder when data.dir is null
DETECTOR_FS = 360.0  # XQRS is tuned for MIT-BIH rates and misses peaks well above this
LICENSE_NOTICE = (  # MIT-BIH's citation: credited only for MIT-BIH records (attribution)
    "Data: MIT-BIH Arrhythmia Database (Moody & Mark 2001; Goldberger et al. 2000), "
    "PhysioNet, ODC-By 1.0"
)
MITDB_RECORDS = frozenset(  # MIT-BIH's 48 records: 360 Hz, 650,000 samples, these leads
    "100 101 102 103 104 105 106 107 108 109 111 112 113 114 115 116 117 118 119 121 122 123 "
    "124 200 201 202 203 205 207 208 209 210 212 213 214 215 217 219 220 221 222 223 228 230 "
    "231 232 233 234".split())
MITDB_LEADS = frozenset({"MLII", "V1", "V2", "V4", "V5"})
# Published PhysioNet checksums, keyed by (database, version, record); files without an entry
# are downloaded unverified.
SHA256: dict[tuple[str, str, str], dict[str, str]] = {
    ("mitdb", "1.0.0", "100"): {
        "100.hea": "60ebc904c7bf3e04d142638d3fd5c903e8dc9f10f1ea3264e07926aa089ee75e",
        "100.dat": "b2ea3c250e56e48f4b7b90697832b8ecd1afa1e0bb31f2dcfea4ed6e1075a639",
        "100.atr": "8d8a5349fb16638ebbf649f1779d12e96d91b736b2aafe59db43719ae583d471",
    },
}
_POINT_AT = (
    "put the WFDB files ({files}) in a folder and pass data.dir=/path/to/folder "
    f"(or set {ENV_DIR})"
)


@dataclass
class Signal:
    """One lead of one record, in physical units."""

    name: str
    lead: str
    fs: float
    values: np.ndarray  # (n,)
    annotation_samples: np.ndarray | None  # R-peak sample indices from the reference labels
    annotation_symbols: np.ndarray | None


@dataclass
class Beats:
    """Heartbeat windows and their phase-space paths, split by beat order."""

    t: np.ndarray  # (n_points,) seconds relative to the R-peak
    raw: np.ndarray  # (n_beats, n_points) lead values in physical units
    paths: np.ndarray  # (n_beats, n_points, 2) (x, x') scaled with the training range
    peaks: np.ndarray  # (n_beats,) R-peak sample index in the original record
    split: dict[str, np.ndarray]  # "train"/"val"/"test" -> beat indices
    scale: tuple[np.ndarray, np.ndarray]  # per-channel (lo, hi) of the training paths
    source: str  # "annotations" or "xqrs"
    fs: float
    signal_length: int
    record: str
    lead: str
    citation: str  # credit for the data in metrics.json and every figure (see `attribution`)


# ---------------------------------------------------------------------------- locating files

def locate_record(data: Mapping[str, Any]) -> Path:
    """Find the record's base path (no extension): data.dir, $ODECLI_ECG_DIR, cache, download.

    `data` is the checked `data:` node (see the module docstring). An explicit folder is never
    second-guessed: if the record is not there, that is an error, not a reason to go online.
    """
    return _locate(data)[0]


def _locate(data: Mapping[str, Any]) -> tuple[Path, str | None]:
    """locate_record, and the PhysioNet database when the record came from its download cache."""
    record, db = data["record"], data["db"]
    explicit, source = data["dir"], "data.dir"
    if explicit in (None, ""):
        explicit, source = os.environ.get(ENV_DIR) or None, ENV_DIR
    if explicit is not None:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise OdecliError(f"{source} '{folder}' is not a folder")
        for candidate in (folder / record, folder / db / record):
            if _inside(folder, candidate) and candidate.with_suffix(".hea").is_file():
                return candidate, None
        raise OdecliError(
            f"record '{record}' not found in {folder} (looked for {record}.hea there and in "
            f"{db}/); check data.record or data.dir")
    return _cached_or_download(data, record, db), db


def _cached_or_download(data: Mapping[str, Any], record: str, db: str) -> Path:
    """The record from the download cache, downloading (and verifying) what is missing."""
    version, annotation = data["db_version"], data["annotation"]
    names = [f"{record}.{ext}" for ext in ("hea", "dat", annotation) if ext]
    cache = Path(data["cache_dir"]).expanduser() / db / version
    known = SHA256.get((db, version, record), {})
    if all((cache / n).is_file() for n in names[:2]) and all(
            sha256(cache / n) == known[n] for n in names if n in known and (cache / n).is_file()):
        return cache / record
    if not data["download"]:
        raise OdecliError(f"record '{record}' is not cached and data.download=false; "
                          + _POINT_AT.format(files=", ".join(names)))
    base, timeout = data["base_url"].rstrip("/"), data["timeout"]
    cache.mkdir(parents=True, exist_ok=True)
    for name in names:
        url = f"{base}/{db}/{version}/{name}"
        try:
            payload = _fetch(url, timeout)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            if name == names[-1] and annotation and len(names) == 3 and _is_not_found(exc):
                break  # records without reference labels: fall back to the detector
            reason = getattr(exc, "reason", None) or exc
            raise OdecliError(
                f"could not download {name} from {url} ({reason}); offline? "
                + _POINT_AT.format(files=", ".join(names))) from None
        digest = hashlib.sha256(payload).hexdigest()
        if name in known and digest != known[name]:
            raise OdecliError(
                f"downloaded {name} does not match its published SHA-256 (got {digest[:12]}..., "
                f"expected {known[name][:12]}...); not using it")
        target = cache / name
        if not _inside(cache, target):
            raise OdecliError(f"data.record '{record}' would be written outside the cache "
                              f"{cache}; use a plain record name")
        target.parent.mkdir(parents=True, exist_ok=True)  # records in a sub-folder (a/b)
        atomic_write_bytes(target, payload)
    return cache / record


def _inside(folder: Path, path: Path) -> bool:
    """True when `path` resolves inside `folder`: a name from the config (checked to be plain
    by the schema) must still never reach outside its folder, e.g. through a link."""
    return path.resolve().is_relative_to(folder.resolve())


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http/file)
        return response.read()


def _is_not_found(exc: BaseException) -> bool:
    return (isinstance(exc, urllib.error.HTTPError) and exc.code == 404) or isinstance(
        exc, FileNotFoundError) or "No such file" in str(getattr(exc, "reason", ""))


def verify(base: Path, db: str = "mitdb", version: str = "1.0.0") -> dict[str, bool]:
    """Which of a record's files match the published checksums (files we know sums for)."""
    known = SHA256.get((db, version, base.name), {})
    return {n: (base.parent / n).is_file() and sha256(base.parent / n) == s
            for n, s in known.items()}


def is_mitdb(base: Path) -> bool:
    """Whether a local record is recognisably MIT-BIH's, so that crediting MIT-BIH is honest.

    Either its files match PhysioNet's published SHA-256 sums (proof), or the user keeps it as
    `mitdb/<record>` (the database's name: their statement of the source) and its header fits
    an MIT-BIH record (one of the 48 names, 360 Hz, at most 650,000 samples, MIT-BIH leads):
    an excerpt kept as mitdb/100 counts; mitdb/foo, or an unverified 100 elsewhere, does not.
    """
    import wfdb

    sums = verify(base)
    if sums and all(sums.values()):
        return True
    if base.parent.name != "mitdb" or base.name not in MITDB_RECORDS:
        return False
    try:
        head = wfdb.rdheader(str(base))
    except Exception:  # unreadable header: nothing to recognise
        return False
    return (float(head.fs) == 360.0 and 0 < (head.sig_len or 0) <= 650_000
            and bool(head.sig_name) and set(head.sig_name) <= MITDB_LEADS)


def attribution(data: Mapping[str, Any], base: Path, physionet_db: str | None = None) -> str:
    """The text that credits the data: data.citation if set, else derived from the record.

    MIT-BIH's citation (LICENSE_NOTICE) goes only to MIT-BIH records: downloaded or cached from
    PhysioNet's `mitdb`, or local ones that `is_mitdb` recognises. Any other record is named,
    with a note to set data.citation, rather than credited to a database it may not be from.
    (The schema has already refused an empty or non-text data.citation.)
    """
    citation = data["citation"]
    if citation is not None:
        return citation.strip()
    if physionet_db == "mitdb" or (physionet_db is None and is_mitdb(base)):
        return LICENSE_NOTICE
    if physionet_db:
        return (f"Data: PhysioNet database '{physionet_db}', record {base.name} "
                "(set data.citation to the database's citation)")
    return f"Data: WFDB record {base.name} (source not recorded; set data.citation)"


# ---------------------------------------------------------------------------- reading

def read_signal(base: Path, lead: int | str = 0, annotation: str | None = "atr") -> Signal:
    """Read one lead (index or name) and, when present, the reference beat labels."""
    import wfdb

    if not base.with_suffix(".hea").is_file():
        raise OdecliError(f"record header {base.with_suffix('.hea')} does not exist")
    try:
        record = wfdb.rdrecord(str(base))
    except FileNotFoundError as exc:
        raise OdecliError(f"record '{base.name}' is incomplete: {exc.filename} is missing"
                          ) from None
    except Exception as exc:  # wfdb raises many kinds on malformed files
        raise OdecliError(
            f"cannot read record '{base.name}' in {base.parent}: the header or signal file is "
            f"corrupt ({type(exc).__name__}: {one_line(exc, 160)})") from None
    names = list(record.sig_name or [])
    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[0] == 0 or not names:
        raise OdecliError(f"record '{base.name}' holds no signal samples")
    index = _lead_index(names, lead, base.name)
    values = np.asarray(signal[:, index], dtype=np.float64)
    if record.sig_len and values.shape[0] != record.sig_len:
        raise OdecliError(f"record '{base.name}': signal file is shorter than its header says")
    if not np.isfinite(values).any():
        raise OdecliError(f"record '{base.name}': lead {names[index]} has no valid samples")
    if np.isnan(values).any():  # gaps in the recording: interpolate so filters stay finite
        good = np.isfinite(values)
        values = np.interp(np.arange(values.size), np.flatnonzero(good), values[good])
    samples = symbols = None
    if annotation:
        ann_path = base.parent / f"{base.name}.{annotation}"
        if ann_path.is_file():
            try:
                ann = wfdb.rdann(str(base), annotation)
            except Exception as exc:
                raise OdecliError(
                    f"cannot read annotation file {ann_path.name}: the file is corrupt "
                    f"({type(exc).__name__}: {one_line(exc, 160)})") from None
            samples = np.asarray(ann.sample, dtype=np.int64)
            symbols = np.asarray(ann.symbol)
    return Signal(name=base.name, lead=names[index], fs=float(record.fs), values=values,
                  annotation_samples=samples, annotation_symbols=symbols)


def _lead_index(names: list[str], lead: int | str, record: str) -> int:
    if isinstance(lead, str) and not lead.lstrip("-").isdigit():
        if lead not in names:
            raise OdecliError(
                f"lead '{lead}' is not in record '{record}'; it has: {', '.join(names)}")
        return names.index(lead)
    index = int(lead)
    if not 0 <= index < len(names):
        raise OdecliError(
            f"lead {index} does not exist in record '{record}'; it has {len(names)} "
            f"lead(s): " + ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return index


# ---------------------------------------------------------------------------- beats

def r_peaks(sig: Signal, beat_types: Sequence[str] | None = ("N",), use_annotations: bool = True
            ) -> tuple[np.ndarray, str]:
    """R-peak sample indices: reference labels when present, otherwise the XQRS detector."""
    if use_annotations and sig.annotation_samples is not None:
        keep = np.ones(sig.annotation_samples.size, dtype=bool)
        if beat_types:
            keep = np.isin(sig.annotation_symbols, list(beat_types))
        return sig.annotation_samples[keep], "annotations"
    return detect_peaks(sig.values, sig.fs), "xqrs"


def detect_peaks(values: np.ndarray, fs: float) -> np.ndarray:
    """XQRS at 360 Hz (resampling first when needed), peaks moved to the local extremum."""
    import logging

    from wfdb import processing

    x = np.asarray(values, dtype=np.float64)
    rate = fs
    if abs(fs - DETECTOR_FS) > 1e-6:
        x, _ = processing.resample_sig(x, fs, DETECTOR_FS)
        rate = DETECTOR_FS
    level = logging.getLogger().level
    try:
        found = processing.xqrs_detect(sig=x, fs=rate, verbose=False)
    except Exception as exc:  # XQRS fails on flat or very short signals
        raise OdecliError(
            f"the QRS detector failed on this record ({one_line(exc, 160)})") from None
    finally:
        logging.getLogger().setLevel(level)
    if len(found) == 0:
        return np.zeros(0, dtype=np.int64)
    radius = int(round(0.05 * rate))
    found = processing.correct_peaks(x, np.asarray(found), search_radius=radius,
                                     smooth_window_size=int(round(0.15 * rate)),
                                     peak_dir="compare")
    peaks = np.unique(np.round(np.asarray(found) * fs / rate).astype(np.int64))
    return peaks[(peaks >= 0) & (peaks < len(values))]


def phase_space(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(x, dx/dt) of each row: the seed's 2-D path; x has shape (..., n), t shape (n,)."""
    x = np.asarray(x, dtype=np.float64)
    return np.stack([x, np.gradient(x, np.asarray(t, dtype=np.float64), axis=-1)], axis=-1)


def scale_paths(paths: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map each channel's [lo, hi] to [-1, 1] (lo, hi from the training beats only)."""
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return 2.0 * (paths - lo) / span - 1.0


def unscale_paths(paths: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Inverse of scale_paths (back to mV and mV/s)."""
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (np.asarray(paths) + 1.0) / 2.0 * span + lo


def split_indices(n: int, fractions: Sequence[float], gap: int = 1) -> dict[str, np.ndarray]:
    """Contiguous train/val/test blocks by beat order, `gap` beats dropped at each border.

    Neighbouring windows can overlap in time; dropping the border beats keeps every sample of a
    held-out beat out of training. `fractions`: three, >= 0, not all zero (the schema's rule).
    """
    total = float(sum(fractions))
    a = int(round(n * fractions[0] / total))
    b = int(round(n * (fractions[0] + fractions[1]) / total))
    return {
        "train": np.arange(0, max(a - gap, 0)),
        "val": np.arange(min(a + gap, n), max(b - gap, a)),
        "test": np.arange(min(b + gap, n), n),
    }


def extract_beats(sig: Signal, peaks: np.ndarray, before: float, after: float, n_points: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows [peak - before, peak + after] s, linearly resampled to n_points each.

    Returns (t relative to the peak, beats (n, n_points), the peaks kept); windows that run
    off either end of the record are dropped.
    """
    t = np.linspace(-before, after, n_points)
    lo, hi = peaks - before * sig.fs, peaks + after * sig.fs
    keep = (lo >= 0) & (hi <= len(sig.values) - 1)
    peaks = peaks[keep]
    grid = np.arange(len(sig.values), dtype=np.float64)
    sample_at = peaks[:, None] + t[None, :] * sig.fs
    beats = np.interp(sample_at.ravel(), grid, sig.values).reshape(sample_at.shape)
    return t, beats, peaks


def load_beats(data: Mapping[str, Any]) -> Beats:
    """The whole pipeline of `data.*`: locate, read, find R-peaks, cut, transform, split.

    Only what the record itself can tell is refused here: the schema checked the config.
    """
    base, physionet_db = _locate(data)
    annotation = data["annotation"] or None
    sig = read_signal(base, data["lead"], annotation)
    beat_types = data["beat_types"]
    peaks, source = r_peaks(sig, list(beat_types) if beat_types else None,
                            use_annotations=annotation is not None)
    if len(peaks) == 0:
        kinds = f" of type(s) {', '.join(beat_types)}" if source == "annotations" else ""
        raise OdecliError(f"no beats{kinds} found in record '{sig.name}' ({source})")
    t, raw, peaks = extract_beats(sig, np.sort(peaks), data["before"], data["after"],
                                  data["n_points"])
    raw, peaks = raw[:data["max_beats"]], peaks[:data["max_beats"]]  # null: every beat
    split = split_indices(len(raw), data["split"])
    if min(len(v) for v in split.values()) < 1:
        raise OdecliError(
            f"record '{sig.name}' has only {len(raw)} complete beat window(s); need enough for "
            "train, validation and test (check data.before/after or data.beat_types)")
    paths = phase_space(raw, t)
    train = paths[split["train"]]
    lo, hi = train.min(axis=(0, 1)), train.max(axis=(0, 1))
    return Beats(t=t, raw=raw, paths=scale_paths(paths, lo, hi), peaks=peaks, split=split,
                 scale=(lo, hi), source=source, fs=sig.fs, signal_length=len(sig.values),
                 record=sig.name, lead=sig.lead, citation=attribution(data, base, physionet_db))

