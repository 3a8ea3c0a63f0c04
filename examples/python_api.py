"""odecli from Python: train a model, load it back, predict, and turn the solver dial.

    python examples/python_api.py                            # about 20 s on one CPU core
    ODECLI_EXAMPLE_ITERS=50 python examples/python_api.py    # a smoke test (CI runs this)

Runs go to ./outputs (or $ODECLI_OUTPUTS), like the command line's.
"""

from __future__ import annotations

import os

import numpy as np

import odecli

iters = os.environ.get("ODECLI_EXAMPLE_ITERS")  # unset: the config's default (1000)

# 1. Train: the same run as `odecli train system=lotka`.
run = odecli.run("train", ["system=lotka", "quiet=true",
                           *([f"train.niters={iters}"] if iters else [])])
print(f"trained in {run.metrics['wall_seconds']:.1f} s: error_rel {run.metrics['error_rel']:.4f}"
      f"  ->  {run.run_dir}")

# 2. Load it back later (any run folder; the best state where a command keeps one).
model = odecli.load(run.run_dir)

# 3. Predict: trajectories from new initial states, numpy in and out.
t = np.linspace(0.0, 10.0, 101)
paths = model.predict([[1.0, 1.0], [2.0, 0.5]], t)        # (101, 2, 2)
print("from (1, 1) at t=10:", np.round(paths[-1, 0], 4))
print("field at (1, 1):", np.round(model.f(0.0, [1.0, 1.0]), 4))

# 4. The speed/accuracy dial: the same weights, other solvers, against a tight reference.
ref = model.predict([1.0, 1.0], t, rtol=1e-10, atol=1e-10)
for solver, kw in [("dopri5", {}), ("dopri5", {"rtol": 1e-3, "atol": 1e-4}),
                   ("rk4", {"steps": 10}), ("rk4", {"steps": 50})]:
    p = model.predict([1.0, 1.0], t, solver=solver, **kw)
    print(f"{solver} {kw or '(the run: rtol 1e-5)'}: {model.last_nfe} evaluations, "
          f"max error {np.abs(p - ref).max():.1e}")

# 5. The numbers `odecli eval RUN` reports, from Python.
print("eval error_rel:", round(model.evaluate()["error_rel"], 4))
