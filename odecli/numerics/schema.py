"""Schemas of the config groups every command shares: solver, gradient, device.

The names a group offers come from the code that implements them (solver methods and gradient
modes from numerics/methods.py) or are listed here and mapped by that code (device names and
dtypes, mapped to torch in numerics/device.py), so a config cannot name what does not exist.
"""

from __future__ import annotations

from typing import Any

from odecli.fields import Bool, Choice, Float, Free, Int, Rule, Schema, Tagged, Union
from odecli.numerics.methods import ADAPTIVE, GRADIENTS, METHODS
from odecli.paths import yaml_node

DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")

_TOL = Float(0, low_open=True, nullable=True)

SOLVER = Schema(
    {
        "method": Choice(*METHODS,
                         message="unknown solver method '{value}'; choose one of: {options}"),
        "rtol": _TOL,
        "atol": _TOL,
        "step_size": Float(0, low_open=True, nullable=True),  # null: the output grid's steps
        "options": Free(mapping=True),  # per method: checked by SolverSpec.from_cfg
        "fast": Bool(),  # odecli's own step loop for adaptive Runge-Kutta (numerics/rk.py)
        "compile": Union(Bool(), Choice("auto"),
                         message="{path} must be true, false or auto, got '{value}'"),
        "max_steps": Int(1, nullable=True),  # null: no limit
    },
    rules=[Rule(lambda v: v["method"] not in ADAPTIVE
                or (v["rtol"] is not None and v["atol"] is not None),
                "{p}rtol and {p}atol must be positive numbers (not null) for the adaptive "
                "solver '{method}'")],
)

_GRADIENT_KEYS = {
    # null tolerances: the forward solver's
    "adjoint": Schema({"rtol": _TOL, "atol": _TOL, "seminorm": Bool()}),
}
GRADIENT = Tagged("name", {name: _GRADIENT_KEYS.get(name, Schema({})) for name in GRADIENTS},
                  message="unknown gradient mode '{value}'; choose one of: {options}")

_DTYPE = Choice(*DTYPES, message="{path} must be one of {options}, got '{value}'")
_THREADS = Int(1, nullable=True)  # null: every thread torch would use
DEVICE = Tagged(
    "name",
    {
        "cpu": Schema({"dtype": _DTYPE, "threads": _THREADS}),
        "cuda": Schema({"index": Int(0), "dtype": _DTYPE, "threads": _THREADS}),
        "auto": Schema({"index": Int(0), "dtype": _DTYPE, "threads": _THREADS}),
    },
    message="unknown device '{value}'; choose one of: {options}",
)

# The groups every command composes, as its config's top-level keys.
RUNTIME = {"solver": SOLVER, "gradient": GRADIENT, "device": DEVICE}


def solver_defaults(method: str) -> dict[str, Any]:
    """configs/solver/<method>.yaml as a run composes it (its `X@_here_` defaults first,
    then its own keys): where a spec built in code gets the values it was not given."""
    SOLVER.fields["method"].check(method, "solver.method")
    own = yaml_node(f"solver/{method}.yaml")
    merged: dict[str, Any] = {}
    for entry in own.pop("defaults", []):
        if isinstance(entry, str) and entry.endswith("@_here_"):
            merged.update(yaml_node(f"solver/{entry.removesuffix('@_here_')}.yaml"))
    merged.update(own)
    return merged


def gradient_defaults(name: str) -> dict[str, Any]:
    """configs/gradient/<name>.yaml: the mode's own keys (only the adjoint has any)."""
    GRADIENT.choice.check(name, "gradient.name")
    return yaml_node(f"gradient/{name}.yaml")
