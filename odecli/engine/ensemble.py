"""Several runs trained in lockstep as one batched model (`hydra/launcher=ensemble`).

Each member is an ordinary `Engine` with its own experiment, optimiser, schedule, counters,
history, checkpoint and run folder; what is batched is the family's work (`batch.losses`,
`batch.evaluate`: one set of tensor operations for every member). Per step: the batch
computes every active member's loss, one backward pass gives each member the gradient of
its own loss (members share no parameters), and each member's optimiser steps. A member
whose solve or loss fails is finished as `failed: <reason>` and leaves the batch; the others
go on. SIGINT/SIGTERM stop every member after the step: each is checkpointed with status
`interrupted`, so `resume=` (or the sweep command again) continues them.

Timing: a member's `train_seconds` is the group's time per step (it shares the step).
Files: each member's history.csv and checkpoint are written as in a solo run (atomically,
fsync'd), but the members' writes run together in a few threads (`Writes`): one member's
fsync waits for the disk, and 32 of them one after another took seconds per evaluation.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import torch

from odecli.engine import progress, signals
from odecli.engine.loop import Engine
from odecli.engine.member_optim import optimizer_steps
from odecli.errors import Interrupted, SolverError, WriteError
from odecli.numerics.solve import StepAborted, check_finite

log = logging.getLogger("odecli.engine")
# Threads writing members' files at once: fsync waits on the disk, not the CPU.
WRITE_THREADS = 8


class Writes:
    """Members' file writes run together; each job's exception is returned, in order."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="odecli-write")

    def run(self, jobs: list[Callable[[], None]]) -> list[BaseException | None]:
        if len(jobs) <= 1:
            return [_attempt(job) for job in jobs]
        return [f.result() for f in [self.pool.submit(_attempt, job) for job in jobs]]

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _attempt(job: Callable[[], None]) -> BaseException | None:
    try:
        job()
    except BaseException as exc:  # handed back to the trainer's thread
        return exc
    return None


def _raise_first(errors: list[BaseException | None]) -> None:
    for exc in errors:
        if exc is not None:
            raise exc


class Batch(Protocol):
    """What a family's batched members provide (e.g. odecli.dynamics.ensemble). `losses`
    gives the loss of members `idx` at their step `iterations` (counted from 1, as
    `Experiment.loss` gets it) and, per member, (its solver failure or None, forward NFE,
    backward NFE), optionally with a fourth item: the step's extra history columns (what
    `Experiment.loss` returns beside the loss; none when absent)."""

    def losses(self, idx: list[int], iterations: list[int]
               ) -> tuple[torch.Tensor, list[tuple[Any, ...]]]: ...

    def evaluate(self, idx: list[int]) -> list[dict[str, float] | SolverError]: ...


