"""Memory against depth: one training step of a ResNet and of an ODE-Net at depth N.

The ResNet has N untied residual blocks (direct backprop: every block's activations are kept
for the backward pass). The ODE-Net is the same network with one block solved by Euler at
step 1/N over [0, 1] (so its depth is N function evaluations), trained with each gradient
mode: direct (backprop through the solver: grows with N), adjoint (a backward solve: flat)
and checkpoint (odecli's default: keeps one state per step, replays one step at a time).

Each configuration runs in its own process on one batch of scikit-learn's digits; memory is
the peak RSS increase during the step over the process's state just before it (CPU: glibc
set to serve every block over 64 KiB by mmap so freed memory leaves the RSS; /proc's
clear_refs resets the high-water mark), or the CUDA allocator's peak on a GPU. Timings on a
shared machine are noisy; the memory figures are not.

    python benchmarks/classify_memory.py [--depths 4 16 64] [--batch 128] [--width 32]
        [--norm-groups 32] [--head flatten]
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
from odecli.classify.data import load
from odecli.classify.models import Classifier, n_params
from odecli.numerics.solve import SolverSpec
a = json.loads(sys.argv[1])
torch.manual_seed(0); torch.set_num_threads(a["threads"])
dev = torch.device(a["device"])
d = load({"name": "digits", "val_fraction": 0.1, "test_fraction": 0.2, "limit": None}, 0)
x = torch.as_tensor(d.x[d.train[: a["batch"]]], device=dev)
y = torch.as_tensor(d.y[d.train[: a["batch"]]], device=dev)
m = {"name": "odenet" if a["model"] == "odenet" else "resnet", "field": "conv",
     "width": a["width"], "downsample": 0, "augment_dim": 0, "norm_groups": a["norm_groups"],
     "head": a["head"], "blocks": a["depth"], "tied": False}
if m["name"] == "odenet":
    m.pop("blocks"); m.pop("tied")
model = Classifier(m, (1, 8, 8), 10).to(dev)
model.set_spec(SolverSpec.from_cfg({"method": "euler", "step_size": 1.0 / a["depth"]},
                                   {"name": a["gradient"]}))
def step():
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
step()  # warm-up; its graph is gone before the baseline
model.zero_grad(set_to_none=False)
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    open("/proc/self/clear_refs", "w").write("5"); base = rss("VmRSS:")
t0 = time.perf_counter(); step(); ms = (time.perf_counter() - t0) * 1e3
peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda" else rss("VmHWM:")) - base
print(json.dumps({"peak": peak, "ms": ms, "params": n_params(model)}))
"""


def run(spec: dict) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(spec)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--norm-groups", type=int, default=32)
    p.add_argument("--head", default="flatten", choices=["flatten", "pool"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    cases = [("resnet", "direct")] + [("odenet", g) for g in ("direct", "adjoint",
                                                             "checkpoint")]
    what = "CUDA allocator" if a.device == "cuda" else "RSS"
    print(f"Peak memory of one training step ({what} increase, MiB; ms in parentheses), "
          f"digits batch {a.batch}, width {a.width}, {a.device}, {a.threads} thread(s)\n")
    print("| model (gradient) | parameters | " + " | ".join(f"depth {n}" for n in a.depths)
          + f" | depth {a.depths[-1]} / depth {a.depths[0]} |")
    print("|---|---:|" + "---:|" * (len(a.depths) + 1))
    for model, grad in cases:
        res = [run({"model": model, "gradient": grad, "depth": n, "batch": a.batch,
                    "width": a.width, "norm_groups": a.norm_groups, "head": a.head,
                    "threads": a.threads, "device": a.device})
               for n in a.depths]
        cells = " | ".join(f"{r['peak'] / 2**20:.1f} ({r['ms']:.0f} ms)" for r in res)
        params = "/".join(sorted({str(r["params"]) for r in res}, key=int))
        growth = res[-1]["peak"] / max(res[0]["peak"], 1)
        label = "ResNet, N untied blocks" if model == "resnet" else "ODE-Net, Euler 1/N"
        print(f"| {label} ({grad}) | {params} | {cells} | {growth:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
