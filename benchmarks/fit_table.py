"""Fit quality of every system at its default configuration: docs/train.md's fit table.

Runs `odecli train system=NAME` for each system (defaults only, sequentially, so timings are
not disturbed by each other), then prints a markdown table: the command, the relative
trajectory error over the training span, the relative extrapolation error, wall time and
seconds per iteration. Run by hand (it takes a while):

    python benchmarks/fit_table.py [--systems spiral lotka ...] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
SYSTEMS = ["spiral", "spiral_cubic", "random", "lotka", "lotka_linear", "nonlinear", "mlp",
           "lorenz", "fitzhugh_nagumo", "pendulum", "sir"]  # the last four: equation presets
TARGET = 0.05


def run(system: str, extra: list[str], outputs: Path) -> dict:
    cmd = ["odecli", "train", f"system={system}", *extra, "quiet=true"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "odecli", *cmd[1:]], capture_output=True,
                          text=True, env={**os.environ, "ODECLI_OUTPUTS": str(outputs)})
    wall = time.perf_counter() - t0
    metrics_files = sorted((outputs / "train").rglob("metrics.json"), key=os.path.getmtime)
    m = json.loads(metrics_files[-1].read_text()) if metrics_files else {"status": proc.stderr}
    m["command"] = " ".join(c for c in cmd if c != "quiet=true")
    m["process_wall"] = wall
    m["exit_code"] = proc.returncode
    return m


def row(m: dict) -> str:
    ok = m.get("status") == "ok" and m.get("error_rel", 1) <= TARGET
    verdict = "meets 5%" if ok else f"MISSES ({m.get('status')})"
    return (f"| `{m['command']}` | {m.get('error_rel', float('nan')):.4f} | "
            f"{m.get('extrap_error_rel', float('nan')):.4f} | {m['process_wall']:.0f} s | "
            f"{m.get('seconds_per_iter', float('nan')) * 1e3:.1f} ms | {m.get('gradient')} | "
            f"{verdict} |")


HEADER = ("| command | error_rel (training span) | extrap_error_rel | wall | per iteration "
          "| gradient | target |\n|---|---:|---:|---:|---:|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="*", default=SYSTEMS)
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    outputs = Path(tempfile.mkdtemp(prefix="odecli-fit-"))
    rows = []
    print(HEADER, flush=True)
    for system in args.systems:
        rows.append(row(run(system, args.extra, outputs)))
        print(rows[-1], flush=True)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(f"\n### Fit quality at default settings ({datetime.date.today()}, "
                     f"{platform.machine()}, {os.cpu_count()} cores)\n\n"
                     f"`python benchmarks/fit_table.py --record`\n\n{HEADER}\n"
                     + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
