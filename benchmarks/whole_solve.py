"""A prototype, measured and not used by odecli: ode_demo's whole adaptive dopri5 solve as one
torch.compile graph, to see how close a torch loop can come to JAX/diffrax (issue 12).

Per window the first step is chosen eagerly (torchdiffeq's rule, 2 evaluations). Then a
segment of `--attempts` unrolled attempts each takes a dopri5 step, computes torchdiffeq's
error ratio, accepts or rejects it with `torch.where`, writes the 4th-order interpolant at the
output times the accepted step covers and sets the next step size (torchdiffeq's controller,
detached), with no host synchronisation inside; the segment is called again while the solve
is unfinished (one sync per segment). Direct backprop through the attempts: a rejected or
surplus attempt is masked out, but its arithmetic is still done forward and backward. This is
diffrax's design (a bounded loop in one compiled program) written in torch; diffrax's loop is
a real XLA while loop, torch.compile unrolls it.

Compared in one run, alternating blocks, with diffrax and odecli's compiled direct loop (the
fastest odecli path); `max |pred - odeint|` checks the first window's prediction against
torchdiffeq's odeint at the same tolerances. Same problem, weights and windows as
benchmarks/diffrax_compare.py.

    python benchmarks/whole_solve.py [--iters 400] [--attempts 9] [--cpp-wrapper] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffrax_compare as dc  # noqa: E402  (sets the one-thread environment first)
import torch  # noqa: E402
from plain_loop import spiral_truth  # noqa: E402
from speed import record  # noqa: E402
from torchdiffeq import odeint  # noqa: E402

RTOL, ATOL, WINDOW = dc.RTOL, dc.ATOL, dc.WINDOW


class WholeLoop:
    """The whole adaptive solve of a batch of windows in compiled segments of attempts."""

    def __init__(self, attempts: int, t: torch.Tensor, true_y: torch.Tensor,
                 weights: dict[str, torch.Tensor]) -> None:
        from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU as tab
        from torchdiffeq._impl.dopri5 import DPS_C_MID

        self.t, self.true_y, self.attempts = t, true_y, attempts
        self.field, self.opt = dc.field_and_optimiser(weights)
        self.alpha = [float(a) for a in tab.alpha]
        self.beta = [[float(b) for b in row] for row in tab.beta]
        self.c_error = [float(c) for c in tab.c_error]
        self.c_mid = [float(c) for c in DPS_C_MID]
        self.ts = t[:WINDOW]
        self.segment = torch.compile(self._segment, dynamic=False)
        self.nfe_forward = 0
        self.calls = 0

    @staticmethod
    def _combo(y: torch.Tensor, dt: torch.Tensor, coefs: list[float],
               ks: list[torch.Tensor]) -> torch.Tensor:
        out = y
        for c, k in zip(coefs, ks, strict=False):
            if c:
                out = out + (dt * c) * k
        return out

    def _segment(self, t, dt, y, f0, out, done):  # noqa: ANN001, ANN202  (traced)
        ts = self.ts
        for _ in range(self.attempts):
            ks = [f0]
            yi = y
            for a, row in zip(self.alpha, self.beta, strict=True):
                yi = self._combo(y, dt, row, ks)
                ks.append(self.field(t + a * dt, yi))
            y1, f1 = yi, ks[-1]  # FSAL: the last stage is evaluated at the new y
            err = self._combo(torch.zeros_like(y), dt, self.c_error, ks)
            tol = ATOL + RTOL * torch.maximum(y.abs(), y1.abs())
            ratio = (err / tol).pow(2).mean().sqrt()
            accept = (ratio <= 1) & ~done
            y_mid = self._combo(y, dt, self.c_mid, ks)
            a4 = 2 * dt * (f1 - f0) - 8 * (y1 + y) + 16 * y_mid
            b3 = dt * (5 * f0 - 3 * f1) + 18 * y + 14 * y1 - 32 * y_mid
            c2 = dt * (f1 - 4 * f0) - 11 * y - 5 * y1 + 16 * y_mid
            d1 = dt * f0
            x = ((ts - t) / dt).view(-1, *([1] * y.dim()))
            vals = (((a4 * x + b3) * x + c2) * x + d1) * x + y
            cover = (accept & (ts > t) & (ts <= t + dt)).view(-1, *([1] * y.dim()))
            out = torch.where(cover, vals, out)
            t = torch.where(accept, t + dt, t)
            y = torch.where(accept, y1, y)
            f0 = torch.where(accept, f1, f0)
            r = ratio.detach()
            low = torch.where(r < 1, torch.ones_like(r), torch.full_like(r, 0.2))
            factor = torch.clamp(torch.maximum(0.9 / r.pow(0.2), low), max=10.0)
            factor = torch.where(r == 0, torch.full_like(r, 10.0), factor)
            dt = torch.where(done | accept & (t >= ts[-1]), dt, dt * factor)
            done = done | (t >= ts[-1])
        return t, dt, y, f0, out, done

    def solve(self, y0: torch.Tensor) -> torch.Tensor:
        from torchdiffeq._impl.misc import _rms_norm, _select_initial_step

        t0 = self.ts[0]
        f0 = self.field(t0, y0)
        with torch.no_grad():
            dt = _select_initial_step(self.field, t0, y0, 4, RTOL, ATOL, _rms_norm, f0.detach())
        state = (t0.clone(), dt.to(t0), y0, f0, y0.expand(WINDOW, *y0.shape).clone(),
                 torch.zeros((), dtype=torch.bool))
        self.nfe_forward += 2
        while True:
            state = self.segment(*state)
            self.calls += 1
            self.nfe_forward += 6 * self.attempts
            if bool(state[5]):
                return state[4]

    def step(self, s: torch.Tensor) -> None:
        self.opt.zero_grad()
        by = torch.stack([self.true_y[s + i] for i in range(WINDOW)], dim=0)
        loss = torch.mean(torch.abs(self.solve(self.true_y[s]) - by))
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def error(self) -> float:
        loop = dc.TorchLoop("fast", self.t, self.true_y, self.field.state_dict())
        return loop.error()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--attempts", type=int, default=9,
                        help="attempts per compiled segment (ode_demo needs ~8 per window)")
    parser.add_argument("--cpp-wrapper", action="store_true",
                        help="compile with inductor's C++ wrapper")
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    if args.cpp_wrapper:
        import torch._inductor.config as inductor_config

        inductor_config.cpp_wrapper = True
    t, true_y = spiral_truth()
    weights = dc.initial_weights()
    batches = dc.windows(args.iters + 1)

    whole = WholeLoop(args.attempts, t, true_y, weights)
    # the prediction against torchdiffeq before any training; the first call compiles
    t0 = time.perf_counter()
    pred = whole.solve(true_y[batches[0]]).detach()
    compile_s = {"whole-compiled": time.perf_counter() - t0}
    with torch.no_grad():
        ref = odeint(whole.field, true_y[batches[0]], whole.ts, rtol=RTOL, atol=ATOL)
    gap = float((pred - ref).abs().max())
    loops: dict[str, object] = {"whole-compiled": whole}
    modes = ["whole-compiled", "direct-compiled"]
    try:
        import diffrax  # noqa: F401

        modes.insert(0, "diffrax")
    except ImportError:
        print("diffrax skipped: not installed (pip install \".[bench]\")")
    for mode in modes:
        t0 = time.perf_counter()
        if mode == "diffrax":
            loops[mode] = dc.DiffraxLoop(t, true_y, weights)
        elif mode == "direct-compiled":
            loops[mode] = dc.TorchLoop(mode, t, true_y, weights)
        loops[mode].step(batches[0])
        compile_s.setdefault(mode, time.perf_counter() - t0)
        loops[mode].nfe_forward = 0
    whole.calls = 0
    times: dict[str, list[float]] = {m: [] for m in modes}
    for start in range(1, args.iters + 1, args.block):
        for mode in modes:
            block = batches[start:start + args.block]
            t0 = time.perf_counter()
            for s in block:
                loops[mode].step(s)
            times[mode].append((time.perf_counter() - t0) / len(block))
    base = statistics.median(times["diffrax"]) if "diffrax" in modes else None
    lines = ["| loop | first step (compile) | ms / iteration | forward NFE / iteration | "
             "vs diffrax | L1 error after the run |", "|---|---:|---:|---:|---:|---:|"]
    for mode in modes:
        ms = statistics.median(times[mode]) * 1e3
        vs = f"{ms / (base * 1e3):.2f}x" if base else "-"
        nfe = loops[mode].nfe_forward / args.iters
        lines.append(f"| {mode} | {compile_s[mode]:.1f} s | {ms:.2f} | {nfe:.1f} | {vs} | "
                     f"{loops[mode].error():.4f} |")
    text = "\n".join(lines) + (
        f"\n\n{args.attempts} attempts per segment, {whole.calls / args.iters:.2f} segments "
        f"per iteration; before training, max |pred - odeint| on the first window: {gap:.1e}"
        f"{'; inductor cpp_wrapper' if args.cpp_wrapper else ''}.\n")
    print(text)
    if args.record:
        record("Whole adaptive solve as one torch.compile graph (prototype), ode_demo, 1 CPU "
               "core", text)


if __name__ == "__main__":
    main()
