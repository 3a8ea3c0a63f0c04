"""Fit loop for learning dynamics: training, evaluation, metrics, checkpoints, figures.

`Trainer` owns everything that a checkpoint must restore (model, optimiser, schedule, RNG
states, history), so a resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from odecli.dynamics import data as data_mod
from odecli.dynamics import models, systems
from odecli.engine import rundir as runs
from odecli.errors import (
    CheckpointError,
    ConfigError,
    Interrupted,
    OdecliError,
    SolverError,
    one_line,
)
from odecli.numerics import device as device_mod
from odecli.numerics import solve

log = logging.getLogger("odecli.train")

OPTIMIZERS = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
              "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULES = ("constant", "cosine")
SAMPLINGS = ("uniform", "arclength")
LOSSES = ("l1", "mse")
CHECKPOINT_FORMAT = 1
# Keys a resumed run (or a checkpoint reload) may change: they do not change what was learned.
RESUMABLE_KEYS = ("resume", "quiet", "train.niters", "train.test_freq", "train.checkpoint_every",
                  "plots", "device")


def _positive_int(cfg: Mapping[str, Any], key: str, allow_zero: bool = False) -> int:
    value = cfg.get(key)
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"train.{key} must be {kind} integer, got {value!r}")
    return value


def _positive_float(cfg: Mapping[str, Any], key: str, allow_zero: bool = False) -> float:
    value = cfg.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"train.{key} must be a positive number, got {value!r}")
    return float(value)


def validate_train(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check the `train` node; returns plain values so the hot loop reads no OmegaConf."""
    out: dict[str, Any] = {
        "niters": _positive_int(cfg, "niters"),
        "batch_size": _positive_int(cfg, "batch_size"),
        "batch_time": _positive_int(cfg, "batch_time"),
        "test_freq": _positive_int(cfg, "test_freq"),
        "checkpoint_every": _positive_int(cfg, "checkpoint_every", allow_zero=True),
        "lr": _positive_float(cfg, "lr"),
        "lr_min": _positive_float(cfg, "lr_min", allow_zero=True),
        "weight_decay": _positive_float(cfg, "weight_decay", allow_zero=True),
    }
    if out["batch_time"] < 2:
        raise ConfigError("train.batch_time must be at least 2 (a window needs two points)")
    for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss", LOSSES),
                         ("sampling", SAMPLINGS)):
        value = str(cfg.get(key, "uniform" if key == "sampling" else None))
        if value not in allowed:
            raise ConfigError(f"unknown train.{key} '{value}'; choose one of: "
                              f"{', '.join(allowed)}")
        out[key] = value
    clip = cfg.get("grad_clip")
    if clip is not None:
        out["grad_clip"] = _positive_float(cfg, "grad_clip")
    else:
        out["grad_clip"] = None
    return out


