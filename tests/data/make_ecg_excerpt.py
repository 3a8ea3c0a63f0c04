"""Write the test excerpt of MIT-BIH record 100 (tests/data/mitdb/) from a full copy of it.

    python tests/data/make_ecg_excerpt.py /path/to/folder/with/100.hea [--seconds 300]

The tests need a real ECG that every clone has, and the repository must not carry the whole
record: this keeps the first few minutes of both leads (format 212, the original ADC values,
names, units and 360 Hz, so the .dat is the original's first bytes) and the reference
annotations inside them, and writes next to them the notice that ODC-By 1.0 asks for. The
source is checked against PhysioNet's published SHA-256 sums first, so the excerpt is provably
cut from the published record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from odecli.latent import ecg_data

RECORD = "100"
HERE = Path(__file__).resolve().parent
NOTICE = """\
# MIT-BIH Arrhythmia Database, record 100: an excerpt for the odecli tests

`100.hea`, `100.dat` and `100.atr` here are an EXCERPT, not the whole record:
- source: MIT-BIH Arrhythmia Database v1.0.0, record 100
  (https://physionet.org/content/mitdb/1.0.0/, DOI 10.13026/C2F305)
- samples 0-{last:,} of 650,000: the first {seconds:g} s at 360 Hz
- both signals (MLII, V5), original ADC values, gains and storage format 212
- the {n_ann} reference annotations inside that span ({counts})

They were written with the `wfdb` Python package (wfdb.rdrecord / wfdb.rdann with
sampto={sampto}, then Record.wrsamp / wfdb.wrann) by `tests/data/make_ecg_excerpt.py`, from a
copy of the full record whose files matched PhysioNet's published SHA-256 checksums. The
header has one extra comment line saying it is an excerpt; the files do not match the
checksums of the full published record.

## License and attribution
PhysioNet open-access data, available under the Open Data Commons Attribution License v1.0
(ODC-By 1.0), https://opendatacommons.org/licenses/by/1.0/ . Keep this notice next to any
copy of these files. Any public use of a work made from them must say that it contains data
from the MIT-BIH Arrhythmia Database, available under ODC-By 1.0, and cite:
- Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database. IEEE Eng in Med and Biol
  20(3):45-50 (May-June 2001). PMID: 11446209.
- Goldberger AL, Amaral LAN, Glass L, Hausdorff JM, Ivanov PCh, Mark RG, Mietus JE, Moody GB,
  Peng C-K, Stanley HE. PhysioBank, PhysioToolkit, and PhysioNet: Components of a New Research
  Resource for Complex Physiologic Signals. Circulation 101(23):e215-e220 (2000).
"""


def make_excerpt(source: Path, out: Path, seconds: float) -> Path:
    """Cut the first `seconds` of record 100 in `source` (a folder) into `out`; returns out/100."""
    import wfdb

    base = source / RECORD
    if not base.with_suffix(".hea").is_file():
        base = source / "mitdb" / RECORD
    checks = ecg_data.verify(base)
    if not checks or not all(checks.values()):
        raise SystemExit(f"{base}.*: not the published MIT-BIH record 100 (SHA-256: {checks})")
    rec = wfdb.rdrecord(str(base), physical=False)
    sampto = int(round(seconds * rec.fs))
    if not 0 < sampto <= rec.sig_len:
        raise SystemExit(f"--seconds must be in (0, {rec.sig_len / rec.fs:g}]")
    rec = wfdb.rdrecord(str(base), sampto=sampto, physical=False)
    ann = wfdb.rdann(str(base), "atr", sampto=sampto)
    out.mkdir(parents=True, exist_ok=True)
    note = (f"excerpt: samples 0-{sampto - 1} of MIT-BIH Arrhythmia Database record 100 "
            "(mitdb 1.0.0), written with wfdb; ODC-By 1.0, see NOTICE.md")
    # the record as read, shortened: Record.wrsamp keeps every header field (ADC resolution
    # and zero included, which wfdb.wrsamp would recompute); only length-bound ones change
    rec.comments = [*rec.comments, note]
    rec.checksum = rec.calc_checksum()
    rec.init_value = [int(v) for v in rec.d_signal[0]]
    rec.wrsamp(write_dir=str(out))
    # aux strings come back with the file's padding byte; write them as the text they are
    aux = [a.rstrip("\x00") for a in ann.aux_note]
    wfdb.wrann(RECORD, "atr", np.asarray(ann.sample), symbol=list(ann.symbol),
               subtype=np.asarray(ann.subtype), chan=np.asarray(ann.chan),
               num=np.asarray(ann.num), aux_note=aux, fs=rec.fs, write_dir=str(out))
    symbols = np.asarray(ann.symbol)
    counts = ", ".join(f"{int((symbols == s).sum())} `{s}`" for s in sorted(set(ann.symbol)))
    (out / "NOTICE.md").write_text(NOTICE.format(
        last=sampto - 1, seconds=sampto / rec.fs, n_ann=len(symbols),
        counts=counts, sampto=sampto))
    return out / RECORD


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder holding 100.hea/.dat/.atr "
                        "(or mitdb/100.*)")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=HERE / "mitdb")
    args = parser.parse_args(argv)
    print(make_excerpt(args.source, args.out, args.seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
