"""What the trackers add to a default run's wall time (logger=none vs tensorboard vs mlflow).

Runs `odecli train system=spiral` (defaults, one CPU thread) as separate processes, the
loggers alternating in each round so drifts in machine load hit them alike, and prints the
median wall time of each and its ratio to logger=none. Run by hand:

    python benchmarks/tracking_overhead.py [--rounds 3] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
LOGGERS = ("none", "tensorboard", "mlflow", "[tensorboard,mlflow]")


def one(logger: str, outputs: Path) -> float:
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "odecli", "train", "system=spiral", "quiet=true",
                    f"logger={logger}"], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in LOGGERS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in LOGGERS:
                walls[name].append(one(name, Path(tmp)))
    base = statistics.median(walls["none"])
    rows = ["| logger | wall (median) | vs none |", "|---|---:|---:|"]
    for name in LOGGERS:
        m = statistics.median(walls[name])
        rows.append(f"| `logger={name}` | {m:.2f} s | {m / base:.3f} |")
    text = "\n".join(rows)
    print(text)
    if args.record:
        stamp = datetime.date.today().isoformat()
        with RESULTS.open("a") as fh:
            fh.write(f"\n### Tracker overhead, `odecli train system=spiral` ({stamp}, "
                     f"{platform.machine()}, {os.cpu_count()} cores, {args.rounds} rounds)\n\n"
                     f"`python benchmarks/tracking_overhead.py --record`\n\n{text}\n")


if __name__ == "__main__":
    main()
