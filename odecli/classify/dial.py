"""The speed/accuracy dial: one trained ODE-Net scored at many inference solvers.

An ODE block's depth is chosen by its solver, so after training the same weights can run at
a looser tolerance (fewer function evaluations, faster) or a tighter one. `sweep` scores the
test set at each adaptive tolerance (atol = rtol) and each fixed-step solver with k steps of
size 1/k; `summary` finds the loosest tolerance whose accuracy stays within `within` points
of the reference (the run's own solver) and its NFE and time against the reference's.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odecli.errors import SolverError
from odecli.numerics.solve import SolverSpec

COLUMNS = ("label", "kind", "method", "rtol", "steps", "accuracy", "nfe_per_forward",
           "seconds", "error")


def points(spec: SolverSpec, dial: dict[str, Any]) -> list[dict[str, Any]]:
    """The dial's solver settings: the reference (the run's solver) first."""
    out = [{"label": "reference", "kind": "reference", "method": spec.method,
            "rtol": spec.rtol if spec.adaptive else None,
            "steps": (round(1 / spec.step_size) if not spec.adaptive and spec.step_size
                      else None), "spec": spec}]
    for r in dial["rtols"]:
        s = dataclasses.replace(spec, method=dial["method"], rtol=r, atol=r, options={},
                                step_size=None)
        out.append({"label": f"{dial['method']} rtol={r:g}", "kind": "adaptive",
                    "method": dial["method"], "rtol": r, "steps": None, "spec": s})
    for m in dial["fixed_methods"]:
        for k in dial["steps"]:
            s = dataclasses.replace(spec, method=m, step_size=1.0 / k, options={},
                                    rtol=None, atol=None)
            out.append({"label": f"{m} k={k}", "kind": "fixed", "method": m, "rtol": None,
                        "steps": k, "spec": s})
    return out


def sweep(score: Callable[[SolverSpec], dict[str, Any]], spec: SolverSpec,
          dial: dict[str, Any]) -> list[dict[str, Any]]:
    """Score every dial point; a point whose solve fails is kept with its error."""
    rows = []
    for p in points(spec, dial):
        row = {k: v for k, v in p.items() if k != "spec"}
        try:
            s = score(p["spec"])
            row.update(accuracy=s["accuracy"], nfe_per_forward=s["nfe_per_forward"],
                       seconds=s["seconds"], error=None)
        except SolverError as exc:
            row.update(accuracy=math.nan, nfe_per_forward=math.nan, seconds=math.nan,
                       error=str(exc))
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]], within: float) -> dict[str, Any]:
    """Metrics of the dial: the loosest adaptive tolerance (and the cheapest fixed-step
    point) within `within` accuracy points of the reference, with NFE and time ratios."""
    ref = rows[0]
    floor = ref["accuracy"] - within / 100.0
    out: dict[str, Any] = {"dial_reference_accuracy": ref["accuracy"],
                           "dial_reference_nfe": ref["nfe_per_forward"],
                           "dial_reference_seconds": ref["seconds"]}
    good = [r for r in rows[1:] if r["kind"] == "adaptive" and r["accuracy"] >= floor]
    if good:
        loose = max(good, key=lambda r: r["rtol"])
        out.update(dial_loosest_rtol=loose["rtol"], dial_loosest_accuracy=loose["accuracy"],
                   dial_loosest_nfe=loose["nfe_per_forward"],
                   dial_nfe_ratio=loose["nfe_per_forward"] / ref["nfe_per_forward"],
                   dial_time_ratio=loose["seconds"] / ref["seconds"])
    fixed = [r for r in rows[1:] if r["kind"] == "fixed" and r["accuracy"] >= floor]
    if fixed:
        cheap = min(fixed, key=lambda r: (r["nfe_per_forward"], -r["accuracy"]))
        out.update(dial_cheapest_fixed=cheap["label"],
                   dial_cheapest_fixed_accuracy=cheap["accuracy"],
                   dial_cheapest_fixed_nfe=cheap["nfe_per_forward"])
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k) for k in COLUMNS} for r in rows)