class Trainer:
    """One dynamics-learning run, built from the composed config."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.quiet = bool(cfg.get("quiet", False))
        self.opts, self.spec, self.rt, seed, self.system = checked(cfg)
        if self.spec.notice:
            runs.notice(log, self.spec.notice)
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        dev, dt = self.rt.device, self.rt.dtype
        t_full = self.system.full_t()
        truth = self.system.trajectory(t_full)
        self.n_train = len(self.system.t)
        self.t_full = t_full.to(dev, dt)
        self.truth = truth.to(dev, dt)
        self.obs = data_mod.observe(self.t_full[: self.n_train], self.truth[: self.n_train],
                                    cfg.data, self.gen)
        data_mod.check_window(len(self.obs.t), self.opts["batch_time"])
        self.window_weights = (data_mod.arclength_weights(self.obs, self.opts["batch_time"])
                               if self.opts["sampling"] == "arclength" else None)
        centred = truth[: self.n_train] - truth[: self.n_train].mean(0)
        self.scale = float(centred.pow(2).sum(-1).mean().sqrt())
        self.field = models.build(cfg.model, self.system.dim).to(dev, dt)
        if bool(cfg.model.get("normalize", True)):
            self.field.fit_normalization(self.obs.t, self.obs.y)
        self.func = solve.CountingField(self.field)
        advice = device_mod.gpu_advice(str(cfg.device.get("name", "cpu")), self.rt,
                                       sum(p.numel() for p in self.field.parameters()),
                                       self.opts["batch_size"])
        if advice:
            runs.notice(log, advice)
        opt_cls = OPTIMIZERS[self.opts["optimizer"]]
        self.optimizer = opt_cls(self.field.parameters(), lr=self.opts["lr"],
                                 weight_decay=self.opts["weight_decay"])
        self.scheduler = None
        if self.opts["schedule"] == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=self.opts["niters"], eta_min=self.opts["lr_min"])
        self.iteration = 0
        self.history = runs.History(self.run_dir / runs.HISTORY)
        self.frames: list[tuple[int, Any]] = []
        self.nfe_forward = 0
        self.nfe_backward = 0
        self.train_seconds = 0.0
        self.last_loss = float("nan")
        self.last_eval: dict[str, float] = {}
        self._cfg_plain: dict[str, Any] | None = None

    # -- training -------------------------------------------------------------------------
    def loss_fn(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred - target
        return diff.abs().mean() if self.opts["loss"] == "l1" else diff.pow(2).mean()

    def step(self) -> float:
        """One optimisation step on a random batch of windows; returns the batch loss."""
        gen_state = self.gen.get_state()
        try:
            return self._step()
        except solve.StepAborted:
            self.gen.set_state(gen_state)  # as if the step never started: resume stays exact
            self.field.t_offset = None
            raise

    def _step(self) -> float:
        o = self.opts
        batch = data_mod.sample(self.obs, o["batch_size"], o["batch_time"], self.gen,
                                self.window_weights)
        y0 = self._augment(batch.y0)
        if self.field.time_dependent:
            self.field.t_offset = batch.t_start
        self.optimizer.zero_grad(set_to_none=True)
        n0 = self.func.nfe
        pred = solve.solve(self.func, y0, batch.t, self.spec)
        n1 = self.func.nfe
        pred = data_mod.gather(pred[..., : self.system.dim], batch)
        loss = self.loss_fn(pred, batch.target)
        solve.check_finite(loss.detach(), "training loss")
        loss.backward()
        if o["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(self.field.parameters(), o["grad_clip"])
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.field.t_offset = None
        self.nfe_forward += n1 - n0
        self.nfe_backward += self.func.nfe - n1
        return float(loss.detach())

    def _augment(self, y0: torch.Tensor) -> torch.Tensor:
        if self.field.augment_dim == 0:
            return y0
        pad = y0.new_zeros(*y0.shape[:-1], self.field.augment_dim)
        return torch.cat([y0, pad], dim=-1)

    @torch.no_grad()
    def predict(self, t: torch.Tensor | None = None, spec: solve.SolverSpec | None = None
                ) -> tuple[torch.Tensor, int]:
        """Roll the learned field out from the true initial state; returns (pred, nfe)."""
        t = self.t_full if t is None else t
        y0 = self._augment(self.truth[0].unsqueeze(0))
        n0 = self.func.nfe
        pred = solve.solve(self.func, y0, t, spec or self.spec, grad=False)
        return pred[:, 0, : self.system.dim], self.func.nfe - n0

    def evaluate(self) -> dict[str, float]:
        """Trajectory error over the training span and the extrapolation window."""
        pred, nfe = self.predict()
        solve.check_finite(pred, "learned trajectory")
        self._last_pred = pred
        return trajectory_errors(pred, self.truth, self.n_train, self.scale, nfe)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to niters, evaluating every test_freq; returns the metrics written.

        SIGINT/SIGTERM finish the current step, then checkpoint, write `status: interrupted`
        and the figures, and raise `Interrupted` (exit 130/143); `resume=` continues the run.
        """
        o = self.opts
        start_wall = time.perf_counter()
        status, reason, hint = "ok", None, None
        every = o["checkpoint_every"]
        with runs.stop_signals() as stop:
            self.func.abort = stop.overdue
            try:
                with runs.progress(o["niters"], f"train {self.system.name}", self.quiet,
                                   start=self.iteration) as bar:
                    if self.iteration == 0:
                        self._record(self.evaluate())
                    while self.iteration < o["niters"] and not stop:
                        t0 = time.perf_counter()
                        self.last_loss = self.step()
                        self.train_seconds += time.perf_counter() - t0
                        self.iteration += 1
                        last = self.iteration == o["niters"]
                        if self.iteration % o["test_freq"] == 0 or last:
                            self._record(self.evaluate())
                        if every and self.iteration % every == 0 and not last:
                            self.save_checkpoint()
                        bar.update(self.iteration, loss=self.last_loss,
                                   err=self.last_eval.get("error_rel", float("nan")),
                                   nfe=self.func.nfe)
            except SolverError as exc:
                status, reason, hint = "failed", str(exc), exc.hint
                log.error("run failed at iteration %d: %s (%s)", self.iteration, exc, exc.hint)
            except solve.StepAborted:
                log.warning("%s: step %d did not finish within %.0f s; abandoned", stop.name,
                            self.iteration + 1, runs.STEP_GRACE_SECONDS)
            if stop and status == "ok" and self.iteration < o["niters"]:
                status, reason = "interrupted", stop.name
                log.warning("%s at iteration %d: writing a checkpoint", stop.name,
                            self.iteration)
            metrics = self.metrics(status, reason, hint, time.perf_counter() - start_wall)
            if status == "interrupted":
                metrics.update(self._interrupted_eval())
                metrics["resume"] = f"odecli train resume={self.run_dir}"
            self.finish(metrics)
            self.func.abort = None
        if status == "interrupted":
            assert stop.signum is not None
            raise Interrupted(f"interrupted by {stop.name} at iteration {self.iteration} of "
                              f"{o['niters']}; checkpoint saved, continue with: odecli train "
                              f"resume={self.run_dir}", stop.signum, str(self.run_dir))
        return metrics

    def _interrupted_eval(self) -> dict[str, Any]:
        """Errors of the model as it stands (not added to the history, so a resumed run's
        history matches an uninterrupted one)."""
        try:
            ev = self.evaluate()
        except (SolverError, solve.StepAborted):
            return {}
        return {k: v for k, v in ev.items() if k != "nfe_eval"}

    def _record(self, ev: dict[str, float]) -> None:
        self.last_eval = ev
        # No training loss before the first step: an empty cell, not a NaN that reads as a
        # diverged run.
        loss = None if self.iteration == 0 else self.last_loss
        row = {"iteration": self.iteration, "train_loss": loss, **ev,
               "nfe_forward": self.nfe_forward, "nfe_backward": self.nfe_backward,
               "seconds": round(self.train_seconds, 4)}
        self.history.append(row)
        if bool(self.cfg.plots.get("gif", False)):
            self.frames.append((self.iteration, self._last_pred.cpu().numpy()))
        log.info("iter %d  loss %s  error %.4g (rel %.3g)  extrap %.4g", self.iteration,
                 "-" if loss is None else f"{loss:.4g}", ev["error_abs"], ev["error_rel"],
                 ev["extrap_error_abs"])

    def metrics(self, status: str, reason: str | None, hint: str | None, wall: float
                ) -> dict[str, Any]:
        its = max(self.iteration, 1)
        label = {"ok": "ok", "interrupted": "interrupted"}.get(status, f"failed: {reason}")
        m: dict[str, Any] = {
            "status": label,
            "system": self.system.name,
            "iterations": self.iteration,
            "niters": self.opts["niters"],
            "final_loss": self.last_loss,
            **{k: v for k, v in self.last_eval.items() if k != "nfe_eval"},
            "scale": self.scale,
            "nfe_forward_per_solve": self.nfe_forward / its,
            "nfe_backward_per_iter": self.nfe_backward / its,
            "nfe_eval": self.last_eval.get("nfe_eval"),
            "wall_seconds": wall,
            "train_seconds": self.train_seconds,
            "seconds_per_iter": self.train_seconds / its,
            "peak_memory_mb": runs.peak_memory_mb(self.rt.device),
            "device": str(self.rt.device),
            "gradient": self.spec.gradient,
            "solver": self.spec.method,
            "environment": runs.environment(self.rt.device, self.rt.dtype, self.rt.threads),
        }
        if status == "interrupted":
            m["interrupted_by"] = reason
        if hint:
            m["hint"] = hint
        return m

    def finish(self, metrics: dict[str, Any]) -> None:
        """Checkpoint, figures and metrics; metrics last so 'ok' means everything is there.
        A stopped or failed run records its status before the figures, which a diverged
        field can make slow."""
        self.save_checkpoint()
        if metrics["status"] != "ok":
            runs.write_json(self.run_dir / runs.METRICS, metrics)
        if bool(self.cfg.plots.get("enabled", True)):
            try:
                self.figures()
            except Exception as exc:  # a figure must never lose a trained model's metrics
                log.warning("figures failed: %s", exc)
                metrics["figures_error"] = str(exc)
        runs.write_json(self.run_dir / runs.METRICS, metrics)

    def config_plain(self) -> dict[str, Any]:
        """The resolved config as plain containers (computed once: checkpoints reuse it)."""
        if self._cfg_plain is None:
            self._cfg_plain = OmegaConf.to_container(self.cfg, resolve=True)  # type: ignore
        return self._cfg_plain

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is."""
        return {
            "format": CHECKPOINT_FORMAT,
            "command": "train",
            "iteration": self.iteration,
            "niters": self.opts["niters"],
            "model": self.field.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "torch_rng": torch.get_rng_state(),
            "data_rng": self.gen.get_state(),
            "config": self.config_plain(),
            "counters": {"nfe_forward": self.nfe_forward, "nfe_backward": self.nfe_backward,
                         "train_seconds": self.train_seconds, "nfe": self.func.nfe},
            "last_loss": self.last_loss,
            "last_eval": dict(self.last_eval),
            "history": [dict(r) for r in self.history.rows],
            "frames": [(i, torch.as_tensor(f)) for i, f in self.frames],
        }

    def save_checkpoint(self) -> None:
        """checkpoint.pt, atomically: a crash mid-write keeps the previous checkpoint."""
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        runs.atomic_write_bytes(self.run_dir / runs.CHECKPOINT, buf.getvalue())

    def load_checkpoint(self, path: Path, restore_training: bool = True,
                        allowed: tuple[str, ...] = RESUMABLE_KEYS) -> dict[str, Any]:
        """Restore a checkpoint written by `save_checkpoint` (model only unless
        restore_training); refuses one that is corrupt or from an incompatible config."""
        state = read_checkpoint(path)
        check_compatible(state["config"], self.config_plain(), f"checkpoint {path}", allowed)
        try:
            self.field.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this model: "
                                  f"{one_line(exc)}") from None
        if not restore_training:
            self.iteration = int(state["iteration"])
            self.history.rows = [dict(r) for r in state.get("history", [])]
            return state
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
                if int(state.get("niters", self.opts["niters"])) != self.opts["niters"]:
                    self._stretch_schedule()
            torch.set_rng_state(state["torch_rng"])
            self.gen.set_state(state["data_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path} cannot be restored: "
                                  f"{one_line(exc)}") from None
        c = state["counters"]
        self.iteration = int(state["iteration"])
        self.nfe_forward, self.nfe_backward = int(c["nfe_forward"]), int(c["nfe_backward"])
        self.train_seconds = float(c["train_seconds"])
        self.func.nfe = int(c["nfe"])
        self.last_loss = float(state["last_loss"])
        self.last_eval = dict(state["last_eval"])
        self.history.rows = [dict(r) for r in state["history"]]
        self.history.flush()
        self.frames = [(int(i), f.numpy()) for i, f in state.get("frames", [])]
        return state

    def _stretch_schedule(self) -> None:
        """niters was raised on resume: follow the cosine schedule of the new length from the
        current iteration (closed form; the recursive form would drift)."""
        sch = self.scheduler
        assert sch is not None
        sch.T_max = self.opts["niters"]
        step, lo = sch.last_epoch, self.opts["lr_min"]
        lr = lo + (self.opts["lr"] - lo) * (1 + math.cos(math.pi * step / sch.T_max)) / 2
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sch._last_lr = [lr for _ in self.optimizer.param_groups]

    def figures(self) -> None:
        from odecli.dynamics import plots

        d = self.run_dir
        try:
            pred, _ = self.predict()
            pred_np = pred.cpu().numpy()
        except (SolverError, solve.StepAborted):  # diverged or stuck: draw the rest
            pred_np = None
        truth = self.truth.cpu().numpy()
        t = self.t_full.cpu().numpy()
        obs_y = self.obs.y.cpu().numpy()
        title = f"{self.system.name}: iteration {self.iteration}"
        plots.phase(d / "phase.png", truth, pred_np, title, obs=obs_y, n_train=self.n_train)
        plots.time_series(d / "time.png", t, truth, pred_np, title,
                          t_obs=self.obs.t.cpu().numpy(), obs=obs_y,
                          t_split=float(t[self.n_train - 1]) if len(t) > self.n_train else None)
        plots.vector_field(d / "vector_field.png", self.field_numpy, truth,
                           f"{self.system.name}: learned field",
                           t=float(t[0]))
        if self.history.rows:
            plots.loss_curve(d / "loss.png", self.history.rows, self.system.name)
        if self.frames:
            plots.training_gif(d / "training.gif", truth, self.frames, self.system.name)

    @torch.no_grad()
    def field_numpy(self, pts: Any, t: float) -> Any:
        y = torch.as_tensor(pts, dtype=self.rt.dtype, device=self.rt.device)
        y = self._augment(y)
        tt = torch.tensor(t, dtype=self.rt.dtype, device=self.rt.device)
        return self.field(tt, y)[:, : self.system.dim].cpu().numpy()


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


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Entry point for `odecli train`: build, train, write; raises OdecliError on bad input.

    With `resume=<run folder>` (the bridge runs the job in that folder) the checkpoint there
    is restored first and training continues to train.niters.
    """
    device_mod.quiet_warnings()
    trainer = Trainer(cfg, run_dir)
    if cfg.get("resume"):
        trainer.load_checkpoint(Path(run_dir) / runs.CHECKPOINT)
        log.info("resumed at iteration %d of %d", trainer.iteration, trainer.opts["niters"])
    metrics = trainer.run()
    if metrics["status"] != "ok":
        raise RunFailedWithMetrics(metrics)
    return metrics


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint's state dict; one clear line when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (no checkpoint to load)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: "
                              f"{one_line(exc)}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not an odecli train checkpoint")
    if state.get("format", CHECKPOINT_FORMAT) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} was written by a newer odecli")
    return state


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_differences(stored: Mapping[str, Any], given: Mapping[str, Any],
                       allowed: tuple[str, ...] = RESUMABLE_KEYS) -> list[str]:
    """Keys (outside `allowed` and their subtrees) whose values differ, as 'key: a -> b'."""
    a, b = _flatten(stored), _flatten(given)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in allowed):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append(f"{key}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}")
    return out


