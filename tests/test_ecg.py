"""ECG records -> beats -> phase-space paths, and every bad-input case as one clear error."""

from __future__ import annotations

import copy
import functools
import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ECG_DIR

from odecli.errors import ConfigError, OdecliError
from odecli.fields import job_node, to_plain
from odecli.latent import ecg_data as ecg
from odecli.latent.ecg_experiment import last_value_baseline, mean_beat_baseline
from odecli.latent.schema import check_ecg_vae
from odecli.launch.bridge import compose
from odecli.registry import COMMANDS

# ECG_DIR/mitdb/100.*: the first five minutes of MIT-BIH record 100 (samples 0-107,999, both
# leads, the 372 reference labels inside: 367 N, 4 A, 1 rhythm mark); see its NOTICE.md.
EXCERPT = ECG_DIR / "mitdb" / "100"
N_SAMPLES, N_NORMAL, N_ATRIAL = 108_000, 367, 4


@functools.cache
def _ecg_vae_config() -> dict[str, Any]:
    """configs/ecg_vae.yaml composed once, as plain values (the one home of the defaults)."""
    return to_plain(job_node(compose(COMMANDS["ecg-vae"], [])))


def _data(**overrides: Any) -> dict[str, Any]:
    """The `data:` node as ecg_data receives it: the YAML's defaults with `overrides`, checked
    by the schema (check_ecg_vae), so a bad value fails here just as on the command line."""
    cfg = copy.deepcopy(_ecg_vae_config())
    cfg["data"].update(overrides)
    return check_ecg_vae(cfg)["data"]


