"""What an experiment family plugs into the engine: its step, its evaluation, its figures.

Everything else (the loop, progress, timing, NFE counters, evaluation cadence, best state,
stop signals, checkpoints, metrics, history, the loss figure) belongs to the engine, so a new
family is a subclass of `Experiment` and a primary config, nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from odecli.engine.trained import TrainedModel
from odecli.fields import Schema
from odecli.numerics.device import Runtime
from odecli.numerics.solve import CountingField, SolverSpec


class Experiment:
    """Base class of an experiment family; the engine drives one instance per run.

    Subclasses set the attributes below in `__init__(cfg, run_dir)` and implement the
    methods. `cfg` is the composed config without the `hydra` node.
    """

    command: ClassVar[str] = ""  # the CLI command, as written in metrics.json
    # Keep the state with the lowest evaluation "score" and restore it before the test.
    track_best: ClassVar[bool] = False
    # With track_best, False reports the best score and its iteration but tests and saves
    # the final state (an experiment may set it per run, as `odecli cde train.keep=last`).
    restore_best: bool = True
    evaluate_at_start: ClassVar[bool] = False  # a history row before the first step
    # hydra/launcher=ensemble: the family's batched members (odecli.engine.ensemble.Batch,
    # with `unfit(cfg)` and `member_keys`), or None: every job runs alone
    ensemble: ClassVar[Any] = None
    # metrics.json keys an Optuna sweep may minimise (`objective=`); the first is the default.
    objectives: ClassVar[tuple[str, ...]] = ("final_loss",)
    # History columns drawn in the loss figure's evaluation panel: (key, label).
    loss_figure_columns: ClassVar[tuple[tuple[str, str], ...]] = ()
    # The evaluation column the progress bar shows, and its label there.
    progress_metric: ClassVar[tuple[str, str]] = ("score", "held_out")
    # metrics.json keys of the one-line summary a finished run (and `odecli eval`) prints.
    summary_keys: ClassVar[tuple[str, ...]] = ()
    # What `odecli.run` and `odecli.load` hand back: the family's TrainedModel subclass.
    trained_model: ClassVar[type[TrainedModel]] = TrainedModel
    # The schema of the whole composed config (types and ranges of every key): the checks,
    # tests/test_schema.py and the generated configuration reference read it.
    schema: ClassVar[Schema]

    name: str  # system or dataset name (metrics.json `system`, titles, progress bar)
    opts: dict[str, Any]  # the checked `train` node (engine keys and the family's own)
    spec: SolverSpec
    rt: Runtime
    counter: CountingField  # the field whose evaluations count as NFE
    citation: str | None = None  # data credit for metrics and figure footers
    # An ensemble member's stand-in for torch's global generator: the state its solo run's
    # global generator would have (set by engine.ensemble.own_torch_rng), which the family's
    # batched draws use and the member's checkpoint saves in its place. None: a solo run,
    # which draws from the global generator itself.
    torch_rng: torch.Generator | None = None

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)

    def configure(self, settings: dict[str, Any], logger: logging.Logger) -> None:
        """What every family does first: keep its checked config, set up the device and the
        solver (announcing a substituted gradient), and seed torch."""
        from odecli.engine.rundir import notice
        from odecli.numerics import device as device_mod

        self.settings, self.opts = settings, settings["train"]
        self.rt = device_mod.setup(self.cfg.device)
        device_mod.quiet_warnings()
        self.spec = SolverSpec.from_cfg(self.cfg.solver, self.cfg.get("gradient"))
        self.spec.resolve_compile(int(self.opts.get("niters", 0)))
        if self.spec.notice:
            notice(logger, self.spec.notice)
        self.seed = int(settings["seed"])
        torch.manual_seed(self.seed)

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """Check a composed config without training or writing anything (sweeps call this for
        every job before any job runs)."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """What a checkpoint stores and the optimiser trains, by name."""
        raise NotImplementedError

    def rng_state(self) -> dict[str, Any]:
        """The family's own random generators (the engine saves torch's global one)."""
        return {}

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        pass

    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one random batch, with its graph, and extra numbers for the history
        (e.g. the ELBO's terms). `iteration` counts from 1."""
        raise NotImplementedError

    def end_step(self) -> None:
        """Undo per-step state after the optimiser step or an abandoned step."""

    def evaluate(self) -> dict[str, float]:
        """History columns of a held-out evaluation; with `track_best`, a "score" (lower is
        better) that picks the best state."""
        raise NotImplementedError

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        """Final metrics of the model as it stands (the best state when tracked).
        `last_eval` is the evaluation of exactly this model when the engine has one."""
        raise NotImplementedError

    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        """The family's figures (the engine draws loss.png); `test` is None when the test
        could not run (a failed or abandoned run)."""

    def write_files(self, run_dir: Path, test: dict[str, Any]) -> None:
        """The family's data files beside metrics.json, from the test just run (e.g. a table
        behind a figure); written with or without plots. `test()` itself writes nothing, so
        a loaded model can be scored without touching its run folder."""

    def extra_state(self) -> dict[str, Any]:
        """Family state a resumed run needs besides modules and RNGs (e.g. GIF frames)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    def on_evaluation(self, iteration: int, evaluation: dict[str, float]) -> None:
        """Called after each recorded evaluation (e.g. to keep a GIF frame)."""


class NumpyBatches:
    """Mixin for a family whose batches come from `self.rng`, a numpy Generator: the engine
    checkpoints its state and restores it after an abandoned step."""

    rng: np.random.Generator

    def rng_state(self) -> dict[str, Any]:
        return {"batches": self.rng.bit_generator.state}

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["batches"]
