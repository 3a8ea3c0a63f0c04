#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels that the device tool's GPU machines lack, for
# benchmarks/gpu_check.sh: those machines (nvidia-h100-x1, nvidia-h200) run Python 3.12 with
# torch, torchdiffeq, typer, numpy, scipy, pandas, matplotlib, scikit-learn, pytest, ... but
# without Hydra, OmegaConf, ANTLR's runtime or wfdb, and they reach no package index. The
# run's `carry` names .whl; gpu_check.sh installs them with --no-index --no-deps.
#
#     bash benchmarks/gpu_wheels.sh        # then: du -sh .whl (the tree travels under 64 MiB)
#
# The versions are this project's tested ones. wfdb needs soundfile (only for FLAC records,
# which the tests do not read), soundfile needs cffi, cffi needs pycparser: none are on the
# image, so they travel too. cffi is a CPython 3.12 binary wheel; the rest are pure Python or
# carry their own library (soundfile's libsndfile). ANTLR's runtime 4.9.3 has no wheel on PyPI,
# so a pure-Python one is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
py="${PYTHON:-python3}"
image_list="${IMAGE_PACKAGES:-/work/.library/device/KINDS.md}"  # "Python packages already there"

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"

rm -rf "$dest"  # one version of each: two of a name stop the whole install there
mkdir -p "$dest"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$dest" \
    hydra-core==1.3.8 omegaconf==2.3.1 wfdb==4.3.1 soundfile==0.14.0 cffi==2.0.0 \
    pycparser==3.0
"$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$dest" \
    antlr4-python3-runtime==4.9.3

# What each wheel requires (extras and markers that exclude Python 3.12 on Linux left out),
# against the wheels here and the image's package list.
"$py" - "$dest" "$image_list" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

dest, listing = Path(sys.argv[1]), Path(sys.argv[2])
env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "extra": ""}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


image: set[str] | None = None
if listing.exists():
    text = listing.read_text()
    part = text.split("## Python packages already there", 1)[-1]
    names = part.split("Packages:", 1)[-1].strip().rstrip(".")
    image = {norm(n) for n in names.split(", ")}
wheels = sorted(dest.glob("*.whl"))
here = {norm(w.name.split("-")[0]) for w in wheels}
missing = []
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines
            if line.startswith("Requires-Dist:")]
    needed = [r for r in reqs if r.marker is None or r.marker.evaluate(env)]
    print(f"{w.name} ({w.stat().st_size / 1024:.0f} KiB): "
          + (", ".join(str(r) for r in needed) or "no requirements"))
    for r in needed:
        if norm(r.name) not in here and (image is None or norm(r.name) not in image):
            missing.append(f"{w.name} needs {r}")
total = sum(w.stat().st_size for w in wheels)
print(f"{len(wheels)} wheels, {total / 2**20:.2f} MiB in {dest}/")
if image is None:
    print(f"note: {listing} not found: requirements not checked against the image")
elif missing:
    sys.exit("missing on the image and not carried:\n  " + "\n  ".join(missing))
else:
    print("every requirement is carried here or on the image's package list")
EOF
