"""`odecli spiral-vae` members trained as one batched model (`hydra/launcher=ensemble`).

Each member is an ordinary `SpiralVAE` (its own seed, spirals, batch generator, model, run
folder); this module only runs their models together. Per step every member draws its own
batch with its own generator (`sample_batch`, the solo run's draws) and its own
reparameterisation noise from its own torch generator (`Experiment.torch_rng`, the state its
solo run's global generator would have); the encoders (stacked GRU or RNN cells), the
latent solves (forward and backward from each window's anchor, `numerics.ensemble_rk`: each
member with its own step sizes, and with its solo solve's own horizon: the members' anchors
differ, so does how far each solve runs) and the decoders (stacked MLPs) are one set of
tensor operations for every member. The ELBO, its weights and the evaluation's scores are
each member's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from odecli.errors import SolverError
from odecli.latent.model import _LOG_2PI
from odecli.latent.stacked import Negated, StackedCell, StackedMLP, stack_linear
from odecli.numerics import ensemble_rk
from odecli.numerics.rk_step import tableau
from odecli.numerics.solve import SolverSpec, translate_failure

# What members of one batched group may differ in: everything else (data sizes and grid,
# model widths, batch size, solver...) fixes tensor shapes or the shared solve.
MEMBER_KEYS = ("seed", "resume", "quiet", "objective", "train.lr", "train.lr_min",
               "train.weight_decay", "train.grad_clip", "train.niters", "train.test_freq",
               "train.checkpoint_every", "train.checkpoint_seconds", "train.schedule",
               "train.optimizer", "train.kl_warmup", "train.partial_share",
               "train.partial_min", "data.noise_std", "data.obs_fraction",
               "data.radius_start", "data.radius_end", "model.obs_noise_std", "solver.rtol",
               "solver.atol", "solver.options.max_num_steps", "plots", "logger")
# One member's outcome of a step: its solver failure or None, forward NFE, backward NFE.
Outcome = tuple[SolverError | None, int, int]


class _Solved:
    """One batched latent path: outputs (T, M, B, latent), each member's error and NFE."""

    def __init__(self, out: torch.Tensor, errors: list[str | None], nfe: list[int],
                 accepted: list[int]) -> None:
        self.out, self.errors, self.nfe, self.accepted = out, errors, nfe, accepted


