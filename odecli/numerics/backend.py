"""The one door to torchdiffeq's private internals, checked when odecli starts.

Why: odecli replays torchdiffeq's own solver steps (numerics/aca.py) and validates solver
configs against its solver table, which means reading names under `torchdiffeq._impl` that
carry no stability promise. A release that renames one, or whose table drops or adds a solver,
would otherwise surface as an AttributeError deep in a run or a solver config that silently
changes meaning. Every private name is imported here, and a missing one (or a missing solver)
stops odecli at import with one line saying which torchdiffeq is installed, what is missing and
which range odecli is tested with.

odecli's solver list is its own (`numerics/methods.py`, one config per method in
configs/solver/); solvers a newer torchdiffeq adds to its table are ignored, not offered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

import torchdiffeq

from odecli.errors import OdecliError
from odecli.numerics.methods import METHODS

# Keep in step with the torchdiffeq requirement in pyproject.toml. 0.2.5 is the floor: 0.2.3
# lacks heun2 and heun3, 0.2.4 lacks heun2.
TESTED_RANGE = "torchdiffeq>=0.2.5,<0.3"

# Every private name odecli uses: module -> names in it.
PRIVATE: dict[str, tuple[str, ...]] = {
    "torchdiffeq._impl.odeint": ("SOLVERS",),
    "torchdiffeq._impl.interp": ("_interp_evaluate",),
    "torchdiffeq._impl.misc": ("_check_inputs",),
    "torchdiffeq._impl.rk_common": ("RKAdaptiveStepsizeODESolver", "_runge_kutta_step"),
    "torchdiffeq._impl.solvers": ("FixedGridODESolver",),
}
# Private methods aca.py calls on those classes (a rename would break only the replay).
MEMBERS: dict[str, tuple[str, ...]] = {
    "RKAdaptiveStepsizeODESolver": ("_interp_fit",),
    "FixedGridODESolver": ("_step_func", "_linear_interp"),
}


def find_private(import_module: Callable[[str], ModuleType] = importlib.import_module
                 ) -> tuple[dict[str, Any], list[str]]:
    """Look up every private name without failing: (found by short name, missing dotted names),
    so all that is missing can be reported at once."""
    found: dict[str, Any] = {}
    missing: list[str] = []
    for module_name, names in PRIVATE.items():
        try:
            module: ModuleType | None = import_module(module_name)
        except ImportError:
            module = None
        for name in names:
            if module is not None and hasattr(module, name):
                found[name] = getattr(module, name)
            else:
                missing.append(f"{module_name}.{name}")
    for cls_name, members in MEMBERS.items():
        cls = found.get(cls_name)
        if cls is not None:
            missing += [f"{cls_name}.{m}" for m in members if not hasattr(cls, m)]
    return found, missing


def check(version: str, solvers: Mapping[str, Any] | None, missing: Iterable[str] = ()) -> None:
    """Raise OdecliError (one line) if the solver table lacks one of odecli's methods or a
    private name is missing; extra solvers in the table are fine."""
    problems = list(missing)
    if solvers is not None:
        lacking = [m for m in METHODS if m not in solvers]
        if lacking:
            problems.insert(0, f"solver table lacks {', '.join(lacking)}")
    if problems:
        raise OdecliError(
            f"torchdiffeq {version} is not compatible with odecli (missing: "
            f"{'; '.join(problems)}); odecli is tested with {TESTED_RANGE}: "
            f"pip install '{TESTED_RANGE}'")


def _load() -> dict[str, Any]:
    found, missing = find_private()
    check(getattr(torchdiffeq, "__version__", "unknown"), found.get("SOLVERS"), missing)
    return found


_found = _load()
TORCHDIFFEQ_VERSION: str = getattr(torchdiffeq, "__version__", "unknown")

# odecli's view of the table: its own methods only, in METHODS order.
SOLVERS: dict[str, Any] = {m: _found["SOLVERS"][m] for m in METHODS}
_interp_evaluate = _found["_interp_evaluate"]
_check_inputs = _found["_check_inputs"]
_runge_kutta_step = _found["_runge_kutta_step"]
RKAdaptiveStepsizeODESolver = _found["RKAdaptiveStepsizeODESolver"]
FixedGridODESolver = _found["FixedGridODESolver"]

__all__ = ["METHODS", "SOLVERS", "TESTED_RANGE", "FixedGridODESolver",
           "RKAdaptiveStepsizeODESolver", "_check_inputs", "_interp_evaluate",
           "_runge_kutta_step", "check", "find_private"]
