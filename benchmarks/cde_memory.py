"""Memory against series length: one training step of `odecli cde`'s neural CDE.

JapaneseVowels' series, each resampled to L equal steps over its span (L = 25, 100, 400 by
default), are the path; the CDE (the default model: hidden 32, field width 64, 2 layers,
Hermite interpolation) is solved by rk4 with one step per grid interval, so a step's depth is
4 L function evaluations. Direct backprop keeps every evaluation's activations for the
backward pass (memory grows with L); gradient=checkpoint (odecli's default) keeps one state
per step and replays one step at a time; the adjoint solves backwards and keeps nothing.

Each configuration runs in its own process on one batch; memory is the peak RSS increase
during the step over the process's state just before it (glibc set to serve every block by
mmap, so freed memory leaves the RSS at once; /proc's clear_refs resets the high-water
mark), as benchmarks/classify_memory.py measures it.

    python benchmarks/cde_memory.py [--lengths 25 100 400] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys, time
import numpy as np, torch
import torch.nn.functional as F
from omegaconf import OmegaConf
import odecli
from odecli.cde import data as data_mod, models
from odecli.numerics.solve import SolverSpec
a = json.loads(sys.argv[1])
torch.manual_seed(0); torch.set_num_threads(a["threads"])
cfg = odecli.compose("cde", [])  # `odecli cde`'s defaults, from its configs
node = OmegaConf.to_container(cfg.data, resolve=True)
d = data_mod.load(node, 0)
rows = d.train[: a["batch"]]
L = a["length"]
x = models.resample(d.x[rows], d.t, L).reshape(len(rows), L, -1)  # equal length L
t = np.arange(L, dtype=np.float64)
path = data_mod.path_channels(x, t, float(L - 1), node["time_channel"], node["mask_channel"])
m = OmegaConf.to_container(cfg.model, resolve=True)
model = models.NeuralCDE(m, path.shape[-1], d.n_classes)
tt = torch.as_tensor(t, dtype=torch.float32)
feats = model.features(torch.as_tensor(path, dtype=torch.float32),
                       torch.as_tensor(x, dtype=torch.float32), tt)
y = torch.as_tensor(d.y[rows])
spec = SolverSpec("rk4", a["gradient"], step_size=1.0)
def step():
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(feats, tt, spec), y).backward()
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
step()  # warm-up; its graph is gone before the baseline
model.zero_grad(set_to_none=False)
open("/proc/self/clear_refs", "w").write("5"); base = rss("VmRSS:")
n0 = model.counter.nfe
t0 = time.perf_counter(); step(); ms = (time.perf_counter() - t0) * 1e3
peak = rss("VmHWM:") - base
print(json.dumps({"peak": peak, "ms": ms, "nfe": model.counter.nfe - n0}))
"""


def run(spec: dict) -> dict:
    # every block by mmap: the CDE's tensors are small (a batch of 32 states is 4 KiB), and
    # blocks from the heap would be reused across steps without showing in the RSS
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "0", "MALLOC_TRIM_THRESHOLD_": "0",
           "MALLOC_MMAP_MAX_": "1000000"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(spec)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[25, 100, 400])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gradients", nargs="+", default=["direct", "checkpoint", "adjoint"])
    a = p.parse_args()
    print(f"Peak memory of one neural-CDE training step (RSS increase, MiB; ms and NFE "
          f"forward+backward in parentheses), JapaneseVowels batch {a.batch} resampled to "
          f"L steps, rk4 step 1, {a.threads} thread(s)\n")
    print("| gradient | " + " | ".join(f"L = {n}" for n in a.lengths)
          + f" | L = {a.lengths[-1]} / L = {a.lengths[0]} |")
    print("|---|" + "---:|" * (len(a.lengths) + 1))
    for grad in a.gradients:
        res = [run({"gradient": grad, "length": n, "batch": a.batch, "threads": a.threads})
               for n in a.lengths]
        cells = " | ".join(f"{r['peak'] / 2**20:.1f} ({r['ms']:.0f} ms, {r['nfe']})"
                           for r in res)
        growth = res[-1]["peak"] / max(res[0]["peak"], 1)
        print(f"| {grad} | {cells} | {growth:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
