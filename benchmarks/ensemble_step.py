"""Where an ensemble sweep's time goes (issue 28): the launch overhead (command start to the
first batched training step) and one batched training step against one solo step.

Why: the sweep's wall time is launch + steps + finish; benchmarks/ensemble.py measures the
whole, this script the two parts that can be made cheaper. The steps are timed in alternating
blocks in one process (the same weights, windows and machine load for both), so their ratio
is paired; `--profile` prints a pyinstrument profile of the batched steps (pip install
pyinstrument).

    python benchmarks/ensemble_step.py --members 32 --steps 60
    python benchmarks/ensemble_step.py --launch   # time to the first step, 32-seed sweep
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOTKA = ["system=lotka", "quiet=true", "plots.enabled=false"]


def launch_overhead(members: int, niters: int) -> float:
    """Seconds from `python -m odecli train -m ...` to its first batched step (a child
    process; the hook only reads the clock)."""
    hook = ("import os, sys, time\n"
            "from odecli.engine import ensemble as E\n"
            "step = E.Members._step\n"
            "def first(self, active):\n"
            "    if not getattr(E, '_seen', False):\n"
            "        E._seen = True\n"
            "        print(f'FIRST_STEP {time.time() - float(os.environ[\"T0\"]):.3f}',"
            " file=sys.stderr, flush=True)\n"
            "    return step(self, active)\n"
            "E.Members._step = first\n"
            "from odecli.cli.app import main\n"
            "sys.argv = ['odecli', *sys.argv[1:]]\n"
            "main()\n")
    with tempfile.TemporaryDirectory(prefix="odecli-ensemble-step-") as tmp:
        env = {**os.environ, "ODECLI_OUTPUTS": tmp, "T0": repr(time.time())}
        proc = subprocess.run([sys.executable, "-c", hook, "train", "-m",
                               f"seed=range({members})", *LOTKA, f"train.niters={niters}",
                               "hydra/launcher=ensemble", f"hydra.sweep.dir={tmp}/sweep"],
                              env=env, capture_output=True, text=True)
    line = [s for s in proc.stderr.splitlines() if s.startswith("FIRST_STEP")]
    if proc.returncode != 0 or not line:
        raise SystemExit(proc.stderr[-2000:])
    return float(line[0].split()[1])


def build(members: int, dtype: str, root: Path, overrides: list[str] = LOTKA
          ) -> tuple[object, object]:
    """A batch of `members` seeds and the solo engine of seed 0, as the launcher builds them
    (`overrides`: the sweep's other settings, lotka's by default)."""
    import odecli
    from odecli.dynamics.dispatch import TrainExperiment
    from odecli.engine.ensemble import Members
    from odecli.engine.loop import Engine

    engines = []
    for seed in range(members + 1):
        cfg = odecli.compose("train", [*overrides, f"seed={seed % members}",
                                       f"device.dtype={dtype}"])
        run_dir = root / str(seed)
        run_dir.mkdir()
        engines.append(Engine(TrainExperiment(cfg, run_dir), run_dir))
    solo = engines.pop()
    batch = TrainExperiment.ensemble([e.exp for e in engines])
    return Members(batch, engines, quiet=True), solo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--launch", action="store_true", help="time to the first step instead")
    ap.add_argument("--profile", action="store_true", help="pyinstrument the batched steps")
    a = ap.parse_args()
    if a.launch:
        print(f"launch overhead, {a.members}-seed lotka sweep: "
              f"{launch_overhead(a.members, 5):.2f} s to the first batched step")
        return
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="odecli-ensemble-step-") as tmp:
        group, solo = build(a.members, a.dtype, Path(tmp))
        active = list(range(a.members))
        batched, alone = [], []
        for _ in range(a.blocks):
            start = time.perf_counter()
            for _ in range(a.steps):
                group._step(active)
            batched.append((time.perf_counter() - start) / a.steps)
            start = time.perf_counter()
            for _ in range(a.steps):
                solo.step()
            alone.append((time.perf_counter() - start) / a.steps)
        if a.profile:
            from pyinstrument import Profiler

            with Profiler(interval=0.0005) as prof:
                for _ in range(a.steps):
                    group._step(active)
            prof.print(show_all=False)
    b, s = statistics.median(batched), statistics.median(alone)
    print(f"{a.members} members, {a.dtype}, steps {a.steps} x {a.blocks} blocks "
          f"(medians; iterations up to {a.steps * a.blocks}):")
    print(f"  batched step {b * 1e3:.1f} ms, solo step {s * 1e3:.1f} ms: "
          f"batched / solo {b / s:.2f}x")


if __name__ == "__main__":
    main()
