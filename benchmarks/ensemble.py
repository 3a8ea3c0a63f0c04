"""The same seed sweep of `odecli train system=lotka` (or `--command spiral-vae`) with the basic
launcher, joblib and the ensemble launcher, side by side in one run (issue 28), plus one run
alone.

Each command runs as its own process (imports, composition, folders and all: what a user
waits for); member-iterations per second = seeds * niters / wall time. The ensemble members'
metrics are compared with the basic launcher's jobs of the same seed (their solo runs).

    python benchmarks/ensemble.py --seeds 32 --niters 200
    python benchmarks/ensemble.py --command spiral-vae --seeds 8 --plots --skip joblib
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

# Per command: its fixed arguments, and the metrics compared member against solo run.
COMMANDS = {
    "train": (["system=lotka"], ("final_loss", "error_rel", "extrap_error_rel")),
    "spiral-vae": ([], ("final_loss", "reconstruction_mse", "extrapolation_forward_mse",
                        "extrapolation_backward_mse")),
}
COMMAND = "train"


def run(args: list[str], outputs: Path) -> float:
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "odecli", COMMAND, *args], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: odecli {COMMAND} {' '.join(args)}\n{proc.stderr[-2000:]}")
    return wall


def metrics(sweep: Path) -> dict[int, dict]:
    out = {}
    for job in sweep.iterdir():
        if (job / "metrics.json").exists():
            m = json.loads((job / "metrics.json").read_text())
            seed = int(next(o.split("=")[1] for o in
                            (job / ".hydra" / "overrides.yaml").read_text().split()
                            if o.startswith("seed=")))
            out[seed] = m
    return out


def main() -> None:
    global COMMAND
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--command", default="train", choices=sorted(COMMANDS))
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--niters", type=int, default=None,
                    help="default: 1000 for train, the command's own otherwise")
    ap.add_argument("--jobs", type=int, default=2, help="joblib workers")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--plots", action="store_true", help="draw each run's figures")
    ap.add_argument("--skip", nargs="*", default=[], choices=["basic", "joblib"])
    a = ap.parse_args()
    COMMAND = a.command
    fixed, compared = COMMANDS[a.command]
    if a.niters is None and a.command == "train":
        a.niters = 1000
    if a.niters is None:
        from odecli import compose

        a.niters = int(compose(a.command, []).train.niters)
    common = [*fixed, f"train.niters={a.niters}", f"device.dtype={a.dtype}",
              "quiet=true", f"plots.enabled={str(a.plots).lower()}"]
    seeds = f"seed=range({a.seeds})"
    launchers = {
        "ensemble": ["hydra/launcher=ensemble"],
        "basic": [],
        "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={a.jobs}"],
    }
    with tempfile.TemporaryDirectory(prefix="odecli-ensemble-bench-") as tmp:
        root = Path(tmp)
        walls = {"one run": run(["seed=0", *common, f"hydra.run.dir={root / 'one'}"], root)}
        print(f"one run: {walls['one run']:.1f} s", flush=True)
        for name, extra in launchers.items():
            if name in a.skip:
                continue
            walls[name] = run(["-m", seeds, *common, *extra,
                               f"hydra.sweep.dir={root / name}"], root)
            print(f"{name}: {walls[name]:.1f} s", flush=True)
        found = {n: metrics(root / n) for n in launchers if n not in a.skip}
    member_its = a.seeds * a.niters
    print(f"\n{a.seeds} seeds x {a.niters} iterations, {a.command} {' '.join(fixed)}, {a.dtype}, "
          f"figures {'on' if a.plots else 'off'}\n")
    print("| launcher | wall | member-iterations/s | ensemble is faster by |")
    print("|---|---:|---:|---:|")
    print(f"| one run (1 x {a.niters}) | {walls['one run']:.1f} s | "
          f"{a.niters / walls['one run']:.0f} | |")
    for name in launchers:
        if name in walls:
            ratio = walls[name] / walls["ensemble"]
            print(f"| {name} | {walls[name]:.1f} s | {member_its / walls[name]:.0f} | "
                  f"{ratio:.2f}x |")
    print(f"\nensemble wall / one run: {walls['ensemble'] / walls['one run']:.2f}x")
    ens = found["ensemble"]
    train = [m["train_seconds"] for m in ens.values()]
    print(f"ensemble training alone: {max(train):.1f} s of {walls['ensemble']:.1f} s wall "
          f"(the rest: imports, composing, run folders, evaluations, tests, checkpoints)")
    if "basic" in found:
        worst = {k: max(abs(ens[s][k] - b[k]) / abs(b[k]) for s, b in found["basic"].items())
                 for k in compared}
        same = sum(ens[s]["nfe_forward_per_iter"] == b["nfe_forward_per_iter"]
                   for s, b in found["basic"].items())
        for key in compared[1:]:  # the fits, side by side
            ours = sorted(m[key] for m in ens.values())
            solo = sorted(m[key] for m in found["basic"].values())
            print(f"{key}: ensemble median {ours[len(ours) // 2]:.4g} max {ours[-1]:.4g}; "
                  f"solo runs median {solo[len(solo) // 2]:.4g} max {solo[-1]:.4g}")
        print("largest relative difference, ensemble member vs its solo run (basic): "
              + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
              + f"; identical NFE in {same} of {len(found['basic'])}")


if __name__ == "__main__":
    main()
