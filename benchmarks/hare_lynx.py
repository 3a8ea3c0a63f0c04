"""docs/own-data.md's worked example: hare and lynx pelts, neural ODE against Lotka-Volterra.

Runs `odecli train system=hare_lynx` (the Hudson's Bay Company record shipped with odecli,
trained on 1900-1915, the last five years forecast from the 1915 observation) over several
seeds, and fits the mechanistic baseline to the same training years: Lotka-Volterra
x' = a x - b x y, y' = d x y - c y by least squares (scipy's trust-region least_squares on
the trajectory from the 1900 observation, positive parameters through their logarithms),
forecast the same way from the 1915 observation and scored with the same errors
(odecli.dynamics.tabular) as the model and its baselines. Run by hand:

    python benchmarks/hare_lynx.py [--seeds 0 1 2] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("RESULTS.md")
# The same Lotka-Volterra fitted by odecli's own loop: the equations are the whole model,
# one window spanning the 16 training years (so the loss is the trajectory's least squares).
MECHANISTIC = ['model.known.rhs=["a*hare - b*hare*lynx", "d*hare*lynx - c*lynx"]',
               "model.known.params={a: 0.5, b: 0.025, c: 0.8, d: 0.025}",
               "model.known.network=false", "train.batch_time=16", "train.batch_size=1",
               "train.loss=mse", "train.lr=0.001"]


def odecli_runs(seeds: list[int], extra: list[str]) -> list[dict]:
    out = []
    for seed in seeds:
        outputs = Path(tempfile.mkdtemp(prefix="odecli-hl-"))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "odecli", "train", "system=hare_lynx",
                        f"seed={seed}", *extra, "quiet=true"], check=True,
                       env={**os.environ, "ODECLI_OUTPUTS": str(outputs)})
        (path,) = (outputs / "train").rglob("metrics.json")
        m = json.loads(path.read_text())
        m["process_wall"] = time.perf_counter() - t0
        out.append(m)
    return out


def lotka_volterra_fit() -> dict:
    """Least-squares Lotka-Volterra on the training years, scored like odecli's runs."""
    from scipy.integrate import solve_ivp
    from scipy.optimize import least_squares

    from odecli.dynamics import datafile, tabular
    from odecli.paths import yaml_node

    s = yaml_node("system/hare_lynx.yaml", "system")
    table = datafile.read(s)
    sp = tabular.split(table, s["split"], s["train_fraction"])
    (train,), (test,) = sp.train, sp.test
    mean, std = tabular.scaling(sp.train)
    scale = tabular.data_scale(sp.train, mean)

    def rhs(_t: float, y: np.ndarray, a: float, b: float, c: float, d: float) -> list[float]:
        return [a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - c * y[1]]

    def solve(p: np.ndarray, t0: float, y0: np.ndarray, t: np.ndarray) -> np.ndarray:
        sol = solve_ivp(rhs, (t0, t[-1]), y0, t_eval=t, args=tuple(np.exp(p)), rtol=1e-9,
                        atol=1e-9, method="LSODA")
        if not sol.success or sol.y.shape[1] != len(t):
            return np.full((len(t), 2), 1e6)
        return sol.y.T

    def residuals(p: np.ndarray) -> np.ndarray:
        return ((solve(p, train.start_t, train.start_y, train.t) - train.y) / std).ravel()

    t0 = time.perf_counter()
    best = None
    # starting points: growth and death rates around 0.5-1 per year, interactions ~ 1/40
    for guess in ([0.5, 0.025, 0.8, 0.025], [0.8, 0.04, 0.6, 0.02], [0.3, 0.01, 1.0, 0.03]):
        fit = least_squares(residuals, np.log(guess), method="trf")
        if best is None or fit.cost < best.cost:
            best = fit
    assert best is not None
    fit_seconds = time.perf_counter() - t0
    pred_train = solve(best.x, train.start_t, train.start_y, train.t)
    pred_test = solve(best.x, test.start_t, test.start_y, np.concatenate([[test.start_t],
                                                                          test.t]))[1:]
    return {"params": dict(zip("abcd", np.exp(best.x).tolist(), strict=True)),
            "error_rel": tabular.errors([pred_train], sp.train, scale)["rel"],
            "heldout_error_rel": tabular.errors([pred_test], sp.test, scale)["rel"],
            "fit_seconds": fit_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for the odecli runs")
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    runs = odecli_runs(args.seeds, args.extra)
    (mech,) = odecli_runs([0], MECHANISTIC)
    lv = lotka_volterra_fit()
    header = ("| model | error_rel (1900-1915) | heldout_error_rel (1916-1920 forecast) | "
              "time |\n|---|---:|---:|---:|")
    rows = [f"| neural ODE, seed {m_seed} | {m['error_rel']:.3f} | "
            f"{m['heldout_error_rel']:.3f} | {m['train_seconds']:.1f} s |"
            for m_seed, m in zip(args.seeds, runs, strict=True)]
    p = ", ".join(f"{k}={v:.4g}" for k, v in lv["params"].items())
    rows.append(f"| Lotka-Volterra least squares, scipy ({p}) | {lv['error_rel']:.3f} | "
                f"{lv['heldout_error_rel']:.3f} | {lv['fit_seconds']:.1f} s |")
    q = ", ".join(f"{k}={v:.4g}" for k, v in mech["known_params"].items())
    rows.append(f"| Lotka-Volterra by odecli, model.known.network=false ({q}) | "
                f"{mech['error_rel']:.3f} | {mech['heldout_error_rel']:.3f} | "
                f"{mech['train_seconds']:.1f} s |")
    m = runs[0]
    for name in ("last", "mean", "linear"):
        rows.append(f"| baseline: {name} | - | {m[f'baseline_{name}_error_rel']:.3f} | - |")
    table = header + "\n" + "\n".join(rows)
    print(table)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(f"\n### Hare and lynx: neural ODE against Lotka-Volterra "
                     f"({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} "
                     f"cores)\n\n`python benchmarks/hare_lynx.py --record "
                     f"{' '.join(args.extra)}`\n\nData credit: {m['data_license']}.\n\n"
                     f"{table}\n")


if __name__ == "__main__":
    main()
