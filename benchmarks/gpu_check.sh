#!/usr/bin/env bash
# The GPU check of issue 13, in one run on a machine with a CUDA GPU and no network: install
# what the machine lacks, run the `cuda` tests (CUDA against CPU in float64: every system and
# gradient mode, both VAE commands, classify, cnf, the compiled fast loop), then the speed
# benchmark's `devices` and `gradients` parts. Everything lands in OUTDIR:
#   gpu_check.log   the whole output (device, versions, tests, benchmark progress, summary)
#   pytest.xml      the tests' JUnit report
#   devices.md, gradients.md   the benchmark tables (benchmarks/speed.py --out)
# Each step runs under its own `timeout`, so one slow part cannot lose the others' results.
#
#     bash benchmarks/gpu_wheels.sh                  # here, once: fills .whl/ (git-ignored)
#     bash benchmarks/gpu_check.sh OUTDIR            # there (the device tool: carry [".whl"])
#
# Without a GPU (a rehearsal): ODECLI_CUDA_REHEARSAL=1 makes the cuda tests run with cpu
# standing in for cuda, and the tables carry "no GPU". Exit status: 0 all passed, 1 a test
# failed (or the tests could not run), 2 the tests passed but a benchmark part failed or ran
# out of time. Sizes and time limits (seconds) can be changed through the variables below;
# GPU_CHECK_PARTS picks steps for a rerun (e.g. "tests"), GPU_CHECK_PYTEST_ARGS adds pytest
# arguments (e.g. "-k classify -x"). The limits add up to under 8 minutes; an H100 should
# need about 5 (GPU time is scarce: the run is one call of at most 10 minutes).
set -u -o pipefail
out="${1:?usage: gpu_check.sh OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/.."
repo="$(pwd)"
py="${PYTHON:-python3}"
parts=" ${GPU_CHECK_PARTS:-tests devices gradients} "
t_tests="${GPU_CHECK_TESTS_S:-210}"
t_devices="${GPU_CHECK_DEVICES_S:-90}"
t_gradients="${GPU_CHECK_GRADIENTS_S:-150}"
grad_args="${GPU_CHECK_GRADIENT_ARGS:---points 10 100 400 --batch 256 --width 256 --grad-repeats 3}"
dev_args="${GPU_CHECK_DEVICE_ARGS:---device-repeats 3 --device-block 1.0}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
summary=()
status=0

step() {  # NAME SECONDS CMD...: run under a time limit, record how it ended and how long
    local name="$1" limit="$2" start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    local took=$((SECONDS - start)) how="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then how="TIMED OUT"
    elif [ "$rc" -ne 0 ]; then how="FAILED (exit $rc)"; fi
    summary+=("$name: $how, ${took} s")
    echo "== $name: $how, ${took} s"
    return "$rc"
}

main() {  # (not indented: its heredoc must start at column 0)
echo "== gpu_check $(date -u +%FT%TZ) in $repo, commit $(git rev-parse --short HEAD 2>/dev/null \
    || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not available"
echo "cpu cores: $(nproc); steps:${parts% }; limits: tests ${t_tests} s, devices ${t_devices} s, \
gradients ${t_gradients} s; devices: ${dev_args}; gradients: ${grad_args}"

# Packages the machine lacks travel as wheels in .whl (benchmarks/gpu_wheels.sh).
site="${GPU_CHECK_SITE:-/tmp/site}"
pipi=("$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
      --target "$site")
if compgen -G ".whl/*.whl" >/dev/null; then
    if "${pipi[@]}" .whl/*.whl; then
        echo "installed $(ls .whl | wc -l) carried wheels into $site"
    else
        # one wheel pip refuses (a cp312 build on another Python, in a rehearsal) stops the
        # lot: install the others one by one; the import check below says what is missing
        echo "warning: installing the carried wheels together failed; one by one:"
        for w in .whl/*.whl; do
            "${pipi[@]}" "$w" >/dev/null 2>&1 || echo "  not installed: $w"
        done
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The project itself: an editable install where it is not importable from this checkout yet
# (offline: no index, no build isolation), and the checkout on PYTHONPATH either way.
if ! (cd / && "$py" -c "import odecli, pathlib, sys; sys.exit(pathlib.Path(odecli.__file__) \
        .resolve().parents[1] != pathlib.Path('$repo').resolve())" 2>/dev/null); then
    if "$py" -c "import setuptools" 2>/dev/null; then
        timeout 60 "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
            || echo "note: the editable install failed; the checkout on PYTHONPATH serves"
    fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
"$py" - <<'EOF' || status=1
import importlib.metadata as md
import platform

import torch

print(f"python {platform.python_version()}, torch {torch.__version__}, "
      f"CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
         if torch.cuda.is_available() else ""))
names = ("torchdiffeq", "typer", "hydra-core", "omegaconf", "antlr4-python3-runtime", "wfdb",
         "numpy", "scipy", "scikit-learn", "matplotlib", "pytest")
versions = []
for name in names:
    try:
        versions.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        versions.append(f"{name} MISSING")
print(", ".join(versions))
import hydra, odecli.cli, wfdb  # noqa: E401,F401  what the tests import
print(f"odecli from {odecli.__file__}, hydra from {hydra.__file__}")
EOF
if [ "$status" -ne 0 ]; then
    echo "error: the environment is not ready (above); not running the tests"
    summary+=("environment: FAILED")
fi

# 1. The cuda tests (the files that hold any; collecting only those keeps other test modules'
#    optional imports out of the way).
if [ "$status" -eq 0 ] && [[ "$parts" == *" tests "* ]]; then
    mapfile -t files < <(grep -l "mark.cuda" tests/test_*.py)
    timeout_arg=()
    "$py" -c "import pytest_timeout" 2>/dev/null && timeout_arg=(--timeout=150)
    step "tests" "$t_tests" "$py" -m pytest -m cuda -v -rfEs -p no:cacheprovider \
        --durations=15 --junitxml="$out/pytest.xml" ${timeout_arg[@]+"${timeout_arg[@]}"} \
        ${GPU_CHECK_PYTEST_ARGS:-} "${files[@]}" || status=1
fi

# 2. The benchmark parts, each its own process and time limit.
bench=0
if [[ "$parts" == *" devices "* ]]; then
    # shellcheck disable=SC2086  # the argument strings split into options on purpose
    step "devices" "$t_devices" "$py" benchmarks/speed.py --parts devices $dev_args \
        --out "$out" || bench=1
fi
if [[ "$parts" == *" gradients "* ]]; then
    # shellcheck disable=SC2086
    step "gradients" "$t_gradients" "$py" benchmarks/speed.py --parts gradients \
        $grad_args --out "$out" || bench=1
fi
if [ "$status" -eq 0 ] && [ "$bench" -ne 0 ]; then status=2; fi

echo "== summary (${SECONDS} s in all, exit $status)"
printf '  %s\n' "${summary[@]}"
ls -l "$out"
return "$status"
}

main 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
