"""`odecli cnf` against its targets: test NLL against the true NLL and the baselines, and
RNODE regularisation against none.

    python benchmarks/cnf_targets.py                    # both parts, defaults
    python benchmarks/cnf_targets.py --part density     # 8gaussians and checkerboard
    python benchmarks/cnf_targets.py --part reg --reg 0.1 0.1

density: the default run of each density with a closed-form truth. Targets: test NLL within
0.10 nats (8gaussians) / 0.20 nats (checkerboard) of the true NLL, below the KDE baseline, in
about 10 minutes on one CPU thread.

reg: 8gaussians without and with reg.kinetic/reg.jacobian, run one after the other in this
process's machine state, so the NFE and time ratios come from the same session. Targets: NLL
within 0.05 nats of the unregularised run, NFE per forward solve at least 2x lower.

Each run is a fresh `python -m odecli cnf` process writing to a temporary folder; the numbers
are read back from its metrics.json. Timings on a shared machine are noisy: compare ratios
taken in one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("test_nll", "true_nll", "nll_gap", "kde_nll", "gaussian_nll", "nfe_forward_per_iter",
        "nfe_backward_per_iter", "nfe_eval", "seconds_per_iter", "train_seconds",
        "peak_memory_mb", "best_iteration")


def run(overrides: list[str], root: Path) -> dict[str, float]:
    """One `odecli cnf` run; its metrics plus the process's wall time."""
    folder = root / f"run{len(list(root.iterdir()))}"
    env = {**os.environ, "ODECLI_OUTPUTS": str(root)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "odecli", "cnf", "quiet=true",
                           f"hydra.run.dir={folder}", *overrides],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"odecli cnf {' '.join(overrides)} failed: {proc.stderr[-800:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    out = {k: metrics.get(k) for k in KEYS}
    out["process_seconds"] = wall
    print(f"{' '.join(overrides) or 'defaults'}: "
          + ", ".join(f"{k} {v:.4g}" for k, v in out.items() if isinstance(v, (int, float))),
          flush=True)
    return out


def density(root: Path) -> None:
    print("| data | test NLL | true NLL | gap | KDE | Gaussian | NFE fwd/iter | s/iter | "
          "process |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in ("8gaussians", "checkerboard"):
        m = run([f"data.name={name}"], root)
        rows.append(f"| {name} | {m['test_nll']:.4f} | {m['true_nll']:.4f} | "
                    f"{m['nll_gap']:.4f} | {m['kde_nll']:.4f} | {m['gaussian_nll']:.4f} | "
                    f"{m['nfe_forward_per_iter']:.1f} | {m['seconds_per_iter']:.3f} | "
                    f"{m['process_seconds']:.0f} s |")
    print("\n".join(rows))


def regularisation(root: Path, kinetic: float, jacobian: float, extra: list[str]) -> None:
    plain = run(extra, root)
    reg = run([*extra, f"reg.kinetic={kinetic}", f"reg.jacobian={jacobian}"], root)
    print("| run | test NLL | NFE fwd/iter | NFE bwd/iter | NFE test | s/iter | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, m in (("unregularised", plain), (f"kinetic {kinetic}, jacobian {jacobian}",
                                                 reg)):
        print(f"| {label} | {m['test_nll']:.4f} | {m['nfe_forward_per_iter']:.1f} | "
              f"{m['nfe_backward_per_iter']:.1f} | {m['nfe_eval']:.0f} | "
              f"{m['seconds_per_iter']:.3f} | {m['train_seconds']:.0f} |")
    print(f"NLL difference {reg['test_nll'] - plain['test_nll']:+.4f} nats; forward NFE "
          f"{plain['nfe_forward_per_iter'] / reg['nfe_forward_per_iter']:.2f}x lower; "
          f"training time {plain['train_seconds'] / reg['train_seconds']:.2f}x lower")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("density", "reg", "all"), default="all")
    parser.add_argument("--reg", nargs=2, type=float, default=(0.03, 0.03),
                        metavar=("KINETIC", "JACOBIAN"))
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.part in ("density", "all"):
            density(root)
        if args.part in ("reg", "all"):
            regularisation(root, *args.reg, args.overrides)


if __name__ == "__main__":
    main()
