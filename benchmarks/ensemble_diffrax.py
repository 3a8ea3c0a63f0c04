"""ode_demo's problem, 32 members: odecli's batched ensemble against a JAX/diffrax ensemble
(issue 28's last target: member-iterations per second within 2x of diffrax's).

The problem is benchmarks/diffrax_compare.py's (torchdiffeq's ode_demo: cubic spiral, 1000
points on [0, 25], batches of 20 windows of 10 points, a 2-50-2 tanh network on y**3, dopri5
at rtol 1e-7 / atol 1e-9, RMSprop 1e-3, float32). Timed, in alternating blocks in one process
(pinned to one CPU core, one thread per library, as diffrax_compare.py does):

  diffrax ensemble  diffrax_compare.py's training step (equinox field, Dopri5 +
                    PIDController, optax RMSprop) `jax.vmap`-ed over the members and jitted
                    (eqx.filter_jit); each member has its own initial weights and windows
                    (seed i), and inside the vmapped while loop its own step sizes
  odecli ensemble   `odecli train experiment=ode_demo` members seed=0..N-1 built as
                    `hydra/launcher=ensemble` builds them (benchmarks/ensemble_step.py's
                    build), timed on the batched training step itself (Members._step: the
                    batched losses, one backward, every member's RMSprop step); start-up,
                    evaluations and file writes are not in it, nor are they in diffrax's
  odecli solo       one `odecli train experiment=ode_demo seed=0` engine's step (reference)
  diffrax solo      diffrax_compare.py's single-run jitted step (reference)

Reported: compile / first-step time, ms per iteration (median over blocks), member-iterations
per second (members / time per iteration), forward NFE per member-iteration, and the ratio.

    pip install ".[bench]"     # jax, equinox, diffrax, optax; without them: a skip note
    python benchmarks/ensemble_diffrax.py [--members 32 --iters 200 --block 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# diffrax_compare sets XLA_FLAGS / OMP_NUM_THREADS (one thread) before jax or torch load
from diffrax_compare import (  # noqa: E402
    DiffraxLoop,
    diffrax_model,
    diffrax_problem,
    initial_weights,
    windows,
)
from ensemble_step import build  # noqa: E402
from plain_loop import spiral_truth  # noqa: E402

ODE_DEMO = ["experiment=ode_demo", "quiet=true", "plots.enabled=false"]


class DiffraxEnsemble:
    """diffrax_compare.py's training step, vmapped over `members` and jitted."""

    def __init__(self, members: int, t, true_y) -> None:
        import equinox as eqx
        import jax
        import jax.numpy as jnp

        self.jnp = jnp
        optim, train_step, _ = diffrax_problem(t, true_y)
        models = [diffrax_model(initial_weights(seed)) for seed in range(members)]
        parts = [eqx.partition(m, eqx.is_array) for m in models]
        self.static = parts[0][1]
        self.params = jax.tree.map(lambda *xs: jnp.stack(xs), *[p for p, _ in parts])
        self.opt_state = jax.vmap(optim.init)(self.params)

        def member_step(params, opt_state, s):
            model, opt_state, steps = train_step(eqx.combine(params, self.static),
                                                 opt_state, s)
            return eqx.filter(model, eqx.is_array), opt_state, steps

        self._step = eqx.filter_jit(jax.vmap(member_step))
        self.steps = 0  # solver steps, summed over members

    def step(self, s) -> None:
        self.params, self.opt_state, steps = self._step(self.params, self.opt_state, s)
        self.steps += int(steps.sum())  # waits for the step, as DiffraxLoop's int(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--iters", type=int, default=200, help="timed iterations per loop")
    ap.add_argument("--block", type=int, default=20,
                    help="iterations per block; the loops alternate block by block")
    a = ap.parse_args()
    missing = [m for m in ("jax", "equinox", "diffrax", "optax")
               if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (pip install \".[bench]\")")
        return
    import diffrax
    import jax
    import jax.numpy as jnp
    import torch

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    n, m = a.iters, a.members
    t, true_y = spiral_truth()
    per_member = [windows(n + 1, seed) for seed in range(m)]
    batches = [jnp.asarray(torch.stack([w[i] for w in per_member]).numpy())
               for i in range(n + 1)]                          # (members, BATCH) each
    solo_windows = windows(n + 1)

    first: dict[str, float] = {}
    start = time.perf_counter()
    ens = DiffraxEnsemble(m, t, true_y)
    ens.step(batches[0])
    first["diffrax ensemble"] = time.perf_counter() - start
    ens.steps = 0
    start = time.perf_counter()
    dsolo = DiffraxLoop(t, true_y, initial_weights())
    dsolo.step(solo_windows[0])
    first["diffrax solo"] = time.perf_counter() - start
    dsolo.nfe_forward = 0

    with tempfile.TemporaryDirectory(prefix="odecli-ensemble-diffrax-") as tmp:
        start = time.perf_counter()
        group, solo = build(m, "float32", Path(tmp), ODE_DEMO)
        first["odecli build (both)"] = time.perf_counter() - start
        active = list(range(m))
        start = time.perf_counter()
        group._step(active)
        first["odecli ensemble"] = time.perf_counter() - start
        start = time.perf_counter()
        solo.step()
        first["odecli solo"] = time.perf_counter() - start
        nfe0 = [group.engines[i].nfe_forward for i in active]
        solo_nfe0 = solo.nfe_forward

        loops = {
            "diffrax ensemble": lambda i: ens.step(batches[i]),
            "odecli ensemble": lambda i: group._step(active),
            "diffrax solo": lambda i: dsolo.step(solo_windows[i]),
            "odecli solo": lambda i: solo.step(),
        }
        times: dict[str, list[float]] = {k: [] for k in loops}
        for b in range(1, n + 1, a.block):
            its = range(b, min(b + a.block, n + 1))
            for name, step in loops.items():
                start = time.perf_counter()
                for i in its:
                    step(i)
                times[name].append((time.perf_counter() - start) / len(its))
        nfe = {
            "diffrax ensemble": (6 * ens.steps + m * n) / (m * n),
            "odecli ensemble": sum(group.engines[i].nfe_forward - nfe0[i]
                                   for i in active) / (m * n),
            "diffrax solo": dsolo.nfe_forward / n,
            "odecli solo": (solo.nfe_forward - solo_nfe0) / n,
        }
    size = {"diffrax ensemble": m, "odecli ensemble": m, "diffrax solo": 1, "odecli solo": 1}
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rate = {k: size[k] * 1e3 / ms[k] for k in ms}
    print(f"ode_demo problem, {m} members, {n} timed iterations (blocks of {a.block}), "
          f"float32, 1 CPU core; jax {jax.__version__}, diffrax {diffrax.__version__}, "
          f"torch {torch.__version__}\n")
    print("| loop | members | first step (compile) | ms / iteration | member-iterations/s | "
          "forward NFE / member-iteration | time per member-iteration vs diffrax ensemble |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = rate["diffrax ensemble"]
    for k in loops:
        print(f"| {k} | {size[k]} | {first[k]:.1f} s | {ms[k]:.1f} | {rate[k]:.0f} | "
              f"{nfe[k]:.1f} | {base / rate[k]:.2f}x |")
    ratio = base / rate["odecli ensemble"]
    print(f"\nodecli ensemble: {ratio:.2f}x diffrax ensemble's time per member-iteration; "
          f"target (within 2x): {'met' if ratio <= 2 else 'NOT met'}")
    print(f"batching gain, member-its/s ensemble / solo: odecli "
          f"{rate['odecli ensemble'] / rate['odecli solo']:.1f}x, diffrax "
          f"{rate['diffrax ensemble'] / rate['diffrax solo']:.1f}x "
          f"(odecli build of {m}+1 engines: {first['odecli build (both)']:.1f} s, not timed)")


if __name__ == "__main__":
    main()