class Members:
    """The lockstep loop over `engines` (index i of the batch is engines[i])."""

    def __init__(self, batch: Batch, engines: list[Engine], quiet: bool = False) -> None:
        self.batch, self.engines, self.quiet = batch, engines, quiet
        self.outcome: dict[int, tuple[str, str | None, str | None]] = {}
        self.writes = Writes()

    def _checkpoint(self, members: list[int]) -> list[BaseException | None]:
        """Checkpoint members together (each state taken here, in this thread)."""
        return self.writes.run([
            functools.partial(self.engines[i].save_checkpoint, self.engines[i].state())
            for i in members])

    def _fail(self, i: int, exc: SolverError) -> None:
        log.error("member %s failed at iteration %d: %s (%s)", self.engines[i].run_dir,
                  self.engines[i].iteration, exc, exc.hint)
        self.outcome[i] = ("failed", str(exc), exc.hint)

    def _record(self, due: list[int]) -> None:
        if not due:
            return
        recorded = []
        for i, ev in zip(due, self.batch.evaluate(due), strict=True):
            if isinstance(ev, SolverError):
                self._fail(i, ev)
            else:
                self.engines[i].history.defer = True
                self.engines[i].record(ev)
                recorded.append(self.engines[i].history)
        _raise_first(self.writes.run([h.flush for h in recorded]))

    def _step(self, active: list[int]) -> None:
        start = time.perf_counter()
        torch_state = torch.get_rng_state()
        saved = {i: (self.engines[i].exp.rng_state(), self.engines[i].torch_rng_state())
                 for i in active}
        for i in active:  # optimizer.zero_grad(set_to_none=True), without its wrappers
            for p in self.engines[i].params:
                p.grad = None
        try:
            per, results = self.batch.losses(active,
                                             [self.engines[i].iteration + 1 for i in active])
        except StepAborted:  # a stop signal and a step still running 5 s later
            for i, (exp_state, own) in saved.items():
                self.engines[i].exp.set_rng_state(exp_state)
                if self.engines[i].exp.torch_rng is not None:
                    self.engines[i].exp.torch_rng.set_state(own)
            torch.set_rng_state(torch_state)
            raise
        values = per.detach().tolist()  # one read for every member's loss and its check
        kept: list[tuple[int, int, float, int, int]] = []  # (member, its row in per, ...)
        extras: dict[int, dict[str, float]] = {}
        for j, (i, value, result) in enumerate(zip(active, values, results, strict=True)):
            error, fwd, bwd = result[:3]
            extras[i] = dict(result[3]) if len(result) > 3 else {}
            try:
                if error is not None:
                    raise error
                if not math.isfinite(value):
                    check_finite(per[j].detach(), "training loss")
            except SolverError as exc:
                self._fail(i, exc)
                continue
            kept.append((i, j, value, fwd, bwd))
        if kept:  # members share no parameters: each gets the gradient of its own loss
            rows = [j for _, j, *_ in kept]
            total = per.sum() if len(rows) == len(active) else per[rows].sum()
            total.backward()
        for i, *_ in kept:
            e = self.engines[i]
            if e.opts["grad_clip"] is not None:
                torch.nn.utils.clip_grad_norm_(e.params, e.opts["grad_clip"])
        optimizer_steps([self.engines[i].optimizer for i, *_ in kept])
        seconds = time.perf_counter() - start
        for i, _, value, fwd, bwd in kept:
            e = self.engines[i]
            if e.scheduler is not None:
                e.scheduler.step()
            e.exp.end_step()
            e.nfe_forward += fwd
            e.nfe_backward += bwd
            e.last_loss = value
            e.last_extras = extras[i]
            e.iteration += 1
            e.train_seconds += seconds

    def run(self) -> list[dict[str, Any]]:
        """Train every member to its train.niters; returns each member's metrics (raises
        nothing for a failed member: its metrics say `failed: ...`)."""
        engines = self.engines
        start_wall = time.perf_counter()
        todo = [i for i, e in enumerate(engines) if e.iteration < e.opts["niters"]]
        niters = max(e.opts["niters"] for e in engines)
        stop: signals.StopFlag
        with signals.stop_signals() as stop, progress.progress(
                niters, f"train: ensemble of {len(engines)}", self.quiet,
                start=min(e.iteration for e in engines)) as bar:
            for e in engines:
                e.exp.counter.abort = stop.overdue
                e.saved_at = time.monotonic()  # the time cadence counts from training's start
            active = [i for i in todo if i not in self.outcome]
            try:
                self._record([i for i in todo if engines[i].iteration == 0
                              and engines[i].exp.evaluate_at_start
                              and not engines[i].history.rows])
                active = [i for i in todo if i not in self.outcome]
                self._loop(active, stop, bar, niters)
            except StepAborted:
                log.warning("%s: a step of the ensemble did not finish within %.0f s; "
                            "abandoned", stop.name, signals.STEP_GRACE_SECONDS)
            active = [i for i in active if i not in self.outcome
                      and engines[i].iteration < engines[i].opts["niters"]]
            for i in active:
                if stop:
                    self.outcome[i] = ("interrupted", stop.name, None)
                    log.warning("%s at iteration %d: writing a checkpoint of %s", stop.name,
                                engines[i].iteration, engines[i].run_dir)
            metrics = []
            saved = self._checkpoint(list(range(len(engines))))  # finish's first write
            self.writes.close()
            for i, (e, exc) in enumerate(zip(engines, saved, strict=True)):
                e.history.defer = False
                status, reason, hint = self.outcome.get(i, ("ok", None, None))
                if isinstance(exc, WriteError):
                    metrics.append(e.record_write_failure(str(exc), start_wall))
                elif exc is not None:
                    raise exc
                else:
                    metrics.append(e.finish(status, reason, hint, start_wall, saved=True))
                e.exp.counter.abort = None
        self.signum = stop.signum
        return metrics

    def _loop(self, active: list[int], stop: signals.StopFlag, bar: Any, niters: int) -> None:
        """Step, evaluate and checkpoint the active members until done or stopped."""
        engines = self.engines
        while active and not stop:
            self._step(active)
            due = []
            for i in active:
                e = engines[i]
                if i in self.outcome:
                    continue
                last = e.iteration == e.opts["niters"]
                if e.iteration % e.opts["test_freq"] == 0 or last:
                    due.append(i)
            self._record(due)
            _raise_first(self._checkpoint([i for i in active if i not in self.outcome
                                           and engines[i].checkpoint_due()]))
            active = [i for i in active if i not in self.outcome
                      and engines[i].iteration < engines[i].opts["niters"]]
            done = [engines[i].iteration for i in active]
            bar.update(min(done) if done else niters, loss=_mean_loss(engines, active),
                       members=len(active))

    def interrupted(self, metrics: list[dict[str, Any]]) -> Interrupted | None:
        """The stop of the whole group, after every member has been checkpointed."""
        stopped = [m for m in metrics if m["status"] == "interrupted"]
        if not stopped or self.signum is None:
            return None
        name = stopped[0]["interrupted_by"]
        return Interrupted(f"interrupted by {name}: {len(stopped)} member(s) of the ensemble "
                           f"checkpointed", self.signum, str(self.engines[0].run_dir))


def own_torch_rng(exp: Any) -> None:
    """Give a member just built (and resumed) its own torch generator: a copy of the global
    one as its solo run would hold it now (seeded by `configure`, past the model's
    initialisation, or restored from its checkpoint), so the family's batched draws for it
    are its solo run's and its checkpoint saves that state. Call it right after each
    member's construction and resume, before the next member's."""
    gen = torch.Generator()
    gen.set_state(torch.get_rng_state())
    exp.torch_rng = gen


def _mean_loss(engines: list[Engine], active: list[int]) -> float:
    losses = [engines[i].last_loss for i in active]
    return sum(losses) / len(losses) if losses else math.nan
