"""The training-engine keys every command shares, checked by one schema.

Every command's `train` node extends `TRAIN` (odecli.dynamics.schema, odecli.latent.schema),
so an optimiser, a schedule or a checkpoint interval means the same and is checked the same
way in `train`, `spiral-vae` and `ecg-vae`. `RUN` holds the top-level keys they share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odecli.errors import ConfigError
from odecli.fields import Bool, Choice, Field, Float, Int, Name, Rule, Schema, Str, to_plain

OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")  # mapped to torch in odecli.engine.optim
SCHEDULES = ("constant", "cosine")
SEED_MAX = 2**32 - 1  # numpy's legacy seeding and torch.manual_seed both take 0 .. 2**32-1

TRAIN = Schema(
    {
        "niters": Int(1),
        "batch_size": Int(1),
        "test_freq": Int(1),           # evaluate every N iterations
        "checkpoint_every": Int(0),    # 0: only at the end
        "checkpoint_seconds": Float(0),  # a checkpoint after this much training (0: off)
        "optimizer": Choice(*OPTIMIZERS),
        "lr": Float(0, low_open=True),
        "lr_min": Float(0),            # where the cosine schedule ends
        "schedule": Choice(*SCHEDULES),
        "weight_decay": Float(0),
        "grad_clip": Float(0, low_open=True, nullable=True),  # null: no clipping
    },
    rules=[Rule(lambda v: v["lr_min"] <= v["lr"],
                "{p}lr_min ({lr_min:g}) must lie between 0 and {p}lr ({lr:g})")],
)

# Every command's `plots` node starts here: the engine draws figures (the loss figure and the
# family's) only where `enabled` is true; families extend it with their own figure keys.
PLOTS = Schema({"enabled": Bool()})

RUN = Schema({
    "seed": Int(0, SEED_MAX),   # what numpy's and torch's generators both accept
    "quiet": Bool(),  # true: no progress bar or summary
    "resume": Str(nullable=True),  # a run folder to continue (every command resumes)
})

# One node per tracker chosen with logger=NAME or logger=[A,B] (odecli.engine.loggers).
TRACKERS = {
    "tensorboard": Schema({"log_dir": Name(), "figures": Bool()}),
    "mlflow": Schema({"tracking_uri": Str(nullable=True), "experiment": Str(nullable=True)}),
}


@dataclass(frozen=True)
class Trackers(Field):
    """The `logger` node: any subset of TRACKERS, each checked by its own schema."""

    def describe(self) -> str:
        return f"tracker settings ({', '.join(TRACKERS)})"

    def check(self, value: Any, path: str) -> dict[str, Any]:
        node = to_plain(value) or {}
        if not isinstance(node, dict):
            raise self._error(path, value)
        for name in node:
            if name not in TRACKERS:
                raise ConfigError(f"unknown logger '{name}'; choose none or any of: "
                                  f"{', '.join(TRACKERS)} (e.g. logger=[tensorboard,mlflow])")
        return {k: TRACKERS[k].check(v, f"{path}.{k}") for k, v in node.items()}


# Keys every command that trains on the engine adds at its top level.
TRACKING = {
    "logger": Trackers(),
    "objective": Str(nullable=True),  # the metric an Optuna sweep minimises (null: default)
}


def refuse_node_values(cfg: Any, groups: dict[str, str]) -> None:
    """`data=mnist` replaces a family's whole `data` node with a string: name the group
    override that was meant (`groups`: node -> its config group, e.g. data -> cde_data)."""
    for key, group in groups.items():
        if isinstance(cfg.get(key), str):
            raise ConfigError(f"{key}={cfg.get(key)} replaces the whole {key} node; choose "
                              f"a {key} config with {group}={cfg.get(key)}")
