"""Schema of the `cnf` config: data, model, regularisation, train, plots.

Types and range rules only; every default is in configs/cnf.yaml. The `train` node extends
the engine's keys (odecli.engine.schema.TRAIN); solver, gradient and device are the shared
groups (odecli.numerics.schema).
"""

from __future__ import annotations

from typing import Any

from odecli.engine import schema as engine
from odecli.fields import Bool, Choice, Float, Int, Rule, Schema, job_node
from odecli.flows.model import ACTIVATIONS, NOISES, TRACES
from odecli.flows.toy import GENERATORS
from odecli.numerics.schema import RUNTIME

DATASETS = tuple(GENERATORS)

DATA = Schema({
    "name": Choice(*DATASETS, message="unknown data.name '{value}'; choose one of: {options}"),
    "n_train": Int(2),   # a fixed sample, drawn from the seed
    "n_val": Int(1),     # picks the best state and the KDE bandwidth
    "n_test": Int(1),    # scores the model, the baselines and the true density
})

MODEL = Schema({
    "width": Int(1),
    "depth": Int(1),      # hidden layers
    "activation": Choice(*ACTIVATIONS),
    "time_input": Bool(),
    "time_length": Float(0, low_open=True),   # T: the flow runs from data (0) to base (T)
    "trace": Choice(*TRACES),
    "noise": Choice(*NOISES),  # Hutchinson's noise (trace=hutchinson)
})

REG = Schema({
    "kinetic": Float(0),   # weight of the integrated |f|^2 (RNODE)
    "jacobian": Float(0),  # weight of the integrated |df/dz|_F^2 (RNODE)
})

TRAIN = engine.TRAIN

PLOTS = engine.PLOTS.extend(
    {
        "gif": Bool(),          # flow.gif: base -> data over time
        "grid": Int(10),        # heat-map resolution per axis
        "extent": Float(0, low_open=True),  # figures show [-extent, extent]^2
        "n_samples": Int(1),    # model samples drawn in the figures
        "n_frames": Int(2),     # frames of the flow strip (the GIF has 4x as many)
    })

CONFIG = engine.RUN.extend({
    **engine.TRACKING,
    **RUNTIME,
    "data": DATA,
    "model": MODEL,
    "reg": REG,
    "train": TRAIN,
    "plots": PLOTS,
}, rules=[Rule(lambda v: v["train"]["batch_size"] <= v["data"]["n_train"],
               "train.batch_size ({train[batch_size]}) must not exceed data.n_train "
               "({data[n_train]})")])


def check_cnf(cfg: Any) -> dict[str, Any]:
    """Check a composed `odecli cnf` config (any `hydra` node left out); returns every value
    as plain Python."""
    return CONFIG.check(job_node(cfg))
