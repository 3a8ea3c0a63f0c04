"""Schema of the `odecli classify` config: data, model, train, dial, plots.

Types and range rules only; every default lives in configs/classify.yaml and the
configs/classify_data/, configs/classify_model/ groups. `check_classify(cfg)` checks a whole
composed config once, up front, and returns plain values.
"""

from __future__ import annotations

from typing import Any

from odecli.engine import schema as engine
from odecli.fields import Bool, Choice, Float, Int, List, Rule, Schema, Str, Tagged, job_node
from odecli.numerics.schema import RUNTIME
from odecli.numerics.solve import ADAPTIVE, FIXED_GRID

N_DIGITS = 1797  # images in scikit-learn's bundled digits (sklearn.datasets.load_digits)
N_MNIST_TRAIN = 60000  # MNIST's official training images (its 10,000 test images stay apart)
DATASETS = ("digits", "mnist")
MODELS = ("odenet", "resnet")
FIELDS = ("conv", "mlp")
HEADS = ("flatten", "pool")
# Dial solvers: the adaptive rtol sweep needs an error estimate; SciPy's runs outside torch
# and cannot count its function evaluations, so it is left out of the sweep.
DIAL_ADAPTIVE = tuple(m for m in ADAPTIVE if m != "scipy_solver")

_FRACTION = Float(0, 1, low_open=True, high_open=True)


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) counts of n images; each held-out part has at least one image."""
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(n * val_fraction)))
    return n - n_val - n_test, n_val, n_test


def _pool(v: dict[str, Any], total: int) -> int:
    return total if v["limit"] is None else min(v["limit"], total)


def _impossible(what: str, total: int, test: bool):  # noqa: ANN202 - a Rule's message
    def message(v: dict[str, Any], p: str) -> str:
        n = _pool(v, total)
        parts = f"{p}val_fraction + {p}test_fraction" if test else f"{p}val_fraction"
        return (f"impossible split: {parts} leave no training images of the {n} {what} "
                f"({p}limit={v['limit']})")
    return message


DIGITS = Schema(
    {"val_fraction": _FRACTION, "test_fraction": _FRACTION, "limit": Int(3, nullable=True)},
    rules=[Rule(lambda v: split_sizes(_pool(v, N_DIGITS), v["val_fraction"],
                                      v["test_fraction"])[0] >= 1,
                _impossible("digits images", N_DIGITS, True))])
MNIST = Schema(
    {
        "dir": Str(nullable=True),      # a folder holding the four IDX files (.gz or not)
        "cache_dir": Str(),             # where downloads go (checked by SHA-256)
        "download": Bool(),
        "base_url": Str(),
        "timeout": Float(0, low_open=True),
        "val_fraction": _FRACTION,      # held out of the 60,000 training images
        "limit": Int(2, nullable=True),  # use only this many training images (short runs)
        "test_limit": Int(1, nullable=True),  # ... and this many test images
    },
    rules=[Rule(lambda v: split_sizes(_pool(v, N_MNIST_TRAIN), v["val_fraction"], 0)[0] >= 1,
                _impossible("MNIST training images", N_MNIST_TRAIN, False))])
DATA = Tagged("name", {"digits": DIGITS, "mnist": MNIST},
              message="unknown dataset '{value}'; choose one of: {options} "
                      "(classify_data=NAME)")

_MODEL_KEYS = {
    "field": Choice(*FIELDS),     # conv: 3x3 convolutions; mlp: on the flattened features
    "width": Int(1),              # channels (conv) or features (mlp) of the state
    "downsample": Int(0),         # stride-2 convolutions before the block (MNIST: 2)
    "augment_dim": Int(0),        # zero channels/features appended (Dupont et al. 2019)
    "norm_groups": Int(1),        # GroupNorm groups: min(norm_groups, channels)
    "head": Choice(*HEADS),       # conv: flatten every position, or average-pool (torchdiffeq)
}


def _groups_divide(v: dict[str, Any]) -> bool:
    """Every normalised channel count (the width, and the state with its augmented
    channels) splits into min(norm_groups, channels) equal groups."""
    return all(c % min(v["norm_groups"], c) == 0
               for c in (v["width"], v["width"] + v["augment_dim"]))


_GROUPS_RULE = Rule(_groups_divide,
                    "{p}norm_groups={norm_groups} does not divide the channels ({p}width="
                    "{width}, plus {p}augment_dim={augment_dim}); choose a common divisor")
MODEL = Tagged("name", {
    "odenet": Schema(_MODEL_KEYS, rules=[_GROUPS_RULE]),
    "resnet": Schema({**_MODEL_KEYS, "blocks": Int(1), "tied": Bool()}, rules=[_GROUPS_RULE]),
}, message="unknown model '{value}'; choose one of: {options} (classify_model=NAME)")

TRAIN = engine.TRAIN.extend({
    "eval_batch_size": Int(1),  # batch size of validation, test and the dial
    "shift": Int(0),            # random translation of training images by up to N pixels
    # each training solve at rtol and atol times a factor drawn log-uniformly from
    # [1, tol_spread] (1: off); validation, test and the dial's reference keep solver.rtol
    "tol_spread": Float(1),
})

DIAL = Schema({
    "enabled": Bool(),
    "method": Choice(*DIAL_ADAPTIVE, message="unknown {path} '{value}'; choose one of: "
                     "{options}"),
    "rtols": List(Float(0, low_open=True)),  # atol = rtol at each point
    "fixed_methods": List(Choice(*FIXED_GRID)),
    "steps": List(Int(1)),      # k steps of size 1/k over [0, 1]
    "within": Float(0),         # accuracy points that still count as "as good"
})

PLOTS = engine.PLOTS.extend({"resnet_run": Str(nullable=True)})

CONFIG = engine.RUN.extend({
    **engine.TRACKING,
    **RUNTIME,
    "data": DATA,
    "model": MODEL,
    "train": TRAIN,
    "dial": DIAL,
    "plots": PLOTS,
})


def check_classify(cfg: Any) -> dict[str, Any]:
    """Check a composed `odecli classify` config (the `hydra` node left out); returns every
    value as plain Python. The MNIST files are not looked for here (odecli.classify.data)."""
    return CONFIG.check(job_node(cfg))
