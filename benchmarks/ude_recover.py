"""Extrapolation of a UDE's recovered, refitted equations against the plain neural ODE.

Rackauckas et al. (2020) extrapolate a universal differential equation through the
equations sparse regression reads off its network. This trains `experiment=lotka_ude`
(noise 0.05, a x and -c y known) and the plain neural ODE on the same data
(`model.known.rhs=null`) per seed, runs `odecli recover` on both (SINDy, then the refit to
the observed trajectories), and prints one markdown row per seed: the extrapolation error
(`system.extrapolate=1.0`: as long again as the data) of each network, of each recovered
and of each refitted system, and the refitted coefficients' largest error. Run by hand:

    python benchmarks/ude_recover.py [--seeds 0 1 2] [--half]   # --half: data up to t = 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HALF = ["system.t1=5", "system.data_size=100"]  # half the span, the same point density


def odecli(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "odecli", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"odecli {' '.join(args)} failed: {proc.stderr.strip()}")


def recovered(run: Path, overrides: list[str]) -> dict:
    odecli("train", *overrides, "quiet=true", "device.threads=1", "plots.enabled=false",
           f"hydra.run.dir={run}")
    odecli("recover", str(run))
    return json.loads((run / "recover.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--half", action="store_true", help="data up to t = 5 only")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="odecli-ude-recover-"))
    data = ["experiment=lotka_ude", "system.extrapolate=1.0", *(HALF if args.half else [])]
    print("| seed | UDE network | UDE recovered | UDE refitted | plain network | plain "
          "recovered | plain refitted | largest coefficient error, UDE recovered / refitted "
          "| plain recovered / refitted |\n|---:|---:|---:|---:|---:|---:|---:|---|---|",
          flush=True)
    for seed in args.seeds:
        out = {}
        for kind, extra in (("ude", []), ("plain", ["model.known.rhs=null"])):
            out[kind] = recovered(root / f"{kind}_{seed}", [*data, *extra, f"seed={seed}"])
        cells = []
        for kind in ("ude", "plain"):
            tr = out[kind]["trajectory"]
            cells += [tr["network_extrap_error_rel"], tr["extrap_error_rel"],
                      tr.get("refitted_extrap_error_rel")]
        errs = []
        for k in ("ude", "plain"):
            pair = [out[k]["truth"].get("max_rel_error"),
                    ((out[k]["refit"] or {}).get("truth") or {}).get("max_rel_error")]
            errs.append(" / ".join("-" if e is None else f"{100 * e:.2f}%" for e in pair))
        print(f"| {seed} | " + " | ".join("-" if c is None else f"{c:.4f}" for c in cells)
              + " | " + " | ".join(errs) + " |", flush=True)


if __name__ == "__main__":
    main()
