"""Speed and memory of odecli against a plain torchdiffeq script: every comparison, one run.

Parts (all by default, in this order; each prints a markdown table):
  startup    `odecli --help` and `odecli list` wall time (no torch import on those paths)
  overhead   odecli's training step vs the plain loop on identical weights, windows, targets
  threads    the ode_demo training step at 1, 2, ... CPU threads (the device.threads default)
  fit        time to a fitted model: the plain loop's 2000 iterations vs experiment=ode_fast
  gradients  direct / adjoint / checkpoint: time, NFE, peak memory, gradient error vs horizon
  devices    CPU vs CUDA per iteration, tiny model and a large batch (needs a GPU for CUDA)
  compile    torch.compile of the vector field vs eager, on the experiment=ode_fast step

Ratios come from one run on one machine; times are medians over repeated blocks, and
alternating blocks are used where two loops are compared so drift hits both alike. With
--record each table is appended to benchmarks/RESULTS.md with the date, machine and command;
with --out DIR each part's table is also written to DIR/<part>.md (benchmarks/gpu_check.sh
collects the CUDA tables that way).

    python benchmarks/speed.py [--parts fit gradients ...] [--seeds 3] [--record] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import PlainField, PlainLoop, spiral_truth  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
PARTS = ("startup", "overhead", "threads", "fit", "gradients", "devices", "compile")
FIT_PRESET = "ode_fast"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def record(title: str, text: str, extra: str = "") -> None:
    """Append a table to RESULTS.md under a heading with the date, machine and the command
    that made it (this script's argv)."""
    command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
    with RESULTS.open("a") as fh:
        fh.write(f"\n### {title} ({datetime.date.today()}, {machine()}{extra})\n\n"
                 f"`{command.strip()}`\n\n{text}")


def odecli_cmd() -> list[str]:
    exe = shutil.which("odecli")
    return [exe] if exe else [sys.executable, "-m", "odecli"]


def timed(step: Callable[[], object], iters: int) -> float:
    """Mean milliseconds per call over `iters` calls."""
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters * 1e3


def trainer(*overrides: str, run_dir: Path | None = None):
    from hydra import compose, initialize_config_dir

    from odecli.dynamics.experiment import DynamicsExperiment
    from odecli.engine.loop import Engine
    from odecli.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["quiet=true", *overrides])
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="odecli-bench-"))
    return Engine(DynamicsExperiment(cfg, run_dir), run_dir)


# -- parts ----------------------------------------------------------------------------------
def part_startup(args) -> tuple[str, list[str]]:
    rows = ["| command | wall (median of 5) | target |", "|---|---:|---|"]
    for sub in (["--help"], ["list"]):
        walls = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([*odecli_cmd(), *sub], capture_output=True, check=True)
            walls.append(time.perf_counter() - t0)
        w = statistics.median(walls)
        rows.append(f"| `odecli {' '.join(sub)}` | {w:.2f} s | < 0.5 s: "
                    f"{'met' if w < 0.5 else 'MISSED'} |")
    return "Start-up", rows


def part_overhead(args) -> tuple[str, list[str]]:
    torch.set_num_threads(1)
    ours = trainer("experiment=ode_demo", "device.threads=1")
    gen = torch.Generator().manual_seed(int(ours.cfg.seed))
    exp = ours.exp
    plain = PlainLoop(weights=exp.field.net.state_dict(), true_y=exp.truth[: exp.n_train],
                      gen=gen)
    timed(plain.step, 10)
    timed(ours.step, 10)
    p_ms, o_ms = [], []
    n0, p0 = exp.counter.nfe, plain.func.nfe
    for _ in range(args.repeats):
        p_ms.append(timed(plain.step, args.iters))
        o_ms.append(timed(ours.step, args.iters))
    n = args.iters * args.repeats
    o_nfe, p_nfe = (exp.counter.nfe - n0) / n, (plain.func.nfe - p0) / n
    p, o = statistics.median(p_ms), statistics.median(o_ms)
    rows = ["| loop | ms / iteration | NFE / iteration | ratio |", "|---|---:|---:|---:|",
            f"| plain torchdiffeq loop | {p:.2f} | {p_nfe:.1f} | 1.000 |",
            f"| odecli Engine.step (experiment=ode_demo) | {o:.2f} | {o_nfe:.1f} | "
            f"{o / p:.3f} |"]
    return "Training-step overhead (same weights, windows and targets)", rows


