"""`odecli cnf` against its targets: test NLL against the true NLL and the baselines, and
RNODE regularisation against none.

    python benchmarks/cnf_targets.py                    # both parts, defaults
    python benchmarks/cnf_targets.py --part density     # 8gaussians and checkerboard
    python benchmarks/cnf_targets.py --part reg --reg 0.1 0.1
    python benchmarks/cnf_targets.py --part reg --reg 0.01 0.01 --tols 1e-6 -- \
        cnf_data=checkerboard

density: the default run of each density with a closed-form truth (cnf_data=8gaussians and
cnf_data=checkerboard, its tuned preset), and the checkerboard with 8gaussians' settings
(data.name=checkerboard alone, the default before the preset). Targets: test NLL within
0.10 nats (8gaussians) / 0.20 nats (checkerboard) of the true NLL, below the KDE baseline, in
about 10 minutes on one CPU thread.

reg: without and with reg.kinetic/reg.jacobian (8gaussians, or the extra overrides), run one
after the other in this process's machine state, so the NFE and time ratios come from the
same session; --tols re-scores both with `odecli eval` at tighter tolerances. Targets: NLL
within 0.05 nats of the unregularised run, NFE per forward solve at least 2x lower.

Each run is a fresh `python -m odecli cnf` process writing to a temporary folder; the numbers
are read back from its metrics.json. Timings on a shared machine are noisy: compare ratios
taken in one invocation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# configs/cnf_data/checkerboard.yaml: a wider field, smaller batches, more iterations, RNODE
# at 0.01 (the regularisers keep the NFE from doubling as the edges sharpen), compiled steps.
CHECKERBOARD = "cnf_data=checkerboard"
KEYS = ("test_nll", "true_nll", "nll_gap", "kde_nll", "gaussian_nll", "nfe_forward_per_iter",
        "nfe_backward_per_iter", "nfe_eval", "seconds_per_iter", "train_seconds",
        "peak_memory_mb", "best_iteration")


def run(overrides: list[str], root: Path, tols: tuple[float, ...] = ()
        ) -> dict[str, float]:
    """One `odecli cnf` run; its metrics plus the process's wall and CPU time, and with
    `tols` the test NLL and NFE re-scored by `odecli eval` at each tolerance."""
    folder = root / f"run{len(list(root.iterdir()))}"
    env = {**os.environ, "ODECLI_OUTPUTS": str(root)}
    t0, c0 = time.perf_counter(), _child_cpu()
    proc = subprocess.run([sys.executable, "-m", "odecli", "cnf", "quiet=true",
                           f"hydra.run.dir={folder}", *overrides],
                          env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"odecli cnf {' '.join(overrides)} failed: {proc.stderr[-800:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    out = {k: metrics.get(k) for k in KEYS}
    out["nfe_forward_late"] = late_forward_nfe(folder / "history.csv")
    out["process_seconds"], out["process_cpu_seconds"] = wall, cpu
    for tol in tols:
        where = folder / f"eval_{tol:g}"
        proc = subprocess.run([sys.executable, "-m", "odecli", "eval", str(folder),
                               f"solver.rtol={tol}", f"solver.atol={tol}",
                               "plots.enabled=false", "quiet=true", "--out", str(where)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"odecli eval at {tol:g} failed: {proc.stderr[-800:]}")
        scored = json.loads((where / "eval.json").read_text())
        out[f"test_nll@{tol:g}"] = scored.get("test_nll")
        out[f"nfe_eval@{tol:g}"] = scored.get("nfe_eval")
    print(f"{' '.join(overrides) or 'defaults'}: "
          + ", ".join(f"{k} {v:.4g}" for k, v in out.items() if isinstance(v, (int, float))),
          flush=True)
    return out


def late_forward_nfe(history: Path) -> float:
    """Training forward NFE per iteration over the last quarter of the run: the cost of a
    forward solve of the (nearly) trained field, which the whole-run mean dilutes with the
    cheap early iterations. history.csv's nfe_forward column is cumulative."""
    with history.open(newline="") as fh:
        rows = [(int(r["iteration"]), float(r["nfe_forward"])) for r in csv.DictReader(fh)]
    end_it, end_nfe = rows[-1]
    start_it, start_nfe = min(rows, key=lambda r: abs(r[0] - 0.75 * end_it))
    return (end_nfe - start_nfe) / max(end_it - start_it, 1)


