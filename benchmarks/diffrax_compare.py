"""odecli's fast path against JAX + diffrax on torchdiffeq's ode_demo problem, side by side.

The problem (benchmarks/plain_loop.py): cubic spiral, 1000 points on [0, 25], batches of 20
windows of 10 points, a 2-50-2 tanh network on y**3, dopri5 at rtol 1e-7 / atol 1e-9, RMSprop
1e-3, float32. Every loop starts from the same weights and sees the same windows; the process is
pinned to one CPU core and each library told to use one thread. Loops:

  plain      torchdiffeq's odeint with direct backprop (the ode_demo script)
  reference  odecli, gradient=checkpoint, solver.fast=false (torchdiffeq's loop, replayed)
  fast       odecli, gradient=checkpoint, solver.fast=true (numerics/rk.py)
  compiled   the fast loop with solver.compile=true (torch.compile of each whole step)
  direct     odecli, gradient=direct on the fast loop (backprop through its steps' graph)
  direct-compiled  the same with solver.compile=true
  diffrax    equinox field, diffrax Dopri5 + PIDController (its I-controller), default
             RecursiveCheckpointAdjoint, optax RMSprop matched to torch's, the whole step
             under eqx.filter_jit
  floor      not a solver: PyTorch's floor on this work. Each window is 9 fixed dopri5 steps,
             one per output interval (55 evaluations, about the adaptive solve's 50), with no
             error estimate, step-size control or interpolation, direct backprop; what is left
             is the field's arithmetic and the stage sums
  floor-compiled  the same, the whole loss (all 9 steps) one torch.compile graph, its backward
             one AOTAutograd graph: the fastest any torch loop on this CPU could be

Reported: one-off compile time (first step), ms per iteration (median over blocks of
iterations, the loops alternating block by block so drift hits all alike), forward NFE per
iteration, us per forward NFE, and ode_demo's test loss (mean L1 of the rollout from the true
start) after the run. The step-size controllers differ (diffrax takes other steps), hence time
per NFE as well as per iteration.

    pip install ".[bench]"     # jax, equinox, diffrax, optax; without them diffrax is skipped
    python benchmarks/diffrax_compare.py [--iters 600 --block 50] [--modes ...] [--cpp-wrapper]
        [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torchdiffeq import odeint  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import spiral_truth  # noqa: E402
from speed import record  # noqa: E402

from odecli.dynamics.models import ODEField  # noqa: E402
from odecli.numerics import solve  # noqa: E402

RTOL, ATOL, LR, BATCH, WINDOW = 1e-7, 1e-9, 1e-3, 20, 10
MODES = ("plain", "reference", "fast", "compiled", "direct", "direct-compiled", "diffrax",
         "floor", "floor-compiled")


def windows(n_iters: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 1000 - WINDOW + 1, (BATCH,), generator=g) for _ in range(n_iters)]


def new_field() -> ODEField:
    """ode_demo's 2-50-2 tanh field on y**3."""
    return ODEField(2, [50], "tanh", input_power=3, init="seed", init_std=0.1)


def initial_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in new_field().state_dict().items()}


def field_and_optimiser(weights: dict[str, torch.Tensor]
                        ) -> tuple[ODEField, torch.optim.Optimizer]:
    """The field with these weights and its RMSprop, as every torch loop here starts."""
    field = new_field()
    field.load_state_dict(weights)
    return field, torch.optim.RMSprop(field.parameters(), lr=LR)


class TorchLoop:
    """One training loop in torch: `mode` picks the solver path."""

    def __init__(self, mode: str, t: torch.Tensor, true_y: torch.Tensor,
                 weights: dict[str, torch.Tensor]) -> None:
        self.mode, self.t, self.true_y = mode, t, true_y
        self.field, self.opt = field_and_optimiser(weights)
        self.func = solve.CountingField(self.field)
        self.spec = solve.SolverSpec(
            method="dopri5", rtol=RTOL, atol=ATOL,
            gradient="direct" if mode.startswith("direct") else "checkpoint",
            fast=mode != "reference", compile=mode.endswith("compiled"))
        self.nfe_forward = 0

    def step(self, s: torch.Tensor) -> None:
        self.opt.zero_grad()
        y0, bt = self.true_y[s], self.t[:WINDOW]
        by = torch.stack([self.true_y[s + i] for i in range(WINDOW)], dim=0)
        before = self.func.nfe
        if self.mode == "plain":
            pred = odeint(self.func, y0, bt, rtol=RTOL, atol=ATOL)
        else:
            pred = solve.solve(self.func, y0, bt, self.spec)
        self.nfe_forward += self.func.nfe - before
        loss = torch.mean(torch.abs(pred - by))
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def error(self) -> float:
        pred = solve.solve(self.func, self.true_y[0], self.t,
                           solve.SolverSpec("dopri5", "checkpoint", rtol=RTOL, atol=ATOL),
                           grad=False)
        return float(torch.mean(torch.abs(pred - self.true_y)))


