"""Schema of the `odecli cde` config: data (dataset and the paper's protocol), model, train.

Types and range rules only; every default lives in configs/cde.yaml and the configs/cde_data/,
configs/cde_model/ groups. `check_cde(cfg)` checks a whole composed config once, up front.
"""

from __future__ import annotations

from typing import Any

from odecli.engine import schema as engine
from odecli.fields import Bool, Choice, Float, Int, Rule, Schema, Str, Tagged, job_node
from odecli.numerics.schema import RUNTIME

DATASETS = ("japanese_vowels", "spirals", "uea")
MODELS = ("cde", "gru_dt", "odernn", "knn")
INTERPOLATIONS = ("hermite", "linear")
SPLITS = ("pooled", "archive")

_FRACTION = Float(0, 1, low_open=True, high_open=True)

# The paper's protocol (Kidger et al. 2020, section 4.2), the same for every dataset.
PROTOCOL = {
    "drop": Float(0, 1, high_open=True),  # fraction of each series' points removed at random
    "time_channel": Bool(),               # the observation times as a channel of the path
    "mask_channel": Bool(),               # the cumulative count of observations as a channel
    "split": Choice(*SPLITS),             # pooled and re-split, or the archive's TRAIN/TEST
    "val_fraction": _FRACTION,            # of all series (pooled) or of TRAIN (archive)
    "test_fraction": _FRACTION,           # of all series (pooled only)
}
# (data.split=archive takes its test series from the TEST file: test_fraction is unused)
_SPLIT = Rule(lambda v: v["split"] == "archive" or v["val_fraction"] + v["test_fraction"] < 1,
              "{p}val_fraction + {p}test_fraction must leave training series (< 1)")

DATA = Tagged("name", {
    "japanese_vowels": Schema(PROTOCOL, rules=[_SPLIT]),
    "spirals": Schema({**PROTOCOL,
                       "n": Int(20, 100_000),       # series, half of each orientation
                       "length": Int(4, 10_000),    # points per series
                       "noise": Float(0)},          # observation noise (std)
                      rules=[_SPLIT]),
    "uea": Schema({**PROTOCOL, "dir": Str(nullable=True)}, rules=[_SPLIT]),
}, message="unknown dataset '{value}'; choose one of: {options} (cde_data=NAME)")

MODEL = Tagged("name", {
    "cde": Schema({
        "hidden": Int(1, 4096),              # the CDE's state z
        "width": Int(1, 4096),               # hidden units of the vector field's MLP
        "layers": Int(1, 16),                # hidden layers of that MLP
        "interpolation": Choice(*INTERPOLATIONS),
    }),
    "gru_dt": Schema({"hidden": Int(1, 4096)}),
    "odernn": Schema({"hidden": Int(1, 4096), "width": Int(1, 4096), "layers": Int(1, 16)}),
    "knn": Schema({"length": Int(2, 10_000)}),  # every series resampled to this many steps
}, message="unknown model '{value}'; choose one of: {options} (cde_model=NAME)")

TRAIN = engine.TRAIN.extend({
    "eval_batch_size": Int(1),
    # each training batch loses this fraction of its points afresh every step (augmentation)
    "augment_drop": Float(0, 1, high_open=True),
    # std of Gaussian noise added afresh to each training batch's standardised values
    "noise": Float(0),
    "label_smoothing": Float(0, 1, high_open=True),  # of the training cross-entropy
    "ema": Float(0, 1, high_open=True),  # decay of the scored weights' moving average (0: off)
    "keep": Choice("best", "last"),  # the state tested: best validation, or the final one
})

CONFIG = engine.RUN.extend({
    **engine.TRACKING,
    **RUNTIME,
    "data": DATA,
    "model": MODEL,
    "train": TRAIN,
    "plots": engine.PLOTS,
})


def check_cde(cfg: Any) -> dict[str, Any]:
    """Check a composed `odecli cde` config (the `hydra` node left out); plain values back."""
    return CONFIG.check(job_node(cfg))
