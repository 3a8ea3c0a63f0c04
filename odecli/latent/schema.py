"""Schemas of the `spiral-vae` and `ecg-vae` configs: train, data, model, tasks, plots.

`check_spiral_vae(cfg)` and `check_ecg_vae(cfg)` check a whole composed config once, up front,
and return plain values. Both commands share the latent-ODE VAE's model keys and the engine's
training keys (odecli.engine.schema.TRAIN); the defaults are in configs/spiral_vae.yaml and
configs/ecg_vae.yaml, never here.
"""

from __future__ import annotations

from typing import Any

from odecli.engine import schema as engine
from odecli.fields import (
    Bool,
    Choice,
    Float,
    Int,
    List,
    Name,
    Range,
    Rule,
    Schema,
    Str,
    Union,
    job_node,
)
from odecli.numerics.schema import RUNTIME
from odecli.numerics.solve import METHODS

ENCODERS = ("rnn", "gru", "odernn")
TASKS = ("reconstruction", "gap", "right", "left")  # the ecg-vae task mix, in weight order
# The ODE-RNN encoder backpropagates through its own solves (gradient=direct): SciPy's
# solver integrates outside torch, so it cannot serve there.
ODERNN_METHODS = tuple(m for m in METHODS if m != "scipy_solver")

_FRACTION = Float(0, 1, low_open=True, high_open=True)  # strictly between 0 and 1
_SHARE = Float(0, 1, low_open=True)  # in (0, 1]

MODEL = Schema({
    "latent_dim": Int(1),
    "encoder": Choice(*ENCODERS),
    "encoder_width": Int(1),
    "odernn_width": Int(1),      # hidden-flow network of the odernn encoder
    "odernn_method": Choice(
        *ODERNN_METHODS,
        message="unknown {path} '{value}'; choose one of: {options} (the encoder "
                "backpropagates through this solver; scipy_solver integrates outside torch)"),
    "ode_width": Int(1),
    "ode_layers": Int(1),
    "decoder_width": Int(1),
    "decoder_layers": Int(1),
    "obs_noise_std": Float(0, low_open=True),  # the ELBO's Gaussian likelihood
    "time_input": Bool(),
})
SPIRAL_MODEL = MODEL.extend(rules=[Rule(
    lambda v: not v["time_input"],
    "spiral-vae solves the latent ODE both ways from the middle of each observed window, "
    "so it needs {p}time_input=false")])
ECG_MODEL = MODEL.extend({"time_span": Float(0, low_open=True)})

_VAE_TRAIN = engine.TRAIN.extend({
    "kl_warmup": Int(0),  # iterations over which the KL weight ramps from 0 to 1 (0: none)
})
SPIRAL_TRAIN = _VAE_TRAIN.extend({
    "partial_share": Float(0, 1),  # share of windows whose encoder sees only a part
    "partial_min": _SHARE,         # ... of at least this share of the window
})
ECG_TRAIN = _VAE_TRAIN

PLOTS = engine.PLOTS.extend({"n_examples": Int(1)})


def _held_out(n: int, fraction: float) -> int:
    """How many of n spirals a fraction holds out (at least one), as the data split counts."""
    return max(1, int(round(n * fraction)))


SPIRAL_DATA = Schema(
    {
        "n_spirals": Int(1),
        "test_fraction": _FRACTION,
        "val_fraction": _FRACTION,
        "n_points": Int(3),      # the observed window is at least three points
        "t_max": Float(0, low_open=True),
        "window": _SHARE,
        "obs_fraction": _SHARE,
        "noise_std": Float(0),
        "radius_start": Range(),
        "radius_end": Range(),
    },
    rules=[Rule(lambda v: v["n_spirals"] - _held_out(v["n_spirals"], v["test_fraction"])
                - _held_out(v["n_spirals"], v["val_fraction"]) >= 1,
                "{p}val_fraction + {p}test_fraction leave no training spirals "
                "(n_spirals={n_spirals})")],
)

ECG_DATA = Schema(
    {
        "dir": Str(nullable=True),
        "record": Name(from_int=True, parts=2),  # PhysioNet: 100, or patient001/s0010_re
        "db": Name(),
        "db_version": Name(),
        "cache_dir": Str(),
        "download": Bool(),
        "base_url": Str(),
        "timeout": Float(0, low_open=True),
        "annotation": Name(nullable=True),
        "beat_types": List(Str(), nullable=True),
        "lead": Union(Int(0), Str(), message="{path} must be a signal index (an integer >= 0) "
                                             "or a signal name, got {value!r}"),
        "before": Float(0),
        "after": Float(0, low_open=True),
        "n_points": Int(8),
        "split": List(Float(0), length=3),
        "max_beats": Int(1, nullable=True),
        "citation": Str(nullable=True),
    },
    rules=[Rule(lambda v: sum(v["split"]) > 0,
                "{p}split must be three non-negative fractions (train, val, test), not all "
                "zero"),
           Rule(lambda v: v["citation"] is None or bool(v["citation"].strip()),
                "{p}citation must be non-empty text, or null to derive it from the record")],
)

TASK_SET = Schema({
    "noise_std": Float(0),
    "obs_fraction": _FRACTION,
    "gap_fraction": _FRACTION,
    "extrap_fraction": _FRACTION,
    "weights": Schema({t: Float(0) for t in TASKS},
                      rules=[Rule(lambda v: sum(v.values()) > 0,
                                  lambda v, p: f"{p[:-1]} must not all be zero, got {v}")]),
})

SPIRAL_VAE = engine.RUN.extend({
    **engine.TRACKING,
    **RUNTIME,
    "data": SPIRAL_DATA,
    "model": SPIRAL_MODEL,
    "train": SPIRAL_TRAIN,
    "plots": PLOTS,
})
ECG_VAE = engine.RUN.extend({
    **engine.TRACKING,
    **RUNTIME,
    "data": ECG_DATA,
    "tasks": TASK_SET,
    "model": ECG_MODEL,
    "train": ECG_TRAIN,
    "plots": PLOTS,
})


def check_spiral_vae(cfg: Any) -> dict[str, Any]:
    """Check a composed `odecli spiral-vae` config (any `hydra` node left out); returns every
    value as plain Python, e.g. check_spiral_vae(cfg)["data"]["radius_start"] == [0.2, 0.4]."""
    return SPIRAL_VAE.check(job_node(cfg))


def check_ecg_vae(cfg: Any) -> dict[str, Any]:
    """Check a composed `odecli ecg-vae` config (the data files are not read here: see
    odecli.latent.ecg_data.load_beats); returns every value as plain Python."""
    return ECG_VAE.check(job_node(cfg))