def part_threads(args) -> tuple[str, list[str]]:
    ours = trainer("experiment=ode_demo")
    counts = [c for c in (1, 2, 4, 8, 16) if c <= (os.cpu_count() or 1)]
    times: dict[int, list[float]] = {c: [] for c in counts}
    torch.set_num_threads(1)
    timed(ours.step, 10)
    for _ in range(args.repeats):
        for c in counts:
            torch.set_num_threads(c)
            times[c].append(timed(ours.step, args.iters))
    torch.set_num_threads(1)
    base = statistics.median(times[counts[0]])
    rows = ["| torch threads | ms / iteration (median) | vs 1 thread |", "|---:|---:|---:|"]
    for c in counts:
        m = statistics.median(times[c])
        rows.append(f"| {c} | {m:.2f} | {m / base:.2f}x |")
    return "CPU threads, ode_demo training step (tiny model)", rows


def part_fit(args) -> tuple[str, list[str]]:
    torch.set_num_threads(1)
    target = args.target
    plain_rows, ours_rows = [], []
    for seed in range(args.seeds):
        loop = PlainLoop(seed=seed)
        elapsed, hit, log = 0.0, None, []
        for i in range(1, 2001):
            t0 = time.perf_counter()
            loop.step()
            elapsed += time.perf_counter() - t0
            if i % 100 == 0:  # evaluation outside the clock, as for odecli below
                err = loop.error()
                log.append(err)
                if hit is None and err <= target:
                    hit = elapsed
        plain_rows.append((seed, elapsed, log[-1], min(log), hit))
        print(f"  plain seed {seed}: 2000 its {elapsed:.1f} s, error {log[-1]:.4f}", flush=True)
    for seed in range(args.seeds):
        tr = trainer(f"experiment={FIT_PRESET}", f"seed={seed}")
        every = max(1, int(tr.opts["niters"]) // 20)
        elapsed, hit, err = 0.0, None, float("nan")
        for i in range(1, int(tr.opts["niters"]) + 1):
            t0 = time.perf_counter()
            tr.step()
            elapsed += time.perf_counter() - t0
            if i % every == 0 or i == tr.opts["niters"]:
                err = tr.exp.evaluate()["eval_loss"]  # ode_demo's mean L1 over the 1000 points
                if hit is None and err <= target:
                    hit = (i, elapsed)
        ours_rows.append((seed, elapsed, err, hit, int(tr.opts["niters"])))
        print(f"  odecli seed {seed}: {elapsed:.1f} s, error {err:.4f}, hit {hit}", flush=True)
    plain_time = statistics.median(r[1] for r in plain_rows)
    rows = ["| run | seed | training time | mean L1 error at the end | time to L1 <= "
            f"{target} | vs plain 2000 its |", "|---|---:|---:|---:|---:|---:|"]
    for seed, el, err, best, hit in plain_rows:
        rows.append(f"| plain loop, 2000 its | {seed} | {el:.1f} s | {err:.4f} (best "
                    f"{best:.4f}) | {f'{hit:.1f} s' if hit else 'never'} | 1.00 |")
    for seed, el, err, hit, n in ours_rows:
        ttt = f"{hit[1]:.1f} s (it {hit[0]})" if hit else "never"
        ratio = f"{hit[1] / plain_time:.2f}" if hit else "-"
        rows.append(f"| odecli experiment={FIT_PRESET}, {n} its | {seed} | {el:.1f} s | "
                    f"{err:.4f} | {ttt} | {ratio} |")
    # End to end, as a user sees it: the plain script against the odecli command.
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("plain_loop.py"))],
                             capture_output=True, text=True, check=True)
        plain_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([*odecli_cmd(), "train", f"experiment={FIT_PRESET}", "quiet=true"],
                       capture_output=True, check=True,
                       env={**os.environ, "ODECLI_OUTPUTS": tmp})
        ours_wall = time.perf_counter() - t0
        m = json.loads(next(Path(tmp).rglob("metrics.json")).read_text())
    rows += ["", "| end to end (process wall, seed 0) | wall | mean L1 error | ratio |",
             "|---|---:|---:|---:|",
             f"| `python benchmarks/plain_loop.py` (2000 its) | {plain_wall:.1f} s | "
             f"{float(out.stdout.split()[-1]):.4f} | 1.00 |",
             f"| `odecli train experiment={FIT_PRESET}` (with figures) | {ours_wall:.1f} s | "
             f"{m['eval_loss']:.4f} | {ours_wall / plain_wall:.2f} |"]
    return "Time to a fitted model (ode_demo problem, 1 CPU thread)", rows


