"""`odecli train`: learn the vector field of a known system from (noisy) observations.

The experiment draws random windows of the observed trajectory, integrates the learned field
over each and scores the fit; its evaluation rolls the field out from the true initial state
over the training span and an extrapolation window after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig

from odecli.dynamics import data as data_mod
from odecli.dynamics import schema as schema_mod
from odecli.dynamics import systems, ude
from odecli.dynamics.schema import EQUATION_PRESETS, check_train
from odecli.dynamics.trained import TrainedSystem
from odecli.engine import rundir
from odecli.engine.experiment import Experiment
from odecli.errors import SolverError
from odecli.numerics import device as device_mod
from odecli.numerics import solve
from odecli.numerics.solve import StepAborted


class DynamicsExperiment(Experiment):
    """One system, one learned field; built from the composed `train` config."""

    command: ClassVar[str] = "train"
    evaluate_at_start: ClassVar[bool] = True
    objectives: ClassVar[tuple[str, ...]] = ("error_rel", "extrap_error_rel",
                                             "heldout_error_rel", "missing_term_error_rel",
                                             "final_loss")
    loss_figure_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("eval_loss", "eval loss (L1, training span)"),
        ("error_rel", "relative trajectory error"))
    progress_metric: ClassVar[tuple[str, str]] = ("error_rel", "err")
    # (a data file's run has no extrapolation window: its held-out part and the baselines)
    summary_keys: ClassVar[tuple[str, ...]] = ("error_rel", "extrap_error_rel",
                                               "heldout_error_rel", "beats_baselines")
    trained_model = TrainedSystem
    schema = schema_mod.CONFIG

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.configure(check_train(cfg), _log())
        self.system = systems.build(cfg.system)
        self.name = self.system.name
        self.gen = torch.Generator().manual_seed(self.seed)
        dev, dt = self.rt.device, self.rt.dtype
        t_full = self.system.full_t()
        truth = self.system.trajectory(t_full)
        self.n_train = len(self.system.t)
        self.t_full = t_full.to(dev, dt)
        self.truth = truth.to(dev, dt)
        self.obs = data_mod.observe(self.t_full[: self.n_train], self.truth[: self.n_train],
                                    cfg.data, self.gen)
        o = self.opts
        data_mod.check_windows(len(self.obs.t), o)
        self.window_weights = data_mod.start_weights(self.obs, o["sampling"], o["batch_time"])
        self.final_weights = (data_mod.start_weights(self.obs, o["sampling"],
                                                     o["final_batch_time"])
                              if o["final_iters"] else None)
        centred = truth[: self.n_train] - truth[: self.n_train].mean(0)
        self.scale = float(centred.pow(2).sum(-1).mean().sqrt())
        self.variables = self.system.variables
        # figure labels: the equations' names; the built-in systems keep y_1, y_2
        self.labels = self.variables if self.system.name in EQUATION_PRESETS \
            else None
        self.field = ude.build(cfg.model, self.system.dim, self.variables).to(dev, dt)
        if bool(cfg.model.normalize):
            self.field.fit_normalization(self.obs.t, self.obs.y)
        self.counter = solve.CountingField(self.field)
        advice = device_mod.gpu_advice(str(cfg.device.name), self.rt,
                                       sum(p.numel() for p in self.field.parameters()),
                                       self.opts["batch_size"])
        if advice:
            rundir.notice(_log(), advice)
        self.frames: list[tuple[int, Any]] = []
        self._last_pred: torch.Tensor | None = None

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """The constructor's checks minus the true trajectory of a built-in system (a sweep
        validates every job up front, and integrating the mlp system alone takes a second).
        Typed equations are integrated here: one that blows up is bad input, refused before
        a folder exists (the run reuses the solution: systems.trajectory caches it)."""
        device_mod.quiet_warnings()
        opts, _, _, _, system = checked(cfg)
        fraction, _ = data_mod.check_data(cfg.data)
        data_mod.check_windows(data_mod.observed_count(len(system.t), fraction), opts)
        ude.build(cfg.model, system.dim, system.variables)
        if system.name == "equations":
            system.trajectory(system.full_t())

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"field": self.field}

    def rng_state(self) -> dict[str, Any]:
        return {"data": self.gen.get_state()}

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        self.gen.set_state(state["data"])

    # -- training --------------------------------------------------------------------------
    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        size, window, weights = self.windows_at(iteration)
        batch = data_mod.sample(self.obs, size, window, self.gen, weights)
        y0 = self._augment(batch.y0)
        if self.field.time_dependent:
            self.field.t_offset = batch.t_start
        pred = solve.solve(self.counter, y0, batch.t, self.spec)
        pred = data_mod.gather(pred[..., : self.system.dim], batch)
        diff = pred - batch.target
        loss = diff.abs().mean() if self.opts["loss"] == "l1" else diff.pow(2).mean()
        return loss, {}

    def windows_at(self, iteration: int) -> tuple[int | None, int, torch.Tensor | None]:
        """(batch_size, batch_time, start weights) of training step `iteration` (1-based):
        the final phase's for the last `train.final_iters` of `train.niters` (every step
        where niters is fewer)."""
        o = self.opts
        if o["final_iters"] and iteration > o["niters"] - o["final_iters"]:
            return o["final_batch_size"], o["final_batch_time"], self.final_weights
        return o["batch_size"], o["batch_time"], self.window_weights

    def end_step(self) -> None:
        self.field.t_offset = None

    def _augment(self, y0: torch.Tensor) -> torch.Tensor:
        if self.field.augment_dim == 0:
            return y0
        pad = y0.new_zeros(*y0.shape[:-1], self.field.augment_dim)
        return torch.cat([y0, pad], dim=-1)

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, y0: torch.Tensor, t: torch.Tensor,
                spec: solve.SolverSpec | None = None) -> torch.Tensor:
        """The learned field integrated from states y0 (n, dim) over the times t:
        (len(t), n, dim), with the run's solver unless `spec` is given."""
        pred = solve.solve(self.counter, self._augment(y0), t, spec or self.spec, grad=False)
        return pred[..., : self.system.dim]

    @torch.no_grad()
    def predict(self, t: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Roll the learned field out from the true initial state; returns (pred, nfe)."""
        t = self.t_full if t is None else t
        n0 = self.counter.nfe
        pred = self.rollout(self.truth[0].unsqueeze(0), t)
        return pred[:, 0], self.counter.nfe - n0

    def evaluate(self) -> dict[str, float]:
        """Trajectory error over the training span and the extrapolation window."""
        pred, nfe = self.predict()
        solve.check_finite(pred, "learned trajectory")
        self._last_pred = pred
        out = trajectory_errors(pred, self.truth, self.n_train, self.scale, nfe)
        if isinstance(self.field, ude.HybridField) and self.field.net is not None:
            out.update(ude.missing_term_error(
                self.field, self.system.field, self.t_full[: self.n_train],
                self.truth[: self.n_train], self.system.time_dependent))
        return out

    def on_evaluation(self, iteration: int, evaluation: dict[str, float]) -> None:
        if bool(self.cfg.plots.gif) and self._last_pred is not None:
            self.frames.append((iteration, self._last_pred.cpu().numpy()))

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        ev = last_eval if last_eval else self.evaluate()
        return {**ev, "scale": self.scale, "variables": list(self.variables),
                **ude.describe(self.field)}

    def extra_state(self) -> dict[str, Any]:
        return {"frames": [(i, torch.as_tensor(f)) for i, f in self.frames]}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.frames = [(int(i), f.numpy()) for i, f in state.get("frames", [])]

    # -- figures ---------------------------------------------------------------------------
    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        from odecli.dynamics import plots

        try:
            pred, _ = self.predict()
            pred_np = pred.cpu().numpy()
        except (SolverError, StepAborted):  # diverged or stuck: draw the rest
            pred_np = None
        truth = self.truth.cpu().numpy()
        t = self.t_full.cpu().numpy()
        obs_y = self.obs.y.cpu().numpy()
        iteration = history[-1]["iteration"] if history else 0
        title = f"{self.name}: iteration {iteration}"
        t_split = float(t[self.n_train - 1]) if len(t) > self.n_train else None
        if self.system.dim == 2:
            plots.phase(run_dir / "phase.png", truth, pred_np, title, obs=obs_y,
                        n_train=self.n_train, labels=self.labels)
        elif self.system.dim > 2:
            from odecli.dynamics import data_plots

            data_plots.phase_grid(run_dir / "phase.png", self.variables, [truth],
                                  None if pred_np is None else [pred_np], [obs_y], title,
                                  truth_label="true")
        plots.time_series(run_dir / "time.png", t, truth, pred_np, title,
                          t_obs=self.obs.t.cpu().numpy(), obs=obs_y, t_split=t_split,
                          labels=self.labels)
        if self.system.dim == 2:
            plots.vector_field(run_dir / "vector_field.png", self.field_numpy, truth,
                               f"{self.name}: learned field", t=float(t[0]),
                               labels=self.labels)
        if self.frames and self.system.dim >= 2:
            plots.training_gif(run_dir / "training.gif", truth, self.frames, self.name)
        if isinstance(self.field, ude.HybridField):
            self._ude_figure(run_dir / "ude.png", title)

    @torch.no_grad()
    def _ude_figure(self, path: Path, title: str) -> None:
        """Known part, learned part and (the truth being known) the missing term over the
        true trajectory's training span."""
        from odecli.dynamics import data_plots

        f, n = self.field, self.n_train
        t, y = self.t_full[:n], self.truth[:n]
        known = ude.rate_at(f.known, t, y, f.time_dependent)
        learned = ude.rate_at(f.learned_part, t, self._augment(y), f.time_dependent)
        true = ude.rate_at(self.system.field, t.double(), y.double(),
                           self.system.time_dependent)
        data_plots.ude_parts(path, t.cpu().numpy(), self.variables, known.cpu().numpy(),
                             learned[:, : self.system.dim].cpu().numpy(),
                             (true - known.double()).cpu().numpy(),
                             f"{title}: known and learned parts")

    @torch.no_grad()
    def velocity(self, t: float, y: torch.Tensor) -> torch.Tensor:
        """The learned field f(t, y) at states y (n, dim): (n, dim)."""
        tt = torch.tensor(t, dtype=self.rt.dtype, device=self.rt.device)
        return self.field(tt, self._augment(y))[:, : self.system.dim]

    def field_numpy(self, pts: Any, t: float) -> Any:
        y = torch.as_tensor(pts, dtype=self.rt.dtype, device=self.rt.device)
        return self.velocity(t, y).cpu().numpy()


def _log() -> Any:
    import logging

    return logging.getLogger("odecli.train")


def trajectory_errors(pred: torch.Tensor, truth: torch.Tensor, n_train: int, scale: float,
                      nfe: int) -> dict[str, float]:
    """RMS error over the training span and after it, absolute and relative to the scale.

    The scale is the RMS distance of the true trajectory from its mean over the training span,
    so 0.05 means the learned trajectory is off by 5% of the size of the motion.
    """
    err = (pred - truth).pow(2).sum(-1)
    train_err = float(err[:n_train].mean().sqrt())
    extra = err[n_train:]
    extra_err = float(extra.mean().sqrt()) if len(extra) else float("nan")
    return {
        "eval_loss": float((pred[:n_train] - truth[:n_train]).abs().mean()),
        "error_abs": train_err,
        "error_rel": train_err / scale,
        "extrap_error_abs": extra_err,
        "extrap_error_rel": extra_err / scale,
        "nfe_eval": float(nfe),
    }


def checked(cfg: DictConfig) -> tuple[dict[str, Any], solve.SolverSpec, device_mod.Runtime,
                                      int, systems.System]:
    """The checks the experiment and `validate` share: train options, solver spec, device,
    seed and the system (without its true trajectory)."""
    settings = check_train(cfg)
    return (settings["train"], solve.SolverSpec.from_cfg(cfg.solver, cfg.gradient),
            device_mod.setup(cfg.device), settings["seed"], systems.build(cfg.system))