def check_compatible(stored: Mapping[str, Any], given: Mapping[str, Any], what: str,
                     allowed: tuple[str, ...] = RESUMABLE_KEYS) -> None:
    """Refuse a config that would change what the stored state means."""
    diffs = config_differences(stored, given, allowed)
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise CheckpointError(f"{what} comes from an incompatible config: {diffs[0]}{more}; "
                              f"only {', '.join(k for k in allowed if k != 'resume')} may change")


class RunFailedWithMetrics(OdecliError):
    """A run that stopped on a solver failure; metrics.json already records it."""

    exit_code = 1

    def __init__(self, metrics: dict[str, Any]) -> None:
        hint = metrics.get("hint")
        super().__init__(metrics["status"] + (f" (hint: {hint})" if hint else ""))
        self.metrics = metrics


def checked(cfg: DictConfig) -> tuple[dict[str, Any], solve.SolverSpec, device_mod.Runtime,
                                      int, systems.System]:
    """The checks a Trainer and `validate` share: train options, solver spec, device, seed
    and the system (without its true trajectory)."""
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return (validate_train(cfg.train), solve.SolverSpec.from_cfg(cfg.solver, cfg.gradient),
            device_mod.setup(cfg.device), seed, systems.build(cfg.system))


def validate(cfg: DictConfig) -> None:
    """Check every value of a composed train config without training or writing anything.

    The same checks the Trainer makes, minus the true trajectory (a sweep validates every
    job up front, and integrating the mlp system alone takes a second)."""
    device_mod.quiet_warnings()
    opts, _, _, _, system = checked(cfg)
    fraction, _ = data_mod.check_data(cfg.data)
    data_mod.check_window(data_mod.observed_count(len(system.t), fraction), opts["batch_time"])
    models.build(cfg.model, system.dim)
