"""`odecli train` members trained as one batched model (`hydra/launcher=ensemble`).

Each member is an ordinary `DynamicsExperiment` (its own seed, observations, window
generator, field, run folder); this module only evaluates their fields together: the
weights of every member's `ODEField` are stacked along a leading member dimension each step
(`torch.stack` of the members' own parameters, so each member's optimiser sees the gradient
of its own loss), and one `numerics.ensemble_rk` solve integrates every member's windows
with its own step sizes. Window sampling, losses and metrics are the members' own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar

import torch
from omegaconf import DictConfig

from odecli.dynamics import data as data_mod
from odecli.dynamics import systems
from odecli.dynamics.experiment import DynamicsExperiment, trajectory_errors
from odecli.dynamics.models import ODEField
from odecli.errors import SolverError
from odecli.numerics import ensemble_rk
from odecli.numerics.rk_step import tableau
from odecli.numerics.solve import SolverSpec, check_finite, translate_failure

# What members of one batched group may differ in: everything else (system, model, batch
# sizes, solver, data grid...) fixes tensor shapes or the shared solve, and must be equal.
MEMBER_KEYS = ("seed", "resume", "quiet", "objective", "train.lr", "train.lr_min",
               "train.weight_decay", "train.grad_clip", "train.niters", "train.test_freq",
               "train.checkpoint_every", "train.schedule", "train.optimizer", "data.noise_std",
               "solver.rtol", "solver.atol", "solver.options.max_num_steps", "plots",
               "logger")


class StackedField:
    """Every member's `ODEField` evaluated at once: y (M, B, state) -> (M, B, state).

    `restack()` builds the stacked weights from the members' own parameters (a
    differentiable `torch.stack`), once per training step or evaluation. The field's input
    normalisation and output scale are folded into the first and last layer's stacked
    weights there (y @ (W / std) + (b - mean / std @ W), and W * scale, b * scale), so each
    of the solve's many evaluations runs only the layers; the members' parameters and their
    gradients are the solo field's (the fold is in the graph), the numbers equal to rounding.
    """

    def __init__(self, fields: list[ODEField]) -> None:
        self.fields = fields
        first = fields[0]
        self.power, self.activation = first.input_power, first._activation
        with torch.no_grad():
            self.in_mean = torch.stack([f.in_mean for f in fields]).unsqueeze(1)
            self.in_std = torch.stack([f.in_std for f in fields]).unsqueeze(1)
            self.out_scale = torch.stack([f.out_scale for f in fields]).unsqueeze(1)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def restack(self) -> None:
        n = len(self.fields[0]._linears)
        self.layers = []
        for i in range(n):
            w = torch.stack([f._linears[i].weight for f in self.fields]).transpose(1, 2)
            b = torch.stack([f._linears[i].bias for f in self.fields]).unsqueeze(1)
            if i == 0:  # (y - mean) / std, then this layer
                b = b - torch.bmm(self.in_mean / self.in_std, w)
                w = w / self.in_std.transpose(1, 2)
            if i == n - 1:  # this layer, then * out_scale
                w, b = w * self.out_scale, b * self.out_scale
            self.layers.append((w, b))

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return _layers(self.layers, self.power, self.activation, y)

    def select(self, rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The field of the members `rows` alone (the solver steps only unfinished ones)."""
        layers = [(w.index_select(0, rows), b.index_select(0, rows)) for w, b in self.layers]
        return functools.partial(_layers, layers, self.power, self.activation)


def _layers(layers: list[tuple[torch.Tensor, torch.Tensor]], power: float,
            activation: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor
            ) -> torch.Tensor:
    h = y**power if power != 1 else y
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        h = torch.baddbmm(b, h, w)
        if i < last:
            h = activation(h)
    return h


