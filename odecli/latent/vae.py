"""What `spiral-vae` and `ecg-vae` share on the engine: the model, the ELBO step, batches.

The two commands differ only in their data, how a batch is drawn and their held-out tasks;
each subclass supplies `sample_batch`, `evaluate`, `test` and `figures`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from odecli.engine import rundir
from odecli.engine.experiment import Experiment, NumpyBatches
from odecli.latent.model import LatentODEVAE, elbo
from odecli.numerics import device as device_mod
from odecli.numerics.solve import SolverSpec

log = logging.getLogger("odecli.latent")


@dataclass
class MaskedBatch:
    x: torch.Tensor  # encoder input (B, T, D)
    mask: torch.Tensor  # which inputs the encoder sees (B, T)
    target: torch.Tensor  # what the likelihood scores (B, T, D)
    target_mask: torch.Tensor  # where it scores it (B, T)
    anchor: torch.Tensor | None = None  # set (spirals): z0 is the state at target index
    #                                      anchor[i]; x is read on its own relative clock


class VAEExperiment(NumpyBatches, Experiment):
    """Adam (or train.optimizer) on the negative ELBO; the best validation score is kept."""

    track_best: ClassVar[bool] = True
    objectives: ClassVar[tuple[str, ...]] = ("best_score", "reconstruction_mse", "final_loss")
    # the command's whole-config check (odecli.latent.schema)
    check_config: ClassVar[Callable[[Any], dict[str, Any]]]
    loss_figure_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("score", "validation mean MSE"),)

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.configure(self.check(cfg), log)
        self.noise_std = self.settings["model"]["obs_noise_std"]
        self.kl_warmup = self.opts["kl_warmup"]

    @classmethod
    def check(cls, cfg: DictConfig) -> dict[str, Any]:
        """The checked config nodes of this command (odecli.latent.schema), the solver and
        the device."""
        settings = cls.check_config(cfg)
        SolverSpec.from_cfg(cfg.solver, cfg.get("gradient"))
        device_mod.setup(cfg.device)
        return settings

    def build_model(self) -> None:
        """The model, after the data (the data's seeding comes first, as it always did)."""
        self.model = LatentODEVAE(2, self.settings["model"]).to(device=self.rt.device,
                                                                 dtype=self.rt.dtype)
        self.counter = self.model.func
        advice = device_mod.gpu_advice(str(self.cfg.device.name), self.rt,
                                       sum(p.numel() for p in self.model.parameters()),
                                       self.opts["batch_size"])
        if advice:
            rundir.notice(log, advice)
        self.rng = np.random.default_rng(self.seed + 1)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def sample_batch(self) -> MaskedBatch:
        raise NotImplementedError

    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = self.sample_batch()
        weight = min(1.0, iteration / self.kl_warmup) if self.kl_warmup else 1.0
        if batch.anchor is None:
            x_hat, mu, logvar = self.model(batch.x, batch.mask, self.t, self.spec)
        else:
            x_hat, mu, logvar = self.model.forward_anchored(
                batch.x, batch.mask, self.t, batch.anchor, batch.target.shape[1], self.spec)
        terms = elbo(batch.target, x_hat, batch.target_mask, mu, logvar, self.noise_std,
                     weight)
        return -terms.elbo, {"loglik": float(terms.loglik.detach()),
                             "kl": float(terms.kl.detach())}

    # -- helpers for the subclasses ---------------------------------------------------------
    def tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=self.rt.dtype, device=self.rt.device)

    def mask_tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(a, dtype=bool), device=self.rt.device)

    def plots_enabled(self) -> bool:
        return bool(self.cfg.plots.enabled)


def mse(pred: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    """Mean squared error over the selected points and both channels."""
    where = np.asarray(where, dtype=bool)
    if not where.any():
        return float("nan")
    return float(((pred - truth) ** 2)[where].mean())


def mean_score(values: dict[str, float]) -> float:
    """The validation score that picks the best state: the mean of the task MSEs, ignoring
    tasks with nothing to score (NaN), so one empty task never blocks every best state."""
    return float(np.nanmean(list(values.values())))
