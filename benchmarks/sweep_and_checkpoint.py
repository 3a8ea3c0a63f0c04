"""Sweep wall time (basic vs joblib launcher) and the per-iteration cost of checkpoints.

    python benchmarks/sweep_and_checkpoint.py               # both parts
    python benchmarks/sweep_and_checkpoint.py --part checkpoint

Sweep: 4 short runs (`system=spiral,lotka seed=0,1`, train.niters=NITERS, figures on) through
`odecli train -m` as a fresh process, with the basic launcher (sequential) and with
`hydra/launcher=joblib hydra.launcher.n_jobs=2`. Target: joblib <= 0.6x sequential on 2 cores.

Checkpoint: the cost of one `save_checkpoint()` (atomic write with fsync) against the mean
step time, as the share of an iteration it adds at train.checkpoint_every (default 100).
Target: under 2%.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sweep(niters: int) -> dict[str, float]:
    common = ["-m", "system=spiral,lotka", "seed=0,1", f"train.niters={niters}",
              "train.test_freq=50", "quiet=true"]
    out: dict[str, float] = {}
    for name, extra in (("basic", []), ("joblib", ["hydra/launcher=joblib",
                                                   "hydra.launcher.n_jobs=2"])):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "ODECLI_OUTPUTS": tmp}
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "odecli", "train", *common, *extra],
                                  env=env, capture_output=True, text=True)
            out[name] = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{name} sweep failed: {proc.stderr[-500:]}")
        print(f"sweep {name}: {out[name]:.1f} s", flush=True)
    print(f"joblib / basic = {out['joblib'] / out['basic']:.2f}")
    return out


def checkpoint(model: str, steps: int, saves: int, every: int) -> float:
    from omegaconf import OmegaConf

    from odecli.dynamics.experiment import DynamicsExperiment
    from odecli.engine.loop import Engine
    from odecli.launch.bridge import compose
    from odecli.numerics import device
    from odecli.registry import COMMANDS

    device.quiet_warnings()
    cfg = compose(COMMANDS["train"], [f"model={model}", f"train.niters={steps}", "quiet=true"])
    OmegaConf.set_struct(cfg, False)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Engine(DynamicsExperiment(cfg, Path(tmp)), Path(tmp))
        for _ in range(5):  # warm up
            tr.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.step()
        step = (time.perf_counter() - t0) / steps
        t0 = time.perf_counter()
        for _ in range(saves):
            tr.save_checkpoint()
        save = (time.perf_counter() - t0) / saves
        size = (Path(tmp) / "checkpoint.pt").stat().st_size
    share = save / (every * step)
    print(f"checkpoint model={model}: step {step * 1e3:.2f} ms, save {save * 1e3:.2f} ms "
          f"({size / 1024:.0f} KiB), every {every} -> {100 * share:.3f}% per iteration",
          flush=True)
    return share


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("all", "sweep", "checkpoint"), default="all")
    ap.add_argument("--niters", type=int, default=200)
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}")
    if args.part in ("all", "checkpoint"):
        for model in ("small", "deep"):
            checkpoint(model, steps=100, saves=20, every=100)
    if args.part in ("all", "sweep"):
        sweep(args.niters)


if __name__ == "__main__":
    main()
