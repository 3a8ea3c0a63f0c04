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
    Float,
    Int,
    List,
    Rule,
    Schema,
    Tagged,
    Union,
    job_node,
)
from odecli.numerics.schema import RUNTIME

# Names mapped to torch modules in odecli.dynamics.models (tests/test_schema.py keeps the two
# in step).
ACTIVATIONS = ("tanh", "relu", "elu", "softplus", "silu", "gelu", "sigmoid")
INITS = ("seed", "default")
OUTPUT_SCALES = ("max", "mean", "rms")
LOSSES = ("l1", "mse")
SAMPLINGS = ("uniform", "arclength")

TRAIN = engine.TRAIN.extend({
    "batch_time": Int(2),  # observed points per training window: a window needs two
    "loss": Choice(*LOSSES),
    "sampling": Choice(*SAMPLINGS),
})

DATA = Schema({
    "noise_std": Float(0),
    "observe_fraction": Float(0, 1, low_open=True),
})

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