def _child_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def density(root: Path) -> None:
    print("| command | test NLL | true NLL | gap | KDE | Gaussian | NFE fwd/iter | s/iter | "
          "process | process CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for overrides in (["cnf_data=8gaussians"], [CHECKERBOARD], ["data.name=checkerboard"]):
        m = run(overrides, root)
        rows.append(f"| {' '.join(overrides)} | {m['test_nll']:.4f} | {m['true_nll']:.4f} | "
                    f"{m['nll_gap']:.4f} | {m['kde_nll']:.4f} | {m['gaussian_nll']:.4f} | "
                    f"{m['nfe_forward_per_iter']:.1f} | {m['seconds_per_iter']:.3f} | "
                    f"{m['process_seconds']:.0f} s | {m['process_cpu_seconds']:.0f} s |")
    print("\n".join(rows))


def regularisation(root: Path, kinetic: float, jacobian: float, extra: list[str],
                   tols: tuple[float, ...]) -> None:
    plain = run([*extra, "reg.kinetic=0", "reg.jacobian=0"], root, tols)
    reg = run([*extra, f"reg.kinetic={kinetic}", f"reg.jacobian={jacobian}"], root, tols)
    at = "".join(f" | test NLL / NFE at {t:g}" for t in tols)
    print(f"| run | test NLL | NFE fwd/iter | last quarter | NFE bwd/iter | NFE test | s/iter "
          f"| train s | process CPU s{at} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:" + "|---:" * len(tols) + "|")
    for label, m in (("unregularised", plain), (f"kinetic {kinetic}, jacobian {jacobian}",
                                                 reg)):
        cells = "".join(f" | {m[f'test_nll@{t:g}']:.4f} / {m[f'nfe_eval@{t:g}']:.0f}"
                        for t in tols)
        print(f"| {label} | {m['test_nll']:.4f} | {m['nfe_forward_per_iter']:.1f} | "
              f"{m['nfe_forward_late']:.1f} | "
              f"{m['nfe_backward_per_iter']:.1f} | {m['nfe_eval']:.0f} | "
              f"{m['seconds_per_iter']:.3f} | {m['train_seconds']:.0f} | "
              f"{m['process_cpu_seconds']:.0f}{cells} |")
    print(f"NLL difference {reg['test_nll'] - plain['test_nll']:+.4f} nats; forward NFE "
          f"{plain['nfe_forward_per_iter'] / reg['nfe_forward_per_iter']:.2f}x lower "
          f"({plain['nfe_forward_late'] / reg['nfe_forward_late']:.2f}x in the last quarter); "
          f"training time {plain['train_seconds'] / reg['train_seconds']:.2f}x lower; "
          f"process CPU time "
          f"{plain['process_cpu_seconds'] / reg['process_cpu_seconds']:.2f}x lower")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("density", "reg", "all"), default="all")
    parser.add_argument("--reg", nargs=2, type=float, default=(0.03, 0.03),
                        metavar=("KINETIC", "JACOBIAN"))
    parser.add_argument("--tols", nargs="*", type=float, default=(),
                        help="reg: also re-score each run's test NLL and NFE with `odecli "
                             "eval` at these tolerances (rtol = atol)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.part in ("density", "all"):
            density(root)
        if args.part in ("reg", "all"):
            regularisation(root, *args.reg, args.overrides, tuple(args.tols))


if __name__ == "__main__":
    main()