class DynamicsMembers:
    """The batched loss and evaluation of several `DynamicsExperiment` members."""

    member_keys: ClassVar[tuple[str, ...]] = MEMBER_KEYS

    @staticmethod
    def unfit(cfg: DictConfig) -> str | None:
        """Why a job cannot join a batched group (it then runs alone), or None."""
        if cfg.system.get("name") in systems.FILE_SYSTEMS:
            return "a data-file system"
        model = cfg.model
        if model.get("known", {}).get("rhs") is not None:
            return "model.known (a UDE)"
        if bool(model.time_dependent):
            return "a time-dependent field"
        if int(cfg.train.get("final_iters", 0)):
            return "train.final_iters (a final phase on longer windows)"
        if float(cfg.data.observe_fraction) < 1:
            return "data.observe_fraction < 1 (each member's own time grid)"
        return ensemble_rk.unfit(SolverSpec.from_cfg(cfg.solver, cfg.gradient))

    def __init__(self, experiments: list[DynamicsExperiment]) -> None:
        self.exps = experiments
        first = experiments[0]
        self.spec = first.spec
        self.stages = len(tableau(self.spec.method).c)
        self._fields: dict[tuple[int, ...], StackedField] = {}
        self._obs: dict[tuple[int, ...], torch.Tensor] = {}

    def _field(self, idx: list[int]) -> StackedField:
        key = tuple(idx)
        if key not in self._fields:
            self._fields = {key: StackedField([self.exps[i].field for i in idx])}
        return self._fields[key]

    def _solve(self, idx: list[int], y0: torch.Tensor, times: list[float]
               ) -> ensemble_rk.MemberSolve:
        field = self._field(idx)
        field.restack()
        specs = [self.exps[i].spec for i in idx]
        budgets = [int((s.torchdiffeq_options() or {}).get("max_num_steps", 2**31 - 1))
                   for s in specs]
        return ensemble_rk.solve_members(field, y0, times, self.spec.method,
                                         [s.rtol for s in specs], [s.atol for s in specs],
                                         self.spec.torchdiffeq_options(), budgets,
                                         self.exps[idx[0]].counter.abort)

    def _windows(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every member's training windows, as `data.sample` draws them from the member's
        own generator (the same draws), gathered for all members at once: y0 (M, B, dim),
        the window times (T,), the targets (T, M, B, dim)."""
        exps = [self.exps[i] for i in idx]
        o = exps[0].opts
        size, window = o["batch_size"], o["batch_time"]
        n = len(exps[0].obs.t)
        starts = torch.stack([data_mod.draw_starts(n, size, window, e.gen, e.window_weights)
                              for e in exps])                         # (M, B)
        key = tuple(idx)
        if key not in self._obs:
            self._obs = {key: torch.stack([e.obs.y for e in exps])}   # (M, n, dim)
        obs_y, obs_t = self._obs[key], exps[0].obs.t
        starts = starts.to(obs_y.device)
        members = torch.arange(len(idx), device=obs_y.device)
        steps = torch.arange(window, device=obs_y.device)
        rows = starts.unsqueeze(0) + steps.view(-1, 1, 1)             # (T, M, B)
        target = obs_y[members.view(1, -1, 1), rows]                  # (T, M, B, dim)
        return obs_y[members.view(-1, 1), starts], obs_t[:window] - obs_t[0], target

    def losses(self, idx: list[int], iterations: list[int] | None = None
               ) -> tuple[torch.Tensor, list[tuple[SolverError | None, int, int]]]:
        """Every member's training loss on its own windows, (len(idx),), and per member its
        solver failure (its loss then means nothing) with the forward and backward NFE its
        solo run would count. (The loss does not depend on the iteration.)"""
        exps = [self.exps[i] for i in idx]
        o = exps[0].opts
        y0, t, target = self._windows(idx)
        res = self._solve(idx, exps[0]._augment(y0), t.detach().to(torch.float64).tolist())
        dim = exps[0].system.dim
        diff = res.out[..., :dim] - target
        per = (diff.abs() if o["loss"] == "l1" else diff.pow(2)).mean(dim=(0, 2, 3))
        backward = self.spec.gradient == "checkpoint"
        first_guess = self.spec.options.get("first_step") is None
        out: list[tuple[SolverError | None, int, int]] = []
        for j, e in enumerate(exps):
            fwd = res.nfe(j, self.stages, first_guess)
            e.counter.nfe += fwd
            if res.errors[j] is not None:
                out.append((translate_failure(RuntimeError(res.errors[j])), fwd, 0))
                continue
            bwd = self.stages * int(res.accepted[j]) + 1 if backward else 0
            e.counter.nfe += bwd
            out.append((None, fwd, bwd))
        return per, out

    @torch.no_grad()
    def evaluate(self, idx: list[int]) -> list[dict[str, float] | SolverError]:
        """Each member's evaluation (DynamicsExperiment.evaluate) from one batched rollout."""
        exps = [self.exps[i] for i in idx]
        y0 = torch.stack([e._augment(e.truth[0].unsqueeze(0)) for e in exps])
        times = exps[0].t_full.detach().to(torch.float64).tolist()
        res = self._solve(idx, y0, times)
        dim = exps[0].system.dim
        out: list[dict[str, float] | SolverError] = []
        for j, e in enumerate(exps):
            nfe = res.nfe(j, self.stages, self.spec.options.get("first_step") is None)
            e.counter.nfe += nfe
            if res.errors[j] is not None:
                out.append(translate_failure(RuntimeError(res.errors[j])))
                continue
            pred = res.out[:, j, 0, :dim]
            try:
                check_finite(pred, "learned trajectory")
            except SolverError as exc:
                out.append(exc)
                continue
            e._last_pred = pred
            out.append(trajectory_errors(pred, e.truth, e.n_train, e.scale, nfe))
        return out