def _copy_record(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in EXCERPT.parent.glob("100.*"):
        shutil.copy(path, folder / path.name)
        (folder / path.name).chmod(0o644)
    return folder


def _renamed_record(folder: Path, name: str) -> Path:
    """The excerpt as record `name`: files renamed, header rewritten with wfdb (name, files)."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    header = wfdb.rdheader(str(EXCERPT))
    header.record_name, header.file_name = name, [f"{name}.dat"] * header.n_sig
    header.comments = ["a record from another source"]
    header.wrheader(write_dir=str(folder))
    for ext in ("dat", "atr"):
        shutil.copy(EXCERPT.with_suffix(f".{ext}"), folder / f"{name}.{ext}")
    return folder / name


# ---------------------------------------------------------------------------- record 100

def test_record_100_signal_and_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ecg.ENV_DIR, raising=False)
    base = ecg.locate_record(_data(dir=str(ECG_DIR), record="100"))
    assert base == EXCERPT
    sig = ecg.read_signal(base, 0)
    assert (sig.fs, sig.values.shape, sig.lead) == (360.0, (N_SAMPLES,), "MLII")
    assert ecg.read_signal(base, "V5").lead == "V5"
    beats = ecg.load_beats(_data(dir=str(ECG_DIR)))
    # the first normal beat (sample 77) is closer than 0.25 s to the start: its window is dropped
    assert beats.source == "annotations" and beats.record == "100"
    assert beats.paths.shape == (N_NORMAL - 1, 100, 2) and beats.signal_length == N_SAMPLES
    assert beats.t[0] == pytest.approx(-0.25) and beats.t[-1] == pytest.approx(0.45)
    train = beats.paths[beats.split["train"]]
    assert train.min() == pytest.approx(-1.0) and train.max() == pytest.approx(1.0)
    # splits are ordered, disjoint blocks with a beat dropped at each border
    tr, va, te = (beats.split[k] for k in ("train", "val", "test"))
    assert tr.max() + 1 < va.min() and va.max() + 1 < te.min()
    assert len(tr) + len(va) + len(te) == N_NORMAL - 1 - 4
    # the R-peak sits at the window's 0 s mark: x is largest near there on the mean beat
    mean = beats.raw.mean(axis=0)
    assert abs(beats.t[np.argmax(mean)]) < 0.02


def test_excerpt_is_the_start_of_the_published_record() -> None:
    """Same ADC values, names, units and rate as record 100, but not the published files."""
    import wfdb

    header = wfdb.rdheader(str(EXCERPT))
    assert (header.fs, header.sig_len, header.fmt) == (360, N_SAMPLES, ["212", "212"])
    assert (header.sig_name, header.units) == (["MLII", "V5"], ["mV", "mV"])
    assert "ODC-By 1.0" in (EXCERPT.parent / "NOTICE.md").read_text()
    # rewritten files: reported as not matching the full record's published checksums
    assert ecg.verify(EXCERPT) == {"100.hea": False, "100.dat": False, "100.atr": False}


def test_beat_types_and_window_are_configurable() -> None:
    normal = ecg.load_beats(_data(dir=str(ECG_DIR), beat_types=["N"], n_points=50))
    more = ecg.load_beats(_data(dir=str(ECG_DIR), beat_types=["N", "A", "V"], n_points=50,
                                before=0.1, after=0.2))
    assert normal.paths.shape[1] == 50
    # no V beat in the first five minutes; with the shorter window no beat runs off the record
    assert len(more.paths) == N_NORMAL + N_ATRIAL


# ---------------------------------------------------------------------------- attribution

def test_mitdb_excerpt_is_credited_to_mit_bih() -> None:
    assert ecg.is_mitdb(EXCERPT)  # mitdb/100, 360 Hz, MIT-BIH leads (its checksums differ)
    assert ecg.load_beats(_data(dir=str(ECG_DIR))).citation == ecg.LICENSE_NOTICE


def test_other_records_are_not_credited_to_mit_bih(tmp_path: Path) -> None:
    base = _renamed_record(tmp_path / "holter", "holter7")
    beats = ecg.load_beats(_data(dir=str(base.parent), record="holter7"))
    assert beats.paths.shape == (N_NORMAL - 1, 100, 2)  # the same signal, read fine
    assert "MIT-BIH" not in beats.citation and "holter7" in beats.citation
    assert "data.citation" in beats.citation
    # unverified files named 100 outside a mitdb/ folder, or a foreign name inside one: no credit
    copied = _copy_record(tmp_path / "ecgs")
    assert not ecg.is_mitdb(copied / "100")
    assert "MIT-BIH" not in ecg.load_beats(_data(dir=str(copied))).citation
    assert not ecg.is_mitdb(_renamed_record(tmp_path / "mitdb", "holter7"))


def test_published_checksums_identify_mit_bih_anywhere(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _copy_record(tmp_path / "ecgs")
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("100.*")}
    monkeypatch.setitem(ecg.SHA256, ("mitdb", "1.0.0", "100"), sums)
    assert ecg.verify(folder / "100") == dict.fromkeys(sums, True)
    assert ecg.is_mitdb(folder / "100")
    assert ecg.load_beats(_data(dir=str(folder))).citation == ecg.LICENSE_NOTICE


def test_citation_from_the_config_wins(tmp_path: Path) -> None:
    text = "Data: ward 7 Holter study (Doe et al. 2024), CC BY 4.0"
    base = _renamed_record(tmp_path, "holter7")
    for data in ({"dir": str(tmp_path), "record": "holter7"}, {"dir": str(ECG_DIR)}):
        assert ecg.load_beats(_data(**data, citation=text)).citation == text
    assert ecg.attribution(_data(citation=f"  {text}\n"), base) == text
    # an empty or non-text citation is the schema's to refuse (check_ecg_vae), before any read
    for bad in ("", "  ", 7):
        with pytest.raises(ConfigError, match="data.citation"):
            _data(citation=bad)


# ---------------------------------------------------------------------------- detector path

def _synthetic_ecg(fs: float, seconds: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """P-QRS-T complexes as Gaussian bumps at known R-peak times; returns (signal, peaks)."""
    t = np.arange(int(seconds * fs)) / fs
    peaks, now = [], 0.6
    while now < seconds - 0.6:
        peaks.append(now)
        now += rng.uniform(0.75, 0.95)
    sig = np.zeros_like(t)
    for p in peaks:
        for offset, width, height in ((-0.18, 0.025, 0.15), (-0.03, 0.008, -0.1),
                                      (0.0, 0.01, 1.2), (0.03, 0.008, -0.25),
                                      (0.25, 0.045, 0.3)):
            sig += height * np.exp(-0.5 * ((t - p - offset) / width) ** 2)
    sig += 0.01 * rng.standard_normal(t.size)
    return sig, np.round(np.array(peaks) * fs).astype(int)


def test_detector_finds_planted_beats_at_high_rate(tmp_path: Path) -> None:
    """No annotation file: XQRS (after resampling 1 kHz -> 360 Hz) finds the planted peaks."""
    import wfdb

    fs = 1000
    sig, planted = _synthetic_ecg(fs, 40.0, np.random.default_rng(0))
    wfdb.wrsamp("synth", fs=fs, units=["mV"], sig_name=["II"], p_signal=sig[:, None],
                fmt=["16"], write_dir=str(tmp_path))
    base = ecg.locate_record(_data(dir=str(tmp_path), record="synth"))
    signal = ecg.read_signal(base, "II")
    assert signal.annotation_samples is None
    peaks, source = ecg.r_peaks(signal)
    assert source == "xqrs"
    # every planted beat found, within 10 ms, and nothing else
    dist = np.abs(planted[:, None] - peaks[None, :])
    assert (dist.min(axis=1) <= 0.01 * fs).all()
    assert len(peaks) == len(planted)
    beats = ecg.load_beats(_data(dir=str(tmp_path), record="synth", n_points=40))
    assert beats.source == "xqrs" and len(beats.paths) == len(planted)


# ---------------------------------------------------------------------------- transform

def test_phase_space_of_a_sine() -> None:
    t = np.linspace(0.0, 1.0, 2001)
    x = 0.5 * np.sin(2 * np.pi * 2 * t)
    path = ecg.phase_space(x, t)
    assert path.shape == (2001, 2)
    np.testing.assert_allclose(path[:, 0], x)
    expected = 0.5 * 2 * np.pi * 2 * np.cos(2 * np.pi * 2 * t)
    np.testing.assert_allclose(path[1:-1, 1], expected[1:-1], atol=1e-3 * expected.max())
    lo, hi = path.min(axis=0), path.max(axis=0)
    scaled = ecg.scale_paths(path, lo, hi)
    np.testing.assert_allclose(scaled.min(axis=0), [-1, -1])
    np.testing.assert_allclose(scaled.max(axis=0), [1, 1])
    np.testing.assert_allclose(ecg.unscale_paths(scaled, lo, hi), path, atol=1e-12)


def test_baselines() -> None:
    obs = np.arange(12, dtype=float).reshape(1, 6, 2)
    right = np.array([[True, True, True, False, False, False]])
    held = last_value_baseline(obs, right)
    np.testing.assert_allclose(held[0, 3:], [[4, 5]] * 3)
    left = ~right
    held = last_value_baseline(obs, left)
    np.testing.assert_allclose(held[0, :3], [[6, 7]] * 3)
    mean = mean_beat_baseline(np.stack([np.zeros((6, 2)), np.ones((6, 2))]), 3)
    assert mean.shape == (3, 6, 2) and np.all(mean == 0.5)


# ---------------------------------------------------------------------------- downloads

def _mirror(tmp_path: Path, db: str = "mitdb") -> str:
    """A file:// "PhysioNet" holding the record 100 excerpt at <db>/1.0.0/."""
    _copy_record(tmp_path / "mirror" / db / "1.0.0")
    return (tmp_path / "mirror").as_uri()


def _publish_excerpt(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Pretend PhysioNet published the excerpt's sums (the real table is for the full files)."""
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in EXCERPT.parent.glob("100.*")}
    monkeypatch.setitem(ecg.SHA256, ("mitdb", "1.0.0", "100"), sums)
    return sums


def test_download_verifies_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ecg.ENV_DIR, raising=False)
    _publish_excerpt(monkeypatch)
    data = _data(base_url=_mirror(tmp_path), cache_dir=str(tmp_path / "cache"))
    base = ecg.locate_record(data)
    assert base == tmp_path / "cache" / "mitdb" / "1.0.0" / "100"
    assert all(ecg.verify(base).values()) and len(ecg.verify(base)) == 3
    assert ecg.load_beats(data).citation == ecg.LICENSE_NOTICE  # from PhysioNet's mitdb
    # second call: served from the cache, no download needed
    offline = {**data, "base_url": "http://127.0.0.1:9"}  # a checked node, one value changed
    assert ecg.locate_record(offline) == base
    # a cached file that no longer matches is fetched again, not used
    (base.parent / "100.dat").write_bytes(b"\0" * 10)
    with pytest.raises(OdecliError, match="could not download 100.hea"):
        ecg.locate_record(offline)
    assert ecg.locate_record(data) == base and all(ecg.verify(base).values())