GRAD_SCRIPT = r"""
import json, sys, time, statistics, torch
sys.path.insert(0, sys.argv[1])
from plain_loop import PlainField, spiral_truth
from odecli.numerics import solve
a = json.loads(sys.argv[2])
torch.set_num_threads(a["threads"])
dev = torch.device(a["device"])
field = PlainField(a["width"])
field.load_state_dict(torch.load(a["weights"]))
func = solve.CountingField(field).to(dev)
t, truth = spiral_truth()
gen = torch.Generator().manual_seed(0)
s = torch.randint(0, 1000 - a["points"], (a["batch"],), generator=gen)
y0 = truth[s, 0].to(dev)
tt = t[: a["points"]].to(dev)
target = torch.stack([truth[s + i, 0] for i in range(a["points"])]).to(dev)
spec = solve.SolverSpec(method="dopri5", rtol=a["rtol"], atol=a["atol"], gradient=a["mode"])
def step():
    field.zero_grad()
    n0 = func.nfe
    pred = solve.solve(func, y0, tt, spec)
    n1 = func.nfe
    (pred - target).abs().mean().backward()
    return n1 - n0, func.nfe - n1
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
nfe = step()   # warm-up; its graph is gone before the memory baseline
sync()
grad = torch.cat([p.grad.flatten() for p in field.parameters()]).double().cpu()
def rss_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
def mark():
    # start a peak-memory window; returns the baseline in bytes
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    open("/proc/self/clear_refs", "w").write("5")   # reset the peak RSS to the current RSS
    return rss_kib("VmRSS:") * 1024
def peak_since(base):
    sync()
    return (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else rss_kib("VmHWM:") * 1024) - base
base = mark()
times = []
for _ in range(a["repeats"]):
    sync(); t0 = time.perf_counter(); step(); sync()
    times.append((time.perf_counter() - t0) * 1e3)
peak = peak_since(base)
# The same loss without gradients: what holding the trajectory and the loss costs anyway.
base = mark()
with torch.no_grad():
    float((solve.solve(func, y0, tt, spec, grad=False) - target).abs().mean())
peak_eval = peak_since(base)
# reference gradient: direct backprop in float64 at tight tolerances, same batch and weights;
# the same for every mode at this horizon, so the first mode's is kept for the others
try:
    ref = torch.load(a["ref"])
except FileNotFoundError:
    func64 = solve.CountingField(PlainField(a["width"])).double().to(dev)
    func64.func.load_state_dict(field.state_dict())
    ref_spec = solve.SolverSpec(method="dopri5", rtol=1e-10, atol=1e-12, gradient="direct")
    (solve.solve(func64, y0.double(), tt.double(), ref_spec)
     - target.double()).abs().mean().backward()
    ref = torch.cat([p.grad.flatten() for p in func64.parameters()]).cpu()
    torch.save(ref, a["ref"])
print(json.dumps({"ms": statistics.median(times), "nfe": nfe, "peak": peak,
                  "peak_eval": peak_eval,
                  "grad_err": float((grad - ref).norm() / ref.norm())}))
"""


class TimeLimit(Exception):
    """SIGTERM, as `timeout` sends it (benchmarks/gpu_check.sh): the devices and gradients
    parts end their tables with what they measured instead of losing them."""


def _time_limit(signum: int, frame: object) -> None:
    raise TimeLimit


def grad_mem(r: dict) -> int:
    """Peak of the training step beyond the same loss evaluated without gradients."""
    return max(r["peak"] - r["peak_eval"], 0)


def ratio(b: float, a: float) -> str:
    return f"{b / a:.2f}x" if a >= 2**18 else "n/a (< 0.25 MiB)"