class FloorLoop:
    """The floor: 9 fixed dopri5 steps per window (one per output interval), no solver logic,
    direct backprop; `compiled` makes the whole loss one torch.compile graph."""

    def __init__(self, compiled: bool, t: torch.Tensor, true_y: torch.Tensor,
                 weights: dict[str, torch.Tensor]) -> None:
        from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU as tableau

        self.t, self.true_y = t, true_y
        self.field, self.opt = field_and_optimiser(weights)
        self.beta = [[float(b) for b in row] for row in tableau.beta]
        self.h = float(t[1] - t[0])
        self.loss = torch.compile(self._loss, dynamic=False) if compiled else self._loss
        self.nfe_forward = 0

    def _loss(self, y0: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
        t0 = self.t[0]
        y, k1, ys = y0, self.field(t0, y0), [y0]
        for _ in range(WINDOW - 1):
            ks = [k1]
            for row in self.beta:  # stages 2..7; the 7th's input is the new y (FSAL)
                yi = y
                for b, k in zip(row, ks, strict=True):
                    if b:
                        yi = yi + (self.h * b) * k
                ks.append(self.field(t0, yi))
            y, k1 = yi, ks[-1]
            ys.append(y)
        return torch.mean(torch.abs(torch.stack(ys) - by))

    def step(self, s: torch.Tensor) -> None:
        self.opt.zero_grad()
        by = torch.stack([self.true_y[s + i] for i in range(WINDOW)], dim=0)
        loss = self.loss(self.true_y[s], by)
        loss.backward()
        self.opt.step()
        self.nfe_forward += 1 + 6 * (WINDOW - 1)

    @torch.no_grad()
    def error(self) -> float:
        func = solve.CountingField(self.field)
        pred = solve.solve(func, self.true_y[0], self.t,
                           solve.SolverSpec("dopri5", "checkpoint", rtol=RTOL, atol=ATOL),
                           grad=False)
        return float(torch.mean(torch.abs(pred - self.true_y)))


def diffrax_model(weights: dict[str, torch.Tensor]) -> object:
    """ode_demo's 2-50-2 tanh field as an equinox MLP with these (torch) weights."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    mlp = eqx.nn.MLP(2, 2, 50, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    lin1, lin2 = mlp.layers
    w = {k: jnp.asarray(v.numpy()) for k, v in weights.items()}
    lin1 = eqx.tree_at(lambda m: (m.weight, m.bias), lin1, (w["net.0.weight"],
                                                              w["net.0.bias"]))
    lin2 = eqx.tree_at(lambda m: (m.weight, m.bias), lin2, (w["net.2.weight"],
                                                              w["net.2.bias"]))
    return eqx.tree_at(lambda m: m.layers, mlp, (lin1, lin2))


def diffrax_problem(t: torch.Tensor, true_y: torch.Tensor
                    ) -> tuple[object, Callable[..., object], Callable[..., object]]:
    """ode_demo's problem in JAX: (optax optimiser, train_step, rollout), neither jitted.

    train_step(model, opt_state, s) -> (model, opt_state, num_steps): one RMSprop step on the
    windows starting at indices `s`; rollout(model) -> ode_demo's test loss."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    ts = jnp.asarray(t.numpy())
    ys_true = jnp.asarray(true_y.numpy())[:, 0, :]
    # torch's RMSprop: alpha 0.99, eps added outside the square root
    optim = optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False)

    def vector_field(t, y, model):
        return jax.vmap(model)(y**3)

    term = diffrax.ODETerm(vector_field)
    solver = diffrax.Dopri5()
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    def solve_batch(model, y0, ts):
        sol = diffrax.diffeqsolve(term, solver, t0=ts[0], t1=ts[-1], dt0=None, y0=y0,
                                  args=model, saveat=diffrax.SaveAt(ts=ts),
                                  stepsize_controller=controller, max_steps=100000)
        return sol.ys, sol.stats["num_steps"]

    def train_step(model, opt_state, s):
        idx = s[:, None] + jnp.arange(WINDOW)[None, :]
        batch_y = ys_true[idx]                                # (batch, window, 2)

        def loss_fn(m):
            ys, steps = solve_batch(m, batch_y[:, 0, :], ts[:WINDOW])
            return jnp.mean(jnp.abs(ys - jnp.swapaxes(batch_y, 0, 1))), steps

        (loss, steps), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
        updates, opt_state = optim.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, steps

    def rollout(model):
        ys, _ = solve_batch(model, ys_true[:1], ts)
        return jnp.mean(jnp.abs(ys[:, 0, :] - ys_true))

    return optim, train_step, rollout