def test_download_with_wrong_checksum_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ecg.ENV_DIR, raising=False)
    _publish_excerpt(monkeypatch)
    url = _mirror(tmp_path)
    dat = tmp_path / "mirror" / "mitdb" / "1.0.0" / "100.dat"
    dat.write_bytes(b"\0" + dat.read_bytes()[1:])
    with pytest.raises(OdecliError, match="100.dat does not match its published SHA-256"):
        ecg.locate_record(_data(base_url=url, cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "cache" / "mitdb" / "1.0.0" / "100.dat").exists()


def test_excerpt_is_refused_as_the_published_record(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With the real table: an excerpt served as mitdb 1.0.0 record 100 is not the real one."""
    monkeypatch.delenv(ecg.ENV_DIR, raising=False)
    with pytest.raises(OdecliError, match="100.hea does not match its published SHA-256"):
        ecg.locate_record(_data(base_url=_mirror(tmp_path), cache_dir=str(tmp_path / "c")))


def test_download_from_another_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No published sums known: downloaded unverified, credited to that database, not MIT-BIH."""
    monkeypatch.delenv(ecg.ENV_DIR, raising=False)
    data = _data(base_url=_mirror(tmp_path, "otherdb"), cache_dir=str(tmp_path / "cache"),
                 db="otherdb")
    beats = ecg.load_beats(data)
    assert beats.record == "100" and "MIT-BIH" not in beats.citation
    assert "otherdb" in beats.citation and "data.citation" in beats.citation


def test_failed_download_says_how_to_point_at_a_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ecg.ENV_DIR, raising=False)
    data = {"base_url": "http://127.0.0.1:9", "cache_dir": str(tmp_path), "timeout": 5}
    with pytest.raises(OdecliError, match="data.dir=") as info:
        ecg.locate_record(_data(**data))
    assert "\n" not in str(info.value)
    with pytest.raises(OdecliError, match="data.download=false"):
        ecg.locate_record(_data(**data, download=False))
    # the cache folder and the download address are required (the YAML holds their defaults)
    for key in ("cache_dir", "base_url"):
        with pytest.raises(ConfigError, match=f"data.{key}"):
            _data(**{**data, key: None})


def test_environment_folder_is_a_fallback(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ecg.ENV_DIR, str(ECG_DIR))
    assert ecg.locate_record(_data(dir=None)) == ECG_DIR / "mitdb" / "100"
    # an explicit data.dir wins over the variable
    with pytest.raises(OdecliError, match="not found"):
        ecg.locate_record(_data(dir=str(tmp_path)))


# ---------------------------------------------------------------------------- bad input

def test_missing_record(tmp_path: Path) -> None:
    with pytest.raises(OdecliError, match="record '999' not found"):
        ecg.load_beats(_data(dir=str(tmp_path), record="999"))
    with pytest.raises(OdecliError, match="not a folder"):
        ecg.load_beats(_data(dir=str(tmp_path / "nowhere")))


def test_corrupt_header(tmp_path: Path) -> None:
    folder = _copy_record(tmp_path)
    (folder / "100.hea").write_text("this is not $ a header\n")
    with pytest.raises(OdecliError, match="corrupt"):
        ecg.load_beats(_data(dir=str(folder)))


def test_truncated_signal_file(tmp_path: Path) -> None:
    folder = _copy_record(tmp_path)
    dat = folder / "100.dat"
    dat.write_bytes(dat.read_bytes()[:100_001])
    with pytest.raises(OdecliError, match="corrupt|shorter"):
        ecg.load_beats(_data(dir=str(folder)))


def test_missing_signal_file(tmp_path: Path) -> None:
    folder = _copy_record(tmp_path)
    (folder / "100.dat").unlink()
    with pytest.raises(OdecliError, match="100.dat"):
        ecg.load_beats(_data(dir=str(folder)))


@pytest.mark.parametrize("lead", [2, "V1", "-1"])
def test_lead_that_does_not_exist(lead: int | str) -> None:
    with pytest.raises(OdecliError, match="MLII"):
        ecg.load_beats(_data(dir=str(ECG_DIR), lead=lead))


def test_negative_lead_index_is_the_schemas_to_refuse() -> None:
    with pytest.raises(ConfigError, match="data.lead must be a signal index"):
        _data(dir=str(ECG_DIR), lead=-1)


def test_no_beats_of_the_requested_type() -> None:
    with pytest.raises(OdecliError, match="no beats of type"):
        ecg.load_beats(_data(dir=str(ECG_DIR), beat_types=["Q"]))


def test_no_beats_detected(tmp_path: Path) -> None:
    import wfdb

    flat = np.full(20 * 360, 0.2)  # a disconnected lead: nothing to detect
    wfdb.wrsamp("flat", fs=360, units=["mV"], sig_name=["II"], p_signal=flat[:, None],
                fmt=["16"], write_dir=str(tmp_path))
    with pytest.raises(OdecliError, match="no beats"):
        ecg.load_beats(_data(dir=str(tmp_path), record="flat"))