def part_gradients(args) -> tuple[str, list[str]]:
    dev = args.device
    width, batch = args.width, args.batch
    # A field trained briefly on the spiral, so the solver meets realistic dynamics.
    torch.manual_seed(0)
    torch.set_num_threads(args.threads or (os.cpu_count() or 1))
    field = PlainField(width)
    t, truth = spiral_truth()
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    from torchdiffeq import odeint

    for _ in range(args.pretrain):
        s = torch.randint(0, 990, (batch,))
        pred = odeint(field, truth[s, 0], t[:10], rtol=1e-3, atol=1e-4)
        target = torch.stack([truth[s + i, 0] for i in range(10)])
        opt.zero_grad()
        (pred - target).abs().mean().backward()
        opt.step()
    what = "GPU allocated" if dev == "cuda" else "RSS"
    rows = [f"| mode | points | ms / iteration | NFE forward | NFE backward | peak memory, "
            f"training step ({what}) | of which for gradients | gradient error | time vs "
            "direct |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    results: dict[tuple[str, int], dict] = {}
    # adjoint last: on a GPU its long horizons take longest, and a time limit (SIGTERM, see
    # TimeLimit) should cut it rather than the modes measured against it
    order = ([(m, p) for p in args.points for m in ("direct", "checkpoint")]
             + [("adjoint", p) for p in args.points])
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.pt"
        torch.save(field.state_dict(), weights)
        try:
            for mode, points in order:
                spec = {"mode": mode, "points": points, "width": width, "batch": batch,
                        "device": dev, "rtol": args.rtol, "atol": args.atol,
                        "threads": args.threads or (os.cpu_count() or 1),
                        "repeats": args.grad_repeats, "weights": str(weights),
                        "ref": str(Path(tmp) / f"ref{points}.pt")}
                # glibc keeps freed blocks for reuse, which hides a later peak behind the
                # warm-up's; serving every block over 64 KiB by mmap returns it on free, so
                # the process's peak RSS tracks the tensors alive at the peak.
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536",
                       "MALLOC_TRIM_THRESHOLD_": "0"}
                out = subprocess.run(
                    [sys.executable, "-c", GRAD_SCRIPT, str(Path(__file__).parent),
                     json.dumps(spec)], capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    raise RuntimeError(out.stderr[-2000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[(mode, points)] = r
                print(f"  {mode} {points}: {r}", flush=True)
        except TimeLimit:
            print("  time limit: the table holds what was measured", flush=True)
    missing = "| not measured (time limit) | | | | | | |"
    for mode in ("direct", "adjoint", "checkpoint"):
        for points in args.points:
            r, d = results.get((mode, points)), results.get(("direct", points))
            if r is None:
                rows.append(f"| {mode} | {points} {missing}")
                continue
            vs = f"{r['ms'] / d['ms']:.2f}x" if d else "-"
            rows.append(f"| {mode} | {points} | {r['ms']:.1f} | {r['nfe'][0]} | {r['nfe'][1]} | "
                        f"{r['peak'] / 2**20:.1f} MiB | {grad_mem(r) / 2**20:.1f} MiB | "
                        f"{r['grad_err']:.1e} | {vs} |")
    lo, hi = min(args.points), max(args.points)
    for mode in ("direct", "adjoint", "checkpoint"):
        a, b = results.get((mode, lo)), results.get((mode, hi))
        if a is None or b is None:
            continue
        rows.append(f"| {mode}: {hi} vs {lo} points | | | | | {ratio(b['peak'], a['peak'])} | "
                    f"{ratio(grad_mem(b), grad_mem(a))} | | |")
    title = (f"Gradient modes vs horizon ({dev}, batch {batch}, width {width}, dopri5 rtol "
             f"{args.rtol} atol {args.atol}, {args.threads or os.cpu_count()} threads)")
    return title, rows


def per_iter_ms(step: Callable[[], object], repeats: int, block_s: float) -> float:
    """Median ms per call over `repeats` blocks of up to 10 calls, each block about `block_s`
    seconds: a slow configuration (a large batch on one CPU thread) is timed over fewer calls
    instead of for minutes."""
    timed(step, 3)  # warm-up: allocator, BLAS/cuBLAS handles, CUDA kernels
    iters = max(1, min(10, round(block_s * 1e3 / timed(step, 1))))
    return statistics.median(timed(step, iters) for _ in range(repeats))


def part_devices(args) -> tuple[str, list[str]]:
    from torchdiffeq import odeint

    t, truth = spiral_truth()
    dt = float(t[1] - t[0])  # a Python float: a tensor step size costs a GPU sync per solve

    def plain(device: str, batch: int, width: int) -> Callable[[], object]:
        """One plain torchdiffeq training step (rk4 on the 10-point window, direct backprop)."""
        torch.manual_seed(0)
        dev = torch.device(device)
        field = PlainField(width).to(dev)
        opt = torch.optim.RMSprop(field.parameters(), lr=1e-3)
        s = torch.randint(0, 990, (batch,))
        y0, tt = truth[s, 0].to(dev), t[:10].to(dev)
        target = torch.stack([truth[s + i, 0] for i in range(10)]).to(dev)

        def step():
            opt.zero_grad()
            (odeint(field, y0, tt, method="rk4", options={"step_size": dt})
             - target).abs().mean().backward()
            opt.step()

        return step

    def ours(device: str, batch: int, width: int) -> Callable[[], object]:
        """odecli's Engine.step on the same problem (ode_demo's field and optimiser, rk4 at
        the data's spacing, direct backprop); fresh windows each step, from its own seed."""
        tr = trainer("experiment=ode_demo", "solver=rk4", f"solver.step_size={dt!r}",
                     "gradient=direct", f"model.width={width}", f"train.batch_size={batch}",
                     f"device={device}", f"device.threads={torch.get_num_threads()}")
        return tr.step

    def per_iter(make: Callable[[str, int, int], Callable[[], object]], device: str,
                 batch: int, width: int, threads: int) -> float:
        torch.set_num_threads(threads)
        step = make(device, batch, width)
        if device == "cuda":
            def synced():
                step()
                torch.cuda.synchronize()
            return per_iter_ms(synced, args.device_repeats, args.device_block)
        return per_iter_ms(step, args.device_repeats, args.device_block)

    cores = os.cpu_count() or 1
    gpu = torch.cuda.is_available()
    rows = ["| problem | loop | CPU 1 thread | CPU all cores | CUDA | GPU speed-up vs all "
            "cores |", "|---|---|---:|---:|---:|---:|"]
    try:
        for name, batch, width in (("tiny: batch 20, width 50", 20, 50),
                                   ("large: batch 4096, width 512", 4096, 512)):
            for label, make in (("plain torchdiffeq", plain), ("odecli Engine.step", ours)):
                c1 = per_iter(make, "cpu", batch, width, 1)
                cn = per_iter(make, "cpu", batch, width, cores)
                g = per_iter(make, "cuda", batch, width, 1) if gpu else None
                print(f"  {name}, {label}: 1 thread {c1:.1f} ms, {cores} threads {cn:.1f} ms, "
                      f"CUDA {'-' if g is None else f'{g:.1f} ms'}", flush=True)
                cuda = f"{g:.1f} ms | {cn / g:.1f}x" if g is not None else "no GPU | -"
                rows.append(f"| {name} | {label} | {c1:.1f} ms | {cn:.1f} ms | {cuda} |")
    except TimeLimit:
        rows.append("| the rest: not measured (time limit) | | | | | |")
    torch.set_num_threads(1)
    return (f"CPU vs CUDA per training iteration (rk4, 10 points, direct backprop, "
            f"{cores} cores)", rows)


def part_compile(args) -> tuple[str, list[str]]:
    torch.set_num_threads(1)
    tr = trainer(f"experiment={FIT_PRESET}")
    timed(tr.step, 5)
    eager = [timed(tr.step, args.iters) for _ in range(args.repeats)]
    t0 = time.perf_counter()
    tr.exp.field.net = torch.compile(tr.exp.field.net, dynamic=False)
    timed(tr.step, 2)
    compile_s = time.perf_counter() - t0
    timed(tr.step, 5)
    comp = [timed(tr.step, args.iters) for _ in range(args.repeats)]
    e, c = statistics.median(eager), statistics.median(comp)
    rows = ["| field | ms / iteration | vs eager | one-off compile |", "|---|---:|---:|---:|",
            f"| eager | {e:.2f} | 1.00x | |",
            f"| torch.compile (inductor) | {c:.2f} | {c / e:.2f}x | {compile_s:.1f} s |"]
    return f"torch.compile of the vector field (experiment={FIT_PRESET} step, 1 thread)", rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--iters", type=int, default=50, help="iterations per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per side")
    parser.add_argument("--seeds", type=int, default=3, help="fit: seeds per side")
    parser.add_argument("--target", type=float, default=0.08,
                        help="fit: mean L1 error to reach (the figure quoted for ode_demo's "
                             "plain loop after 2000 iterations)")
    parser.add_argument("--points", type=int, nargs="+", default=[10, 100, 400])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--pretrain", type=int, default=100)
    parser.add_argument("--grad-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="gradients: torch threads (default: all cores)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="gradients: the device measured")
    parser.add_argument("--device-repeats", type=int, default=3,
                        help="devices: timed blocks per configuration")
    parser.add_argument("--device-block", type=float, default=1.0,
                        help="devices: seconds per timed block (at most 10 iterations)")
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write each part's table to OUT/<part>.md")
    args = parser.parse_args()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _time_limit)
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    header = f"({datetime.date.today()}, {machine()})"
    for part in args.parts:
        print(f"== {part}", flush=True)
        title, rows = globals()[f"part_{part}"](args)
        text = f"### {title} {header}\n\n`{command.strip()}`\n\n" + "\n".join(rows) + "\n"
        print(text, flush=True)
        if args.out is not None:
            (args.out / f"{part}.md").write_text(text)
        if args.record:
            with RESULTS.open("a") as fh:
                fh.write("\n" + text)


if __name__ == "__main__":
    main()