class DiffraxLoop:
    """The same loop in JAX: equinox field, diffrax solve, optax RMSprop, one jitted step."""

    def __init__(self, t: torch.Tensor, true_y: torch.Tensor,
                 weights: dict[str, torch.Tensor]) -> None:
        import equinox as eqx
        import jax.numpy as jnp

        self.jnp = jnp
        self.model = diffrax_model(weights)
        optim, train_step, rollout = diffrax_problem(t, true_y)
        self.opt_state = optim.init(eqx.filter(self.model, eqx.is_inexact_array))
        self.nfe_forward = 0
        self._train_step, self._rollout = eqx.filter_jit(train_step), eqx.filter_jit(rollout)

    def step(self, s: torch.Tensor) -> None:
        self.model, self.opt_state, steps = self._train_step(
            self.model, self.opt_state, self.jnp.asarray(s.numpy()))
        # Dopri5 is FSAL: 6 new evaluations per step (accepted or rejected), 1 to start
        self.nfe_forward += 6 * int(steps) + 1

    def error(self) -> float:
        return float(self._rollout(self.model))


def run(modes: list[str], n_iters: int, block: int) -> list[dict[str, object]]:
    t, true_y = spiral_truth()
    weights = initial_weights()
    batches = windows(n_iters + 1)
    loops: dict[str, object] = {}
    compile_s: dict[str, float] = {}
    for mode in modes:
        t0 = time.perf_counter()
        if mode == "diffrax":
            loop = DiffraxLoop(t, true_y, weights)
        elif mode.startswith("floor"):
            loop = FloorLoop(mode == "floor-compiled", t, true_y, weights)
        else:
            loop = TorchLoop(mode, t, true_y, weights)
        loop.step(batches[0])  # the first step compiles (JAX, torch.compile) or warms up
        compile_s[mode] = time.perf_counter() - t0
        loop.nfe_forward = 0
        loops[mode] = loop
    times: dict[str, list[float]] = {m: [] for m in modes}
    for start in range(1, n_iters + 1, block):
        for mode in modes:  # alternate block by block: drift hits every loop alike
            loop = loops[mode]
            t0 = time.perf_counter()
            for s in batches[start:start + block]:
                loop.step(s)
            times[mode].append((time.perf_counter() - t0) / len(batches[start:start + block]))
    rows = []
    for mode in modes:
        loop = loops[mode]
        ms = statistics.median(times[mode]) * 1e3
        nfe = loop.nfe_forward / n_iters
        rows.append({"loop": mode, "compile_s": compile_s[mode], "ms": ms, "nfe": nfe,
                     "us_per_nfe": ms * 1e3 / nfe, "error": loop.error()})
    return rows


def table(rows: list[dict[str, object]], n_iters: int) -> str:
    base = next((r for r in rows if r["loop"] == "diffrax"), None)
    head = ("| loop | first step (compile) | ms / iteration | forward NFE / iteration | "
            "us / forward NFE | vs diffrax per iteration | vs diffrax per NFE | "
            f"L1 error after {n_iters} its |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        vs = f"{r['ms'] / base['ms']:.2f}x" if base else "-"
        vs_nfe = f"{r['us_per_nfe'] / base['us_per_nfe']:.2f}x" if base else "-"
        lines.append(f"| {r['loop']} | {r['compile_s']:.1f} s | {r['ms']:.2f} | {r['nfe']:.1f} | "
                     f"{r['us_per_nfe']:.0f} | {vs} | {vs_nfe} | {r['error']:.4f} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=600, help="timed iterations per loop")
    parser.add_argument("--block", type=int, default=50,
                        help="iterations per block; the loops alternate block by block")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="loops to compare (see the module docstring)")
    parser.add_argument("--cpp-wrapper", action="store_true",
                        help="compile with inductor's C++ wrapper (less per-call overhead, "
                             "longer compiles) for every compiled loop")
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    if args.cpp_wrapper:
        import torch._inductor.config as inductor_config

        inductor_config.cpp_wrapper = True
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    modes = list(args.modes)
    note = ""
    if "diffrax" in modes:
        try:
            import diffrax  # noqa: F401
            import equinox  # noqa: F401
            import jax  # noqa: F401
            import optax  # noqa: F401
        except ImportError:
            modes.remove("diffrax")
            note = ("\ndiffrax skipped: jax, equinox, diffrax or optax is not installed "
                    "(pip install \".[bench]\").\n")
    out = table(run(modes, args.iters, args.block), args.iters) + note
    print(out)
    if args.record:
        versions = ""
        if "diffrax" in modes:
            import diffrax
            import jax

            versions = f", jax {jax.__version__}, diffrax {diffrax.__version__}"
        wrapper = ", inductor cpp_wrapper" if args.cpp_wrapper else ""
        record("odecli vs JAX/diffrax, ode_demo problem, 1 CPU core", out, versions + wrapper)


if __name__ == "__main__":
    main()
