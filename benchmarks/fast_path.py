"""End-to-end wall time of odecli commands with and without the fast path (solver.fast).

Each configuration runs as a real `odecli train` process (1 thread, figures on), the
configurations alternating round by round so drift hits all alike; reported are the median
process wall time, the run's own wall and training time, time per iteration, NFE and the fit
error, so a speed-up is only claimed at the same fit.

    python benchmarks/fast_path.py [--rounds 3] [--record]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import odecli_cmd, record  # noqa: E402

CASES = {
    "`odecli train system=lotka`, torchdiffeq loop": ["system=lotka", "solver.fast=false"],
    "`odecli train system=lotka`, fast path": ["system=lotka"],
    "`odecli train experiment=ode_fast`, torchdiffeq loop": [
        "experiment=ode_fast", "solver.fast=false"],
    "`odecli train experiment=ode_fast`, fast path": ["experiment=ode_fast"],
    "`odecli train experiment=ode_fast gradient=checkpoint`, fast path": [
        "experiment=ode_fast", "gradient=checkpoint"],
}


def run_once(overrides: list[str], folder: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    subprocess.run([*odecli_cmd(), "train", *overrides, f"hydra.run.dir={folder}", "quiet=true"],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    m = json.loads((folder / "metrics.json").read_text())
    return {"process": wall, "run": m["wall_seconds"], "train": m["train_seconds"],
            "per_iter": m["seconds_per_iter"] * 1e3,
            "nfe": m["nfe_forward_per_iter"] + m["nfe_backward_per_iter"],
            "error": m["error_rel"], "extrap": m["extrap_error_rel"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, (name, overrides) in enumerate(CASES.items()):
                results[name].append(run_once(overrides, Path(tmp) / f"{r}-{i}"))
    rows = ["| run | process wall | run wall | training | ms / iteration | NFE / iteration | "
            "error_rel | extrap_error_rel |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append(f"| {name} | {med['process']:.1f} s | {med['run']:.2f} s | "
                    f"{med['train']:.2f} s | {med['per_iter']:.2f} | {med['nfe']:.1f} | "
                    f"{med['error']:.4f} | {med['extrap']:.4f} |")
    text = "\n".join(rows) + "\n"
    print(text)
    if args.record:
        record(f"End to end with and without the fast path, medians of {args.rounds}", text)


if __name__ == "__main__":
    main()
