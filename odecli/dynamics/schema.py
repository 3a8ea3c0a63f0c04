"""Schema of the `train` command's config: train, data, model, system (per system), plots.

`check_train(cfg)` checks a whole composed config once, up front, and returns plain values;
systems.py, models.py and data.py check the node they build from with the same schemas. The
defaults are in configs/train.yaml and its groups, never here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from odecli.engine import schema as engine
from odecli.fields import (
    Bool,
    Choice,
    Field,
    Float,
    Int,
    List,
    Rule,
    Schema,
    Str,
    Tagged,
    Union,
    job_node,
    to_plain,
)
from odecli.numerics.schema import RUNTIME

# Names mapped to torch modules in odecli.dynamics.models (tests/test_schema.py keeps the two
# in step).
ACTIVATIONS = ("tanh", "relu", "elu", "softplus", "silu", "gelu", "sigmoid")
INITS = ("seed", "default")
OUTPUT_SCALES = ("max", "mean", "rms")
LOSSES = ("l1", "mse")
SAMPLINGS = ("uniform", "arclength", "edges")

TRAIN = engine.TRAIN.extend({
    "batch_time": Int(2),  # observed points per training window: a window needs two
    "loss": Choice(*LOSSES),
    "sampling": Choice(*SAMPLINGS),
    "final_iters": Int(0),  # the last N iterations (all, if niters is fewer) train on the
    "final_batch_time": Int(2),  # final windows; 0: none
    "final_batch_size": Int(1, nullable=True),  # null: every window once
})

DATA = Schema({
    "noise_std": Float(0),
    "observe_fraction": Float(0, 1, low_open=True),
})



class Equation(Field):
    """One right-hand side as text (a bare number such as 0 is taken as its text); what the
    text may contain is checked by odecli.dynamics.equations when it is parsed."""

    nullable = False

    def describe(self) -> str:
        return "an equation as text"

    def _check(self, value: Any, path: str) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return repr(value)
        if not isinstance(value, str):
            raise self._error(path, value)
        return value


class Params(Field):
    """Named parameters of equations: a key: value node of finite numbers, or null for none
    (the YAML default is null so that `system.params={k: 0.5}` can name new parameters:
    Hydra merges a dict given for a dict, and refuses keys the old one lacks)."""

    nullable = False

    def describe(self) -> str:
        return "a node of parameter: number (e.g. {a: 1.5, b: 1})"

    def _check(self, value: Any, path: str) -> dict[str, float]:
        value = to_plain(value)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._error(path, value)
        return {str(k): Float().check(v, f"{path}.{k}") for k, v in value.items()}


_EQUATIONS = List(Equation(), min_length=1)
_NAMES = List(Str(), min_length=1, nullable=True)
KNOWN = Schema(
    {
        "rhs": List(Equation(), min_length=1, nullable=True),
        "params": Params(),
        "trainable": Bool(),
        "network": Bool(),
    },
    rules=[Rule(lambda v: v["network"] or v["rhs"] is not None,
                "{p}network=false needs {p}rhs: the known equations are then the whole "
                "model"),
           Rule(lambda v: v["network"] or v["rhs"] is None or (v["trainable"] and v["params"]),
                "{p}network=false leaves nothing to train unless {p}trainable=true and "
                "{p}params names the parameters to fit")],
)

MODEL = Schema(
    {
        "depth": Int(1),
        "width": Union(Int(1), List(Int(1), min_length=1),
                       message="{path} must be a positive integer or a list of positive "
                               "integers (one per hidden layer), got {value!r}"),
        "activation": Choice(*ACTIVATIONS),
        "time_dependent": Bool(),
        "augment_dim": Int(0),
        "input_power": Int(1),
        "normalize": Bool(),
        "output_scale": Choice(*OUTPUT_SCALES),
        "init": Choice(*INITS),
        "init_std": Float(0, low_open=True),
        "known": KNOWN,  # known physics added to the network (universal differential eq.)
    },
    rules=[Rule(lambda v: isinstance(v["width"], int) or len(v["width"]) == v["depth"],
                lambda v, p: f"{p}width lists {len(v['width'])} widths but {p}depth is "
                             f"{v['depth']}; give one width per hidden layer or a single "
                             f"integer")],
)

_MATRIX = List(List(Float(), length=2), length=2)
_POSITIVE = Float(0, low_open=True)
_STATE = {  # every system: the observed state and grid
    "y0": List(Float(), length=2),
    "t0": Float(),
    "t1": Float(),
    "data_size": Int(2),
    "extrapolate": Float(0),  # extrapolation window after t1, as a fraction of the span
}
_T1_AFTER_T0 = Rule(lambda v: v["t1"] > v["t0"],
                    "{p}t1 ({t1:g}) must be greater than {p}t0 ({t0:g})")
_ABCD = {k: _POSITIVE for k in "abcd"}


def _system(keys: Mapping[str, Any], *rules: Rule) -> Schema:
    return Schema({**keys, **_STATE}, (_T1_AFTER_T0, *rules))


def _one_per_variable(v: dict[str, Any], p: str) -> str:
    n = len(v["rhs"])
    if len(v["y0"]) != n:
        return (f"{p}rhs has {n} right-hand side(s) but {p}y0 {len(v['y0'])} entries; "
                f"give one initial value per equation ({p}y0=[...])")
    return f"{p}variables names {len(v['variables'])} variables for {n} right-hand sides"


# system=equations and its presets: right-hand sides as text, any number of variables.
EQUATIONS = Schema(
    {"rhs": _EQUATIONS, "variables": _NAMES, "params": Params(),
     **_STATE, "y0": List(Float(), min_length=1)},
    (_T1_AFTER_T0,
     Rule(lambda v: len(v["y0"]) == len(v["rhs"]) and (
         v["variables"] is None or len(v["variables"]) == len(v["rhs"])), _one_per_variable)),
)
EQUATION_PRESETS = ("equations", "lorenz", "fitzhugh_nagumo", "pendulum", "sir")

# system=file (a CSV or NPZ of the user's) and the datasets shipped with odecli.
DATASETS = ("hare_lynx",)
SPLITS = ("forecast", "trajectories", "none")
FORMATS = ("auto", "csv", "npz")
FILE = Schema(
    {
        "path": Str(nullable=True),
        "dataset": Choice(*DATASETS, nullable=True),
        "format": Choice(*FORMATS),
        "time": Str(nullable=True, from_int=True),
        "trajectory": Str(nullable=True, from_int=True),
        "states": List(Str(from_int=True), min_length=1, nullable=True),
        "split": Choice(*SPLITS),
        "train_fraction": Float(0, 1, low_open=True, high_open=True),
        "citation": Str(nullable=True),
    },
    (Rule(lambda v: v["path"] is None or v["dataset"] is None,
          "give {p}path (your file) or {p}dataset (one shipped with odecli), not both"),),
)
FILE_SYSTEMS = ("file", *DATASETS)


# One entry per system in odecli.dynamics.systems.REGISTRY, in the same order.
SYSTEMS: dict[str, Schema] = {
    "spiral": _system({"A": _MATRIX}),
    "spiral_cubic": _system({"A": _MATRIX}),
    "random": _system({"matrix_seed": Int(0), "scale": _POSITIVE}),
    "lotka": _system(_ABCD, Rule(lambda v: min(v["y0"]) > 0,
                                 "{p}y0 must be positive for Lotka-Volterra (populations), "
                                 "got {y0}")),
    "lotka_linear": _system(_ABCD),
    "nonlinear": _system({"A2": _MATRIX, "B2": _MATRIX, "centre": List(Float(), length=2)}),
    "mlp": _system({"widths": List(Int(1), min_length=2), "matrix_seed": Int(0),
                    "gain": _POSITIVE},
                   Rule(lambda v: v["widths"][0] == v["widths"][-1] == len(v["y0"]),
                        "{p}widths must start and end with the state dimension 2, "
                        "got {widths}")),
    **{name: EQUATIONS for name in EQUATION_PRESETS},
    **{name: FILE for name in FILE_SYSTEMS},
}
SYSTEM = Tagged("name", SYSTEMS, message="unknown system '{value}'; choose one of: {options}")

PLOTS = engine.PLOTS.extend({"gif": Bool()})

CONFIG = engine.RUN.extend({
    **engine.TRACKING,
    "data": DATA,
    "train": TRAIN,
    "model": MODEL,
    "system": SYSTEM,
    "plots": PLOTS,
    **RUNTIME,
})


def check_train(cfg: Any) -> dict[str, Any]:
    """Check a composed `odecli train` config (its `hydra` node, if any, is left out) and
    return every value as plain Python, e.g. check_train(cfg)["train"]["lr"]."""
    return CONFIG.check(job_node(cfg))