class SpiralMembers:
    """The batched loss and evaluation of several `SpiralVAE` members."""

    member_keys: ClassVar[tuple[str, ...]] = MEMBER_KEYS

    @staticmethod
    def unfit(cfg: DictConfig) -> str | None:
        """Why a job cannot join a batched group (it then runs alone), or None."""
        if cfg.model.encoder not in ("gru", "rnn"):
            return (f"model.encoder={cfg.model.encoder} (batched: the gru and rnn encoders; "
                    f"the ODE-RNN's hidden flow is not)")
        return ensemble_rk.unfit(SolverSpec.from_cfg(cfg.solver, cfg.gradient))

    def __init__(self, experiments: Sequence[Any]) -> None:
        self.exps = list(experiments)
        first = self.exps[0]
        self.spec = first.spec
        self.stages = len(tableau(self.spec.method).c)
        self._nets: dict[tuple[int, ...], dict[str, Any]] = {}

    # -- the stacked model -----------------------------------------------------------------
    def _model(self, idx: list[int]) -> dict[str, Any]:
        """The members' stacked layers, restacked from their parameters now."""
        key = tuple(idx)
        if key not in self._nets:
            models = [self.exps[i].model for i in idx]
            self._nets = {key: {
                "cell": StackedCell([m.encoder.cell for m in models]),
                "field": StackedMLP([m.func.func.net for m in models]),
                "decoder": StackedMLP([m.decoder for m in models])}}
        nets = self._nets[key]
        for name in ("cell", "field", "decoder"):
            nets[name].restack()
        nets["out"] = stack_linear([self.exps[i].model.encoder.out for i in idx])
        return nets

    def _encode(self, nets: dict[str, Any], x: torch.Tensor, mask: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent.model.Encoder for every member: x (M, B, T, D), mask (M, B, T)."""
        m_count, batch, steps, _ = x.shape
        m = mask.unsqueeze(-1).to(x.dtype)
        dts = torch.diff(t, prepend=t[:1])
        inputs = torch.cat([x * m, m, dts.view(1, 1, steps, 1).expand(m_count, batch, steps, 1)],
                           dim=-1)
        cell = nets["cell"]
        # every step's input gates in one product; unbind: one backward for all the steps
        # (indexing each step would fill a zero tensor the size of all of them per step)
        gates = cell.project(inputs).unbind(2)
        h = x.new_zeros(m_count, batch, self.exps[0].model.encoder.hidden)
        for i in range(steps - 1, -1, -1):
            h = cell.step(gates[i], h)
        w, b = nets["out"]
        mu, logvar = torch.baddbmm(b, h, w).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 5.0)

    def _path(self, idx: list[int], field: Any, z0: torch.Tensor, times: list[float],
              ends: list[int]) -> _Solved:
        """Each member's solve from z0 (M, B, latent) over times[:ends[m]] (a member with
        fewer than two times is not solved, as in its solo run)."""
        specs = [self.exps[i].spec for i in idx]
        m_count = len(idx)
        solved = [j for j in range(m_count) if ends[j] >= 2]
        errors: list[str | None] = [None] * m_count
        nfe, accepted = [0] * m_count, [0] * m_count
        if not solved:
            return _Solved(z0.unsqueeze(0), errors, nfe, accepted)
        n_out = max(ends[j] for j in solved)
        rows = None if len(solved) == m_count else torch.as_tensor(solved, device=z0.device)
        func = field if rows is None else _Subset(field, rows)
        budgets = [int((specs[j].torchdiffeq_options() or {}).get("max_num_steps", 2**31 - 1))
                   for j in solved]
        res = ensemble_rk.solve_members(
            func, z0 if rows is None else z0.index_select(0, rows), times[:n_out],
            self.spec.method, [specs[j].rtol for j in solved], [specs[j].atol for j in solved],
            self.spec.torchdiffeq_options(), budgets, self.exps[idx[0]].counter.abort,
            [ends[j] for j in solved])
        first_guess = self.spec.options.get("first_step") is None
        for k, j in enumerate(solved):
            errors[j] = res.errors[k]
            nfe[j] = res.nfe(k, self.stages, first_guess)
            accepted[j] = int(res.accepted[k])
        out = res.out
        if rows is not None:  # the unsolved members: z0, then nothing they read
            full = out.new_zeros(n_out, m_count, *z0.shape[1:])
            full[0] = z0
            out = full.index_copy(1, rows, out)
        return _Solved(out, errors, nfe, accepted)

    def _decode(self, idx: list[int], nets: dict[str, Any], z0: torch.Tensor,
                dt: torch.Tensor, anchor: torch.Tensor, n_points: int
                ) -> tuple[torch.Tensor, list[list[_Solved]]]:
        """LatentODEVAE.decode_grid for every member: anchor (M, B); returns (M, B, n_points,
        obs) and the two solves."""
        lo = anchor.min(dim=1).values.tolist()
        hi = anchor.max(dim=1).values.tolist()
        ends_f = [n_points - int(v) for v in lo]
        ends_b = [int(v) + 1 for v in hi]
        steps = torch.arange(max(max(ends_f), max(ends_b)), device=z0.device, dtype=z0.dtype)
        fwd_t = (steps[:max(ends_f)] * dt).detach().to(torch.float64).tolist()
        bwd_t = [-v for v in (steps[:max(ends_b)] * -dt).detach().to(torch.float64).tolist()]
        fwd = self._path(idx, nets["field"], z0, fwd_t, ends_f)
        bwd = self._path(idx, Negated(nets["field"]), z0, bwd_t, ends_b)
        back = bwd.out.shape[0] - 1
        z = torch.cat([bwd.out.flip(0), fwd.out[1:]], dim=0)  # offsets -back .. len(fwd)-1
        k = torch.arange(n_points, device=z0.device).view(-1, 1, 1)
        rows = k - anchor.to(k).unsqueeze(0) + back                     # (n_points, M, B)
        z = z.gather(0, rows.unsqueeze(-1).expand(-1, -1, -1, z.shape[-1]))
        m_count, batch = anchor.shape
        z = z.permute(1, 2, 0, 3).reshape(m_count, batch * n_points, -1)
        out = nets["decoder"](z)
        return out.view(m_count, batch, n_points, -1), [[fwd, bwd]]

    def _outcomes(self, idx: list[int], solves: list[list[_Solved]], backward: bool
                  ) -> list[Outcome]:
        """Each member's first solver failure and the NFE its solo run would count (and
        add to its counter)."""
        out: list[Outcome] = []
        for j, i in enumerate(idx):
            fwd = bwd = 0
            error = None
            for pair in solves:
                for s in pair:
                    fwd += s.nfe[j]
                    if error is None and s.errors[j] is not None:
                        error = translate_failure(RuntimeError(s.errors[j]))
                    if backward and s.nfe[j]:
                        bwd += self.stages * s.accepted[j] + 1
            if error is not None:
                bwd = 0
            self.exps[i].counter.nfe += fwd + bwd
            out.append((error, fwd, bwd))
        return out

    # -- what engine.ensemble.Members calls ------------------------------------------------
    def losses(self, idx: list[int], iterations: list[int]
               ) -> tuple[torch.Tensor, list[tuple[Any, ...]]]:
        """Every member's negative ELBO on its own batch at its step `iterations` (the KL
        warm-up's weight), (len(idx),), and per member its solver failure, NFE and the
        step's history extras (loglik, kl)."""
        exps = [self.exps[i] for i in idx]
        first = exps[0]
        batches = [e.sample_batch() for e in exps]
        x = torch.stack([b.x for b in batches])
        mask = torch.stack([b.mask for b in batches])
        target = torch.stack([b.target for b in batches])
        target_mask = torch.stack([b.target_mask for b in batches])
        anchor = torch.stack([b.anchor for b in batches])
        nets = self._model(idx)
        mu, logvar = self._encode(nets, x, mask, first.t)
        eps = torch.stack([torch.randn(mu.shape[1:], dtype=mu.dtype, generator=e.torch_rng)
                           for e in exps]).to(mu.device)
        z0 = mu + eps * torch.exp(0.5 * logvar)
        x_hat, solves = self._decode(idx, nets, z0, first.t[1] - first.t[0], anchor,
                                     target.shape[2])
        weights = [min(1.0, it / e.kl_warmup) if e.kl_warmup else 1.0
                   for it, e in zip(iterations, exps, strict=True)]
        loglik, kl = _elbo_terms(target, x_hat, target_mask, mu, logvar,
                                 [e.noise_std for e in exps])
        w = torch.as_tensor(weights, dtype=kl.dtype, device=kl.device).view(-1, 1)
        per = -(loglik - w * kl).mean(dim=1)
        ll, kk = loglik.detach().mean(dim=1).tolist(), kl.detach().mean(dim=1).tolist()
        outcomes = self._outcomes(idx, solves, self.spec.gradient == "checkpoint")
        return per, [(*o, {"loglik": ll[j], "kl": kk[j]}) for j, o in enumerate(outcomes)]

    @torch.no_grad()
    def evaluate(self, idx: list[int]) -> list[dict[str, float] | SolverError]:
        """Each member's evaluation (SpiralVAE.evaluate) from batched posterior-mean
        predictions of its validation spirals, in the solo run's chunks."""
        exps = [self.exps[i] for i in idx]
        preds = self.full_grid(idx, [e.data.val for e in exps])
        out: list[dict[str, float] | SolverError] = []
        for e, pred in zip(exps, preds, strict=True):
            out.append(pred if isinstance(pred, SolverError) else e.evaluation(pred))
        return out

    @torch.no_grad()
    def full_grid(self, idx: list[int], rows: list[np.ndarray], chunk: int = 512
                  ) -> list[np.ndarray | SolverError]:
        """SpiralVAE.full_grid for every member (its own rows, all of one length)."""
        exps = [self.exps[i] for i in idx]
        first = exps[0]
        nets = self._model(idx)
        parts: list[list[np.ndarray]] = [[] for _ in idx]
        failed: list[SolverError | None] = [None] * len(idx)
        for start in range(0, len(rows[0]), chunk):
            r = [rr[start:start + chunk] for rr in rows]
            x = torch.stack([e.tensor(e.xw[rr]) for e, rr in zip(exps, r, strict=True)])
            mask = torch.stack([e.mask_tensor(e.mw[rr]) for e, rr in zip(exps, r, strict=True)])
            anchor = torch.stack([torch.as_tensor(e.anchor[rr], device=first.rt.device)
                                  for e, rr in zip(exps, r, strict=True)])
            mu, _ = self._encode(nets, x, mask, first.t)
            pred, solves = self._decode(idx, nets, mu, first.t[1] - first.t[0], anchor,
                                        first.n_points)
            outcomes = self._outcomes(idx, solves, backward=False)
            values = pred.cpu().numpy().astype(np.float64)
            for j, (error, _, _) in enumerate(outcomes):
                if failed[j] is None and error is not None:
                    failed[j] = error
                parts[j].append(values[j])
        return [failed[j] if failed[j] is not None else np.concatenate(parts[j], axis=0)
                for j in range(len(idx))]


class _Subset:
    """A stacked field restricted to some members, still able to `select` among them."""

    def __init__(self, field: Any, rows: torch.Tensor) -> None:
        self.field, self.rows = field, rows
        self.call = field.select(rows)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self.call(y)

    def select(self, rows: torch.Tensor) -> Any:
        return self.field.select(self.rows.index_select(0, rows))


def _elbo_terms(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
                logvar: torch.Tensor, noise_std: list[float]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """latent.model.elbo's log-likelihood and KL per member and trajectory, (M, B) each,
    with each member's own likelihood noise."""
    m = mask.unsqueeze(-1).to(x.dtype)
    var = torch.as_tensor([s ** 2 for s in noise_std], dtype=x.dtype, device=x.device)
    log_var = torch.as_tensor([math.log(s ** 2) for s in noise_std], dtype=x.dtype,
                              device=x.device)
    view = (-1, 1, 1, 1)
    point = -0.5 * ((x - x_hat) ** 2 / var.view(view) + log_var.view(view) + _LOG_2PI)
    loglik = (point * m).sum(dim=(2, 3))
    kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1.0).sum(dim=-1)
    return loglik, kl
