"""The training engine: one loop, one checkpoint format and one run folder for every command.

An `Experiment` supplies the batch loss, the evaluation and the figures; the engine owns
the rest: optimiser and schedule, progress bar, timing, NFE counters, the evaluation cadence,
the best state, SIGINT/SIGTERM (finish the step, or abandon it after 5 s; checkpoint; status
`interrupted`; exit 130/143), solver failures (`failed: <reason>` + hint, exit 1), files it
cannot write (`failed: cannot write PATH: <reason>` + the resume command, exit 1), the
checkpoint cadence (iterations and seconds), figures at the end whatever happened, and
`resume=` continuing a run bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from odecli.engine import checkpoint, loggers, optim, progress, rundir, signals
from odecli.engine.experiment import Experiment
from odecli.engine.figures import loss_figure
from odecli.engine.outcome import RunFailedWithMetrics, run_metrics
from odecli.errors import Interrupted, OdecliError, SolverError, WriteError
from odecli.numerics import device as device_mod
from odecli.numerics.solve import StepAborted, check_finite

log = logging.getLogger("odecli.engine")


class Engine:
    """Trains one experiment in one run folder."""

    def __init__(self, experiment: Experiment, run_dir: Path) -> None:
        self.exp = experiment
        self.cfg = experiment.cfg
        self.run_dir = Path(run_dir)
        self.opts = experiment.opts
        params = [p for m in experiment.modules().values() for p in m.parameters()]
        self.params = params
        self.optimizer, self.scheduler = optim.build(params, self.opts)
        self.history = rundir.History(self.run_dir / rundir.HISTORY)
        self.iteration = 0
        self.nfe_forward = self.nfe_backward = 0
        self.train_seconds = 0.0
        self.last_loss = math.nan
        self.last_extras: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.last_eval_iteration = -1
        self.best: dict[str, Any] | None = None
        self.best_iteration = 0
        self.best_score = math.inf
        self._cfg_plain: dict[str, Any] | None = None
        self.saved_at = time.monotonic()  # when the last checkpoint was written
        self.saved_iteration: int | None = None  # its iteration (None: no checkpoint yet)
        self.stop: signals.StopFlag | None = None  # while run() runs: the stop request
        self.trackers = loggers.Trackers(self.cfg, self.run_dir, experiment.command)

    # -- one step ------------------------------------------------------------------------
    def step(self) -> None:
        """One optimisation step; an abandoned step leaves every RNG as before it."""
        exp, counter = self.exp, self.exp.counter
        saved = (exp.rng_state(), torch.get_rng_state())
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        n0 = counter.nfe
        try:
            loss, extras = exp.loss(self.iteration + 1)
            n1 = counter.nfe
            check_finite(loss.detach(), "training loss")
            loss.backward()
            if self.opts["grad_clip"] is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.opts["grad_clip"])
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        except Exception as exc:
            # Abandoned on request, or broken by the stop signal itself: Slurm signals every
            # process of the job, so a compiler torch.compile started may die of it.
            stopping = self.stop is not None and bool(self.stop) and not isinstance(
                exc, (SolverError, WriteError))
            if not (isinstance(exc, StepAborted) or stopping):
                raise
            exp.set_rng_state(saved[0])
            torch.set_rng_state(saved[1])
            if isinstance(exc, StepAborted):
                raise
            raise StepAborted(f"{type(exc).__name__}: {exc}") from exc
        finally:
            exp.end_step()
        self.nfe_forward += n1 - n0
        self.nfe_backward += counter.nfe - n1
        self.last_loss = float(loss.detach())
        self.last_extras = extras
        self.iteration += 1
        self.train_seconds += time.perf_counter() - start

    def record(self, ev: dict[str, float] | None = None) -> None:
        """Evaluate (or take an evaluation made for this iteration, as the ensemble trainer
        does for its members), append a history row, keep the best state."""
        ev = self.exp.evaluate() if ev is None else ev
        self.last_eval, self.last_eval_iteration = ev, self.iteration
        # No training loss before the first step: an empty cell, not a NaN that reads as a
        # diverged run.
        loss = None if self.iteration == 0 else self.last_loss
        row = {"iteration": self.iteration, "train_loss": loss, **self.last_extras, **ev,
               "nfe_forward": self.nfe_forward, "nfe_backward": self.nfe_backward,
               "seconds": round(self.train_seconds, 4)}
        self.history.append(row)
        self.trackers.evaluation(self.iteration, row)
        if self.exp.track_best and ev["score"] < self.best_score:
            self.best_score, self.best_iteration = ev["score"], self.iteration
            if self.exp.restore_best:
                self.best = {k: copy.deepcopy(m.state_dict())
                             for k, m in self.exp.modules().items()}
        self.exp.on_evaluation(self.iteration, ev)
        log.info("iter %d  loss %s  %s", self.iteration, "-" if loss is None else f"{loss:.4g}",
                 "  ".join(f"{k} {v:.4g}" for k, v in ev.items()
                           if isinstance(v, float) and not k.startswith("nfe")))

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to train.niters, evaluating every train.test_freq; returns the metrics.

        SIGINT/SIGTERM finish the current step, then checkpoint, write `status: interrupted`
        and the figures, and raise `Interrupted` (exit 130/143); `resume=` continues the run.
        """
        o, exp = self.opts, self.exp
        start_wall = time.perf_counter()
        status, reason, hint = "ok", None, None
        self.saved_at = time.monotonic()
        writable = True
        with signals.stop_signals() as stop:
            exp.counter.abort = stop.overdue
            self.stop = stop
            try:
                with progress.progress(o["niters"], f"{exp.command} {exp.name}",
                                       bool(self.cfg.get("quiet", False)),
                                       start=self.iteration) as bar:
                    if self.row_missing():
                        self.evaluate_unless_stopped()
                    while self.iteration < o["niters"] and not stop:
                        self.step()
                        last = self.iteration == o["niters"]
                        if self.iteration % o["test_freq"] == 0 or last:
                            self.evaluate_unless_stopped()
                        if self.checkpoint_due():
                            self.save_checkpoint()
                        bar.update(self.iteration, loss=self.last_loss,
                                   **self._progress_fields())
            except SolverError as exc:
                status, reason, hint = "failed", str(exc), exc.hint
                log.error("run failed at iteration %d: %s (%s)", self.iteration, exc, exc.hint)
            except StepAborted as exc:
                why = str(exc) or f"did not finish within {signals.STEP_GRACE_SECONDS:.0f} s"
                log.warning("%s: step %d abandoned (%s)", stop.name, self.iteration + 1, why)
            except WriteError as exc:  # disk full, permission, quota: the run cannot go on
                status, reason, writable = "failed", str(exc), False
                log.error("run failed at iteration %d: %s", self.iteration, exc)
            if stop and status == "ok" and (self.iteration < o["niters"] or self.row_missing()):
                status, reason = "interrupted", stop.name
                log.warning("%s at iteration %d: writing a checkpoint", stop.name,
                            self.iteration)
            metrics = (self.finish(status, reason, hint, start_wall) if writable
                       else self.record_write_failure(reason or "", start_wall))
            exp.counter.abort, self.stop = None, None
        if status == "interrupted" and metrics["status"] == "interrupted":
            assert stop.signum is not None
            raise Interrupted(f"interrupted by {stop.name} at iteration {self.iteration} of "
                              f"{o['niters']}; checkpoint saved, continue with: "
                              f"{metrics['resume']}", stop.signum, str(self.run_dir))
        return metrics

    def checkpoint_due(self) -> bool:
        """A periodic checkpoint after this step: every train.checkpoint_every iterations, or
        train.checkpoint_seconds after the last one (the ensemble's members too); none at the
        last iteration, whose checkpoint `finish` writes."""
        o = self.opts
        if self.iteration == o["niters"]:
            return False
        every, seconds = o["checkpoint_every"], float(o.get("checkpoint_seconds") or 0)
        return bool(every and self.iteration % every == 0) or bool(
            seconds and time.monotonic() - self.saved_at >= seconds)

    def row_missing(self) -> bool:
        """Whether the history lacks the row of the current iteration: a fresh run's start,
        or a run resumed from a stop that came during that evaluation."""
        rows = self.history.rows
        if self.iteration == 0:  # (resumed from iteration 0: that row is there already)
            return self.exp.evaluate_at_start and not rows
        due = self.iteration % self.opts["test_freq"] == 0 or self.iteration == self.opts["niters"]
        return due and (not rows or int(rows[-1]["iteration"]) < self.iteration)

    def evaluate_unless_stopped(self) -> None:
        """`record()`; an evaluation broken while a stop is pending (the signal may kill a
        compiler) is left to the resumed run, which makes it first (`row_missing`)."""
        try:
            self.record()
        except Exception as exc:
            if not (isinstance(exc, StepAborted) or self.stop) or isinstance(
                    exc, (SolverError, WriteError)):
                raise
            log.warning("%s: evaluation at iteration %d abandoned (%s: %s)", self.stop.name
                        if self.stop else "", self.iteration, type(exc).__name__, exc)

    def _progress_fields(self) -> dict[str, Any]:
        key, label = self.exp.progress_metric
        return {label: self.last_eval.get(key, math.nan), "nfe": self.exp.counter.nfe}

    def finish(self, status: str, reason: str | None, hint: str | None, start_wall: float,
               saved: bool = False) -> dict[str, Any]:
        """Checkpoint (unless `saved`: the caller has just written it), then the test of the
        final (or best) model, figures and metrics; metrics last, so `ok` means everything
        is there. A stopped or failed run records its status before the figures, which a
        diverged field can make slow."""
        try:
            if not saved:
                self.save_checkpoint()
        except WriteError as exc:
            return self.record_write_failure(str(exc), start_wall)
        if self.best is not None:
            checkpoint.load_modules(self.exp.modules(), self.best, "best state")
        test: dict[str, Any] | None = None
        if status != "failed":
            current = self.last_eval_iteration == self.iteration and (
                self.best is None or self.best_iteration == self.iteration)
            try:
                test = self.exp.test(dict(self.last_eval) if current else None)
            except (SolverError, StepAborted) as exc:
                if status == "ok":
                    status, reason = "failed", str(exc)
                    hint = getattr(exc, "hint", None)
        # Without a test (a failed run), the last evaluation says how far it got.
        try:
            if test is not None:
                self.exp.write_files(self.run_dir, test)
            shown = test if test is not None else dict(self.last_eval)
            metrics = run_metrics(self, status, reason, hint, shown, start_wall)
            if status != "ok":
                rundir.write_json(self.run_dir / rundir.METRICS, metrics)
        except WriteError as exc:
            return self.record_write_failure(str(exc), start_wall)
        if bool(self.cfg.plots.enabled):
            try:
                self.figures(test)
            except Exception as exc:  # a figure must never lose a trained model's metrics
                log.warning("figures failed: %s", exc)
                metrics["figures_error"] = str(exc)
        try:
            rundir.write_json(self.run_dir / rundir.METRICS, metrics)
        except WriteError as exc:
            return self.record_write_failure(str(exc), start_wall)
        self.trackers.finish()
        return metrics

    def figures(self, test: dict[str, Any] | None) -> None:
        exp = self.exp
        if self.history.rows:
            loss_figure(self.run_dir / "loss.png", self.history.rows,
                        f"{exp.command} {exp.name}", exp.loss_figure_columns, exp.citation)
        exp.figures(self.run_dir, self.history.rows, test)

    # -- checkpoints -----------------------------------------------------------------------
    def config_plain(self) -> dict[str, Any]:
        """The resolved config as plain containers (computed once: checkpoints reuse it)."""
        if self._cfg_plain is None:
            self._cfg_plain = OmegaConf.to_container(self.cfg, resolve=True)  # type: ignore
        return self._cfg_plain

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is."""
        return {
            "format": checkpoint.FORMAT, "command": self.exp.command,
            "iteration": self.iteration, "niters": self.opts["niters"],
            "modules": {k: m.state_dict() for k, m in self.exp.modules().items()},
            "best": self.best, "best_iteration": self.best_iteration,
            "best_score": self.best_score,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": {"torch": self.torch_rng_state(), "experiment": self.exp.rng_state()},
            "config": self.config_plain(),
            "counters": {"nfe_forward": self.nfe_forward, "nfe_backward": self.nfe_backward,
                         "train_seconds": self.train_seconds, "nfe": self.exp.counter.nfe},
            "last_loss": self.last_loss, "last_extras": dict(self.last_extras),
            "last_eval": dict(self.last_eval),
            "last_eval_iteration": self.last_eval_iteration,
            "history": [dict(r) for r in self.history.rows],
            "experiment": self.exp.extra_state(),
        }

    def torch_rng_state(self) -> torch.Tensor:
        """The state of torch's generator as this run sees it (an ensemble member: its own)."""
        own = self.exp.torch_rng
        return own.get_state() if own is not None else torch.get_rng_state()

    def save_checkpoint(self, state: dict[str, Any] | None = None) -> None:
        """Write checkpoint.pt of `state` (taken by the caller) or of the run now."""
        checkpoint.save(self.run_dir / rundir.CHECKPOINT,
                        self.state() if state is None else state)
        self.saved_at, self.saved_iteration = time.monotonic(), self.iteration

    def record_write_failure(self, reason: str, start_wall: float) -> dict[str, Any]:
        """After a failed write: no new checkpoint (the last one is consistent and intact),
        no test or figures (they write too); metrics.json records the failure where it still
        can be written, and names the command that continues from the last checkpoint."""
        metrics = run_metrics(self, "failed", reason, None, dict(self.last_eval), start_wall)
        # resume= continues from the checkpoint, or restarts a folder that has none
        metrics["resume"] = f"odecli {self.exp.command} resume={self.run_dir}"
        metrics["checkpoint_iteration"] = self.saved_iteration
        try:
            rundir.write_json(self.run_dir / rundir.METRICS, metrics)
        except WriteError as exc:
            metrics["unrecorded"] = str(exc)
            log.error("the failure could not be recorded: %s", exc)
        with contextlib.suppress(Exception):
            self.trackers.finish()
        return metrics

    def resume(self, path: Path) -> None:
        """Restore everything `state()` wrote; refuses a corrupt or incompatible one."""
        state = checkpoint.read(path)
        # a key the checkpoint lacks is taken at today's default (given_keys=()): the launch
        # layer has already refused a resume that sets one (odecli.launch.resume.check)
        checkpoint.check_compatible(state["config"], self.config_plain(), f"checkpoint {path}",
                                    given_keys=())
        checkpoint.load_modules(self.exp.modules(), state["modules"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
                if int(state.get("niters") or self.opts["niters"]) != self.opts["niters"]:
                    optim.stretch_schedule(self.optimizer, self.scheduler, self.opts)
            if self.exp.torch_rng is not None:  # an ensemble member's own
                self.exp.torch_rng.set_state(state["rng"]["torch"])
            else:
                torch.set_rng_state(state["rng"]["torch"])
            self.exp.set_rng_state(state["rng"]["experiment"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise OdecliError(f"checkpoint {path} cannot be restored: {exc}") from None
        c = state["counters"]
        self.iteration = int(state["iteration"])
        self.nfe_forward, self.nfe_backward = int(c["nfe_forward"]), int(c["nfe_backward"])
        self.train_seconds = float(c["train_seconds"])
        self.exp.counter.nfe = int(c["nfe"])
        self.last_loss = float(state["last_loss"])
        self.last_extras = dict(state.get("last_extras") or {})
        self.last_eval = dict(state["last_eval"])
        self.last_eval_iteration = int(state.get("last_eval_iteration", -1))
        self.best, self.best_iteration = state.get("best"), int(state.get("best_iteration", 0))
        self.best_score = float(state.get("best_score") or math.inf)
        self.history.rows = [dict(r) for r in state["history"]]
        self.history.flush()
        self.exp.load_extra_state(state.get("experiment") or {})
        self.saved_iteration = self.iteration
        log.info("resumed at iteration %d of %d", self.iteration, self.opts["niters"])


def train(experiment_cls: type[Experiment], cfg: DictConfig, run_dir: Path
          ) -> tuple[dict[str, Any], Experiment]:
    """Build the experiment, restore `resume=`'s checkpoint, train, write the run folder;
    returns the metrics and the experiment holding the reported model (the best state where
    one is kept). Raises RunFailed (exit 1) when the run failed, after its folder records
    why."""
    device_mod.quiet_warnings()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    engine = Engine(experiment_cls(cfg, run_dir), run_dir)
    if cfg.get("resume"):
        engine.resume(Path(run_dir) / rundir.CHECKPOINT)
    metrics = engine.run()
    if metrics["status"] != "ok":
        raise RunFailedWithMetrics(metrics)
    return metrics, engine.exp


def run(experiment_cls: type[Experiment], cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """`train()`'s metrics alone."""
    return train(experiment_cls, cfg, run_dir)[0]
