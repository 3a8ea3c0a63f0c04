"""Known physics plus a network against a plain neural ODE on noisy Lotka-Volterra.

`experiment=lotka_ude` (noise 0.05, the terms a x and -c y known, the network learns the
interaction terms) and the plain neural ODE on the same data (`model.known.rhs=null`), each
over several seeds; optionally with the known part's parameters trained from wrong starting
values. Prints a markdown table: the learned part's error against the missing term
(missing_term_error_rel: within 10% means the interaction terms are learned to 10% over the
data's region), the trajectory error on the training span and on the extrapolation window.
Run by hand:

    python benchmarks/ude_lotka.py [--seeds 0 1 2] [--record]
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
VARIANTS = {
    "UDE, a and c fixed": ["experiment=lotka_ude"],
    "UDE, a and c trained from 1.0 and 2.0": [
        "experiment=lotka_ude", "model.known.trainable=true",
        "model.known.params={a: 1.0, c: 2.0}"],
    "plain neural ODE": ["experiment=lotka_ude", "model.known.rhs=null"],
}


def run(overrides: list[str], outputs: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "odecli", "train", *overrides, "quiet=true"],
                          capture_output=True, text=True,
                          env={**os.environ, "ODECLI_OUTPUTS": str(outputs)})
    files = sorted((outputs / "train").rglob("metrics.json"), key=os.path.getmtime)
    m = json.loads(files[-1].read_text()) if files and proc.returncode == 0 else {
        "status": proc.stderr.strip()}
    m["process_wall"] = time.perf_counter() - t0
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    outputs = Path(tempfile.mkdtemp(prefix="odecli-ude-"))
    header = ("| model | seed | missing_term_error_rel | error_rel | extrap_error_rel | "
              "known params | train time |\n|---|---:|---:|---:|---:|---|---:|")
    print(header, flush=True)
    rows = []
    for label, overrides in VARIANTS.items():
        for seed in args.seeds if "trained" not in label else args.seeds[:1]:
            m = run([*overrides, f"seed={seed}"], outputs)
            miss = m.get("missing_term_error_rel")
            params = ", ".join(f"{k}={v:.3f}" for k, v in (m.get("known_params") or {}).items())
            rows.append(f"| {label} | {seed} | {'-' if miss is None else f'{miss:.4f}'} | "
                        f"{m.get('error_rel', float('nan')):.4f} | "
                        f"{m.get('extrap_error_rel', float('nan')):.4f} | {params or '-'} | "
                        f"{m.get('train_seconds', float('nan')):.1f} s |")
            print(rows[-1], flush=True)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(f"\n### Known physics plus a network on Lotka-Volterra "
                     f"({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} "
                     f"cores)\n\n`python benchmarks/ude_lotka.py --record`\n\n{header}\n"
                     + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
