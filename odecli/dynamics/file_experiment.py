"""`odecli train system=file`: learn the vector field behind a user's own measurements.

The data file is read and checked before anything is built (odecli.dynamics.datafile); the
states are scaled per variable by the training part's mean and spread (kept in the
checkpoint as the `scaling` module), the field works on scaled states, and every error and
figure is reported in the file's own units. Training draws windows of consecutive rows of
the training trajectories and scores observed cells only; evaluation rolls the field out
over each training part and over the held-out part, beside three baselines scored on the
same held-out cells.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from odecli.dynamics import datafile, tabular, ude
from odecli.dynamics.experiment import DynamicsExperiment
from odecli.dynamics.schema import check_train
from odecli.dynamics.trained import TrainedDataSystem
from odecli.engine.experiment import Experiment
from odecli.errors import ConfigError, SolverError
from odecli.numerics import device as device_mod
from odecli.numerics import solve
from odecli.numerics.solve import StepAborted

log = logging.getLogger("odecli.train")
UNION_LIMIT = 4096  # rollouts share one solve while their times' union stays this small


class FileExperiment(DynamicsExperiment):
    """A data file, a learned field (optionally known equations plus a network)."""

    objectives: ClassVar[tuple[str, ...]] = ("heldout_error_rel", "error_rel", "final_loss")
    loss_figure_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("error_rel", "relative error (training part)"),
        ("heldout_error_rel", "relative error (held-out part)"))
    trained_model = TrainedDataSystem

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        Experiment.__init__(self, cfg, run_dir)
        settings = check_train(cfg)
        self.configure(settings, log)
        s = settings["system"]
        self.table, self.split = prepare(settings)
        log.info(self.table.summary_line())
        self.name = s["name"]
        self.citation = self.table.citation
        self.variables = self.table.variables
        self.dim = len(self.variables)
        self.gen = torch.Generator().manual_seed(self.seed)
        dev, dt = self.rt.device, self.rt.dtype
        mean, std = tabular.scaling(self.split.train)
        self.scaling = ude.Scaling(self.dim).to(dev)
        self.scaling.mean.copy_(torch.as_tensor(mean))
        self.scaling.std.copy_(torch.as_tensor(std))
        self.windows = tabular.windows(self.split.train, mean, std, self.opts["batch_time"],
                                       dev, dt)
        self.scale = tabular.data_scale(self.split.train, mean)
        self.field = ude.build(cfg.model, self.dim, self.variables, self.scaling).to(dev, dt)
        if bool(cfg.model.normalize):
            self._fit_normalization()
        self.counter = solve.CountingField(self.field)
        self.frames: list[tuple[int, Any]] = []  # no training GIF for data files
        self._baselines = self._score_baselines(mean, std)

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """Everything but training: the config, the data check, the split, the model."""
        device_mod.quiet_warnings()
        settings = check_train(cfg)
        solve.SolverSpec.from_cfg(cfg.solver, cfg.gradient)
        device_mod.setup(cfg.device)
        table, _ = prepare(settings)
        ude.build(cfg.model, len(table.variables), table.variables, ude.Scaling(
            len(table.variables)))

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"field": self.field, "scaling": self.scaling}

    def _fit_normalization(self) -> None:
        """Network statistics from every training part (scaled units, missing as NaN)."""
        zs, rates, ts = [], [], []
        for t, z, m in zip(self.windows.t, self.windows.z, self.windows.mask, strict=True):
            zn = torch.where(m, z, torch.full_like(z, float("nan")))
            zs.append(zn)
            ts.append(t)
            if len(t) > 1:
                r = (zn[1:] - zn[:-1]) / (t[1:] - t[:-1]).unsqueeze(-1)
                if isinstance(self.field, ude.HybridField):
                    mid = torch.nan_to_num((zn[1:] + zn[:-1]) / 2)
                    r = r - ude.rate_at(self.field.known_part, (t[1:] + t[:-1]) / 2, mid,
                                        self.field.known.time_dependent)[..., : self.dim]
                rates.append(r)
        rate = torch.cat(rates) if rates else None
        self.field.fit_normalization(torch.cat(ts), torch.cat(zs), rate)

    # -- training --------------------------------------------------------------------------
    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.opts
        batch = tabular.sample(self.windows, o["batch_size"], o["batch_time"], self.gen)
        if self.field.time_dependent:
            self.field.t_offset = batch.t_start
        pred = solve.solve(self.counter, self._augment(batch.y0), batch.t, self.spec)
        pred = tabular.gather(pred[..., : self.dim], batch)
        return tabular.masked_loss(pred, batch, o["loss"]), {}

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def rollout_parts(self, parts: list[tabular.Part]) -> tuple[list[np.ndarray], int]:
        """The learned field integrated from each part's start to its times (file units)."""
        if not parts:
            return [], 0
        offsets = [np.round((p.t - p.start_t) * 1e9) / 1e9 for p in parts]
        union = np.unique(np.concatenate([np.zeros(1), *offsets]))
        if len(union) > UNION_LIMIT and len(parts) > 1:
            done = [self.rollout_parts([p]) for p in parts]
            return [d[0][0] for d in done], sum(d[1] for d in done)
        dev, dt = self.rt.device, self.rt.dtype
        y0 = self.scaling.to_model(torch.as_tensor(np.stack([p.start_y for p in parts]),
                                                   device=dev)).to(dt)
        if self.field.time_dependent:
            self.field.t_offset = torch.tensor([[p.start_t] for p in parts], device=dev,
                                               dtype=dt)
        n0 = self.counter.nfe
        try:
            pred = solve.solve(self.counter, self._augment(y0),
                               torch.as_tensor(union, device=dev, dtype=dt), self.spec,
                               grad=False)
        finally:
            self.field.t_offset = None
        solve.check_finite(pred, "learned trajectory")
        out = []
        for b, off in enumerate(offsets):
            idx = torch.as_tensor(np.searchsorted(union, off), device=dev)
            out.append(self.scaling.to_data(pred[idx, b, : self.dim].double()).cpu().numpy())
        return out, self.counter.nfe - n0

    def evaluate(self) -> dict[str, float]:
        train, nfe = self.rollout_parts(self.split.train)
        test, nfe2 = self.rollout_parts(self.split.test)
        e = tabular.errors(train, self.split.train, self.scale)
        h = tabular.errors(test, self.split.test, self.scale)
        std = self.scaling.std.cpu().numpy()
        l1 = np.concatenate([(np.abs(pr - p.y) / std)[~np.isnan(p.y)]
                             for pr, p in zip(train, self.split.train, strict=True)])
        return {"eval_loss": float(l1.mean()), "error_abs": e["abs"], "error_rel": e["rel"],
                "heldout_error_abs": h["abs"], "heldout_error_rel": h["rel"],
                "nfe_eval": float(nfe + nfe2)}

    def on_evaluation(self, iteration: int, evaluation: dict[str, float]) -> None:
        pass

    def _score_baselines(self, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
        preds = tabular.baselines(self.split, mean, std)
        out: dict[str, Any] = {}
        for name in tabular.BASELINES:
            p = preds[name]
            out[f"baseline_{name}_error_rel"] = (
                None if p is None or not self.split.test
                else tabular.errors(p, self.split.test, self.scale)["rel"])
        return out

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        ev = dict(last_eval) if last_eval else self.evaluate()
        train, _ = self.rollout_parts(self.split.train)
        test, _ = self.rollout_parts(self.split.test)
        std = self.scaling.std.cpu().numpy()
        out: dict[str, Any] = {**ev, "scale": self.scale,
                               "error_rel_by_variable": tabular.per_variable(
                                   train, self.split.train, std, self.variables)}
        if self.split.test:
            out["heldout_error_rel_by_variable"] = tabular.per_variable(
                test, self.split.test, std, self.variables)
            out.update(self._baselines)
            scored = [v for k, v in self._baselines.items() if v is not None]
            out["beats_baselines"] = bool(scored) and ev["heldout_error_rel"] < min(scored)
        out["split"] = {"kind": self.split.kind,
                        "train": [p.name for p in self.split.train],
                        "heldout": sorted({p.name for p in self.split.test})}
        out["data"] = self.table.summary()
        out["scaling"] = {v: {"mean": float(m), "std": float(s)} for v, m, s in zip(
            self.variables, self.scaling.mean.tolist(), self.scaling.std.tolist(),
            strict=True)}
        out.update(ude.describe(self.field))
        return out

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    # -- figures and inference -------------------------------------------------------------
    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        from odecli.dynamics import data_plots

        try:  # drawn on a fine grid between the observations
            train, _ = self.rollout_parts([dense(p) for p in self.split.train])
            held, _ = self.rollout_parts([dense(p) for p in self.split.test])
        except (SolverError, StepAborted):
            train, held = None, None
        iteration = history[-1]["iteration"] if history else 0
        title = f"{self.name}: iteration {iteration}"
        data_plots.data_figures(run_dir, self.table, self.split, train, held, title,
                                self.citation, self.field_in_data_units)
        if isinstance(self.field, ude.HybridField):
            self._ude_figure(run_dir, title)

    def _ude_figure(self, run_dir: Path, title: str) -> None:
        from odecli.dynamics import data_plots

        part = max(self.split.train, key=lambda p: len(p.t))
        y = tabular.fill(datafile.Trajectory(part.name, part.t, part.y))
        t = torch.as_tensor(part.t, dtype=self.rt.dtype, device=self.rt.device)
        z = self.scaling.to_model(torch.as_tensor(y, device=self.rt.device)).to(self.rt.dtype)
        std = self.scaling.std.cpu().numpy()
        with torch.no_grad():
            f = self.field
            known = ude.rate_at(f.known_part, t, self._augment(z), f.known.time_dependent)
            learned = ude.rate_at(f.learned_part, t, self._augment(z), f.time_dependent)
        data_plots.ude_parts(run_dir / "ude.png", part.t, self.variables,
                             known[:, : self.dim].cpu().numpy() * std,
                             learned[:, : self.dim].cpu().numpy() * std, None,
                             f"{title}: known and learned parts (trajectory {part.name})",
                             self.citation)

    @torch.no_grad()
    def field_in_data_units(self, pts: Any, t: float) -> Any:
        """dy/dt of the learned field at states pts (n, dim) in the file's units."""
        y = torch.as_tensor(pts, device=self.rt.device)
        z = self.scaling.to_model(y).to(self.rt.dtype)
        tt = torch.tensor(t, dtype=self.rt.dtype, device=self.rt.device)
        rate = self.field(tt, self._augment(z))[:, : self.dim].double()
        return (rate * self.scaling.std).cpu().numpy()

    @torch.no_grad()
    def forecast(self, t: Any, y0: Any) -> np.ndarray:
        """The learned trajectory from state y0 (file units) at times t (t[0]: y0's time)."""
        t = np.asarray(t, dtype=np.float64)
        part = tabular.Part("forecast", t, np.zeros((len(t), self.dim)), float(t[0]),
                            np.asarray(y0, dtype=np.float64), True)
        return self.rollout_parts([part])[0][0]


def dense(part: tabular.Part, n: int = 300) -> tabular.Part:
    """The part's time span on an even grid of n points from its start (for figures)."""
    t = np.linspace(part.start_t, part.t[-1], n)
    return tabular.Part(part.name, t, np.zeros((n, len(part.start_y))), part.start_t,
                        part.start_y, True)


def prepare(settings: Mapping[str, Any]) -> tuple[datafile.Table, tabular.Split]:
    """The data file read, checked and split; refuses settings that apply only to simulated
    systems."""
    d, o = settings["data"], settings["train"]
    if d["noise_std"] != 0 or d["observe_fraction"] != 1:
        raise ConfigError("data.noise_std and data.observe_fraction apply to simulated "
                          "systems; a data file is trained on as it is")
    if o["sampling"] != "uniform":
        raise ConfigError(f"train.sampling={o['sampling']} applies to simulated systems; data "
                          "files use uniform window starts")
    if o["final_iters"]:
        raise ConfigError("train.final_iters applies to simulated systems; a data file is "
                          "trained on train.batch_time-row windows throughout")
    s = settings["system"]
    table = datafile.read(s)
    return table, tabular.split(table, s["split"], s["train_fraction"])
