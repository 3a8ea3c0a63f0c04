"""Latent-ODE VAE (Chen et al. 2018, sec. 5; Rubanova et al. 2019) shared by `spiral-vae` and
`ecg-vae`.

One model, one ELBO and one training loop serve both commands, so the spiral and the ECG
experiments differ only in their data and their held-out tasks. Observations live on a shared
time grid with a per-trajectory mask: irregular sampling, gaps and the observed part of an
extrapolation task are all just masks. For ECG beats (aligned windows) the latent initial
state sits at the grid's first time and the latent ODE is solved forward over the whole grid.
For spirals, whose observed windows sit anywhere on the grid, the encoder reads each window on
its own clock, the latent state is placed in the middle of the observed stretch, and the
autonomous latent ODE is solved forward and backward from there (`forward_anchored`).
"""

from __future__ import annotations

import copy
import io
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odecli.engine import rundir as runs
from odecli.errors import ConfigError, RunFailed, SolverError
from odecli.numerics import device as device_mod
from odecli.numerics.solve import CountingField, SolverSpec, check_finite, solve

ENCODERS = ("rnn", "gru", "odernn")
ECG_TASKS = ("reconstruction", "gap", "right", "left")
_LOG_2PI = math.log(2.0 * math.pi)


# ============================================================================ model

def _mlp(n_in: int, width: int, n_out: int, layers: int, act: type[nn.Module]) -> nn.Sequential:
    mods: list[nn.Module] = []
    size = n_in
    for _ in range(max(layers, 1)):
        mods += [nn.Linear(size, width), act()]
        size = width
    mods.append(nn.Linear(size, n_out))
    return nn.Sequential(*mods)


class ODEFunc(nn.Module):
    """Vector field dz/dt = f(z), or f(t, z) with `time_input`: latent dynamics, ODE-RNN flow.

    Aligned windows (ECG beats cut around the R-peak) share a clock; giving the field the time
    lets it place the sharp QRS complex without first learning a clock inside the state.
    """

    def __init__(self, dim: int, width: int, layers: int = 2, time_input: bool = False) -> None:
        super().__init__()
        self.time_input = time_input
        self.net = _mlp(dim + int(time_input), width, dim, layers, nn.ELU)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.time_input:
            z = torch.cat([z, t.to(z).expand(*z.shape[:-1], 1)], dim=-1)
        return self.net(z)


class Encoder(nn.Module):
    """Runs backwards over the grid and returns q(z0) = N(mu, exp(logvar)) at the first time.

    `rnn`/`gru` step through every grid point with (masked value, mask, time step) as input,
    so they see how far away the observations are. `odernn` (Rubanova et al. 2019) lets the
    hidden state flow by an ODE across each time gap and updates it only at observed points,
    which is what makes uneven gaps cheap to represent.
    """

    def __init__(self, kind: str, obs_dim: int, hidden: int, latent_dim: int,
                 ode_spec: SolverSpec | None = None, ode_width: int = 32) -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise ConfigError(
                f"unknown model.encoder '{kind}'; choose one of: {', '.join(ENCODERS)}")
        self.kind = kind
        self.hidden = hidden
        n_in = obs_dim + 2  # masked values, mask, time step
        if kind == "rnn":
            self.cell: nn.Module = nn.RNNCell(n_in, hidden)
        else:
            self.cell = nn.GRUCell(n_in, hidden)
        self.flow = ODEFunc(hidden, ode_width, 1) if kind == "odernn" else None
        self.ode_spec = ode_spec or SolverSpec(method="euler", gradient="direct")
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, steps, _ = x.shape
        h = x.new_zeros(batch, self.hidden)
        m = mask.unsqueeze(-1).to(x.dtype)
        dts = torch.diff(t, prepend=t[:1])
        for i in range(steps - 1, -1, -1):
            if self.flow is not None and i < steps - 1:
                h = solve(self.flow, h, torch.stack([t[i + 1], t[i]]), self.ode_spec)[-1]
            step_in = torch.cat([x[:, i] * m[:, i], m[:, i],
                                 dts[i].expand(batch, 1)], dim=-1)
            new = self.cell(step_in, h)
            h = m[:, i] * new + (1 - m[:, i]) * h if self.flow is not None else new
        mu, logvar = self.out(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 5.0)


def _noise(like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the CPU generator, so a seed gives the same run on CPU
    and CUDA (randn_like on a GPU would use the GPU's own generator)."""
    return torch.randn(like.shape, dtype=like.dtype).to(like.device)


class LatentODEVAE(nn.Module):
    """Encoder -> z0 (reparameterised) -> latent ODE over the grid -> decoder."""

    def __init__(self, obs_dim: int, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        latent = _positive_int(cfg, "latent_dim", 4)
        enc_spec = SolverSpec.from_cfg(
            {"method": str(cfg.get("odernn_method", "euler"))}, {"name": "direct"})
        self.encoder = Encoder(str(cfg.get("encoder", "gru")), obs_dim,
                               _positive_int(cfg, "encoder_width", 32), latent, enc_spec,
                               _positive_int(cfg, "odernn_width", 32))
        self.func = CountingField(ODEFunc(latent, _positive_int(cfg, "ode_width", 32),
                                          _positive_int(cfg, "ode_layers", 2),
                                          bool(cfg.get("time_input", False))))
        self.decoder = _mlp(latent, _positive_int(cfg, "decoder_width", 32), obs_dim,
                            _positive_int(cfg, "decoder_layers", 1), nn.ReLU)
        self.latent_dim = latent

    def encode(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, mask, t)

    def decode(self, z0: torch.Tensor, t: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        """Solve the latent ODE from t[0] over t and map every state back: (B, T, obs)."""
        z = solve(self.func, z0, t, spec)  # (T, B, latent)
        return self.decoder(z).transpose(0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor, spec: SolverSpec,
                sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, mask, t)
        z0 = mu + _noise(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode(z0, t, spec), mu, logvar


    def forward_anchored(self, x: torch.Tensor, mask: torch.Tensor, tau: torch.Tensor,
                         anchor: torch.Tensor, n_points: int, spec: SolverSpec,
                         sample: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode windows read on their own clocks; decode a whole uniform grid.

        `x`/`mask` hold each sample's observations on the relative grid `tau` (uniform step
        dt, the output grid's step); the latent state z0 is read as the state at output grid
        index `anchor[i]`. Returns (B, n_points, obs) predictions, mu and logvar.
        """
        mu, logvar = self.encode(x, mask, tau)
        z0 = mu + _noise(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode_grid(z0, tau[1] - tau[0], anchor, n_points, spec), mu, logvar

    def decode_grid(self, z0: torch.Tensor, dt: torch.Tensor, anchor: torch.Tensor,
                    n_points: int, spec: SolverSpec) -> torch.Tensor:
        """Solve the autonomous latent ODE forward and backward in time from each z0.

        z0[i] is the state at grid index anchor[i]. One solve each way covers the lattice of
        offsets k * dt every sample needs; grid point k of sample i reads offset
        k - anchor[i]. Returns (B, n_points, obs).
        """
        if self.func.func.time_input:
            raise ConfigError("anchored windows need an autonomous latent field "
                              "(model.time_input=false)")
        lo, hi = int(anchor.min()), int(anchor.max())
        steps = torch.arange(max(n_points - lo, hi + 1), device=z0.device, dtype=z0.dtype)
        fwd = self._path(z0, steps[:n_points - lo] * dt, spec)  # offsets 0 .. n-1-lo
        bwd = self._path(z0, steps[:hi + 1] * -dt, spec)  # offsets 0 .. -hi
        z = torch.cat([bwd.flip(0), fwd[1:]], dim=0)  # offsets -hi .. n-1-lo
        k = torch.arange(n_points, device=z0.device)[:, None]
        rows = k - anchor.to(k)[None, :] + hi  # (n_points, B) rows of z
        z = z.gather(0, rows[..., None].expand(-1, -1, z.shape[-1]))
        return self.decoder(z).transpose(0, 1)

    def _path(self, z0: torch.Tensor, t: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        if len(t) < 2:
            return z0[None]
        return solve(self.func, z0, t, spec)


@dataclass
class Elbo:
    elbo: torch.Tensor  # mean over the batch of (log-likelihood - KL)
    loglik: torch.Tensor
    kl: torch.Tensor


def elbo(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
         logvar: torch.Tensor, noise_std: float, kl_weight: float = 1.0) -> Elbo:
    """Evidence lower bound with a Gaussian likelihood of fixed noise and an N(0, I) prior.

    log p(x|z) sums log N(x; x_hat, noise_std^2) over the masked points and both channels;
    KL(N(mu, exp(logvar)) || N(0, I)) is analytic. Both are per trajectory, then averaged.
    """
    m = mask.unsqueeze(-1).to(x.dtype)
    var = noise_std ** 2
    point = -0.5 * ((x - x_hat) ** 2 / var + math.log(var) + _LOG_2PI)
    loglik = (point * m).sum(dim=(1, 2))
    kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1.0).sum(dim=-1)
    return Elbo(elbo=(loglik - kl_weight * kl).mean(), loglik=loglik.mean(), kl=kl.mean())


# ============================================================================ masks

def random_subset(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Observe an irregular random subset of n points (at least two)."""
    k = max(2, int(round(n * fraction)))
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=min(k, n), replace=False)] = True
    return mask


def gap_mask(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Everything observed except one contiguous stretch inside the window."""
    length = min(max(1, int(round(n * fraction))), n - 2)
    start = int(rng.integers(1, n - length))
    mask = np.ones(n, dtype=bool)
    mask[start:start + length] = False
    return mask


def edge_mask(n: int, fraction: float, side: str) -> np.ndarray:
    """Observe the first (side='right': predict to the right) or last part of the window."""
    k = min(max(2, int(round(n * fraction))), n - 1)
    mask = np.zeros(n, dtype=bool)
    if side == "right":
        mask[:k] = True
    else:
        mask[n - k:] = True
    return mask


# ============================================================================ spirals

@dataclass
class Spirals:
    t: np.ndarray  # (T,)
    truth: np.ndarray  # (N, T, 2)
    obs: np.ndarray  # (N, T, 2) noisy values (meaningful where mask)
    mask: np.ndarray  # (N, T)
    span: np.ndarray  # (N, 2) first and one-past-last index of the observed window
    train: np.ndarray
    val: np.ndarray  # picks the best iteration, so the test spirals stay unseen
    test: np.ndarray


def make_spirals(data: Mapping[str, Any], seed: int) -> Spirals:
    """Noisy 2-D Archimedean spirals turning either way, seen on an irregular window.

    Each spiral has its own direction, phase and growth; its observed span is a random window
    of the grid, sampled at a random subset of points. Points outside the span are the
    forward and backward extrapolation targets.
    """
    rng = np.random.default_rng(seed)
    n = _positive_int(data, "n_spirals", 300)
    n_points = _positive_int(data, "n_points", 100)
    t_max = float(data.get("t_max", 4 * math.pi))
    window = float(data.get("window", 0.4))
    fraction = float(data.get("obs_fraction", 0.5))
    noise = float(data.get("noise_std", 0.05))
    test_fraction = float(data.get("test_fraction", 0.25))
    if not 0 < window <= 1 or not 0 < fraction <= 1 or not 0 < test_fraction < 1:
        raise ConfigError("data.window, data.obs_fraction and data.test_fraction must lie in "
                          "(0, 1]")
    t = np.linspace(0.0, t_max, n_points)
    direction = rng.choice([-1.0, 1.0], size=n)
    phase = rng.uniform(0, 2 * math.pi, size=n)
    r0 = rng.uniform(*_range(data, "radius_start", (0.2, 0.4)), size=n)
    r1 = rng.uniform(*_range(data, "radius_end", (0.8, 1.0)), size=n)
    radius = r0[:, None] + (r1 - r0)[:, None] * (t / t_max)[None, :]
    angle = direction[:, None] * t[None, :] + phase[:, None]
    truth = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    obs = truth + noise * rng.standard_normal(truth.shape)
    width = max(3, int(round(window * n_points)))
    starts = rng.integers(0, n_points - width + 1, size=n)
    mask = np.zeros((n, n_points), dtype=bool)
    for i, s in enumerate(starts):
        mask[i, s:s + width] = random_subset(width, fraction, rng)
    span = np.stack([starts, starts + width], axis=1)
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * float(data.get("val_fraction", 0.125)))))
    if n - n_test - n_val < 1:
        raise ConfigError("data.val_fraction + data.test_fraction leave no training spirals")
    return Spirals(t=t, truth=truth, obs=obs, mask=mask, span=span,
                   train=np.arange(n - n_test - n_val),
                   val=np.arange(n - n_test - n_val, n - n_test), test=np.arange(n - n_test, n))


def anchored_windows(obs: np.ndarray, mask: np.ndarray, width: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each trajectory's observations into a window that starts at its first observation.

    Returns (values (N, width, D), mask (N, width), anchor (N,)): column j of row i is grid
    point first[i] + j (columns past the grid's end are unobserved), and anchor[i] is the grid
    index halfway between the first and last observation, where the latent state is placed.
    The encoder so never has to infer a state far from what it sees, and forward and backward
    predictions are integrated over the same horizons (anchored at the first observation,
    forward predictions ran across the whole window and then beyond it, and drifted).
    """
    n = mask.shape[1]
    first = np.asarray(mask, dtype=bool).argmax(axis=1)
    cols = first[:, None] + np.arange(width)[None, :]
    inside = cols < n
    cols = np.minimum(cols, n - 1)
    rows = np.arange(len(mask))[:, None]
    m = np.asarray(mask, dtype=bool)[rows, cols] & inside
    return np.where(m[..., None], obs[rows, cols], 0.0), m, first + _middle(m)


# ============================================================================ training loop

@dataclass
class Batch:
    x: torch.Tensor  # encoder input (B, T, D)
    mask: torch.Tensor  # which inputs the encoder sees (B, T)
    target: torch.Tensor  # what the likelihood scores (B, T, D)
    target_mask: torch.Tensor  # where it scores it (B, T)
    anchor: torch.Tensor | None = None  # set (spirals): z0 is the state at target index
    #                                      anchor[i]; x is read on its own relative clock


@dataclass
class Trainer:
    """Adam on the negative ELBO with the shared bookkeeping of `odecli train`."""

    cfg: Any
    run_dir: Path
    model: LatentODEVAE
    spec: SolverSpec
    t: torch.Tensor
    rt: device_mod.Runtime
    sample_batch: Callable[[np.random.Generator], Batch]
    validate: Callable[[], dict[str, float]]  # held-out numbers; "score": lower is better
    rng: np.random.Generator
    description: str
    history: runs.History = field(init=False)
    best_state: dict[str, Any] | None = None
    best_iteration: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    nfe_forward: int = 0
    nfe_backward: int = 0
    iterations_done: int = 0

    def __post_init__(self) -> None:
        self.history = runs.History(self.run_dir / runs.HISTORY)
        train = self.cfg.train
        self.niters = _positive_int(train, "niters", 1000)
        self.test_freq = _positive_int(train, "test_freq", 50)
        self.checkpoint_every = int(train.get("checkpoint_every", 0) or 0)
        self.kl_warmup = int(train.get("kl_warmup", 0) or 0)
        self.noise_std = float(self.cfg.model.get("obs_noise_std", 0.1))
        if self.noise_std <= 0:
            raise ConfigError("model.obs_noise_std must be positive")
        lr = float(train.get("lr", 1e-3))
        if lr <= 0:
            raise ConfigError("train.lr must be positive")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        schedule = str(train.get("schedule", "constant"))
        if schedule not in ("constant", "cosine"):
            raise ConfigError(f"train.schedule must be 'constant' or 'cosine', got '{schedule}'")
        lr_min = float(train.get("lr_min", 0.0) or 0.0)
        if not 0 <= lr_min <= lr:
            raise ConfigError("train.lr_min must lie between 0 and train.lr")
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.niters, eta_min=lr_min) if schedule == "cosine" else None)

    def fit(self) -> None:
        best = math.inf
        started = time.perf_counter()
        with runs.progress(self.niters, self.description,
                           quiet=bool(self.cfg.get("quiet", False))) as bar:
            for it in range(1, self.niters + 1):
                step_start = time.perf_counter()
                batch = self.sample_batch(self.rng)
                weight = min(1.0, it / self.kl_warmup) if self.kl_warmup else 1.0
                self.optimizer.zero_grad(set_to_none=True)
                self.model.func.nfe = 0
                if batch.anchor is None:
                    x_hat, mu, logvar = self.model(batch.x, batch.mask, self.t, self.spec)
                else:
                    x_hat, mu, logvar = self.model.forward_anchored(
                        batch.x, batch.mask, self.t, batch.anchor, batch.target.shape[1],
                        self.spec)
                forward_nfe = self.model.func.nfe
                terms = elbo(batch.target, x_hat, batch.target_mask, mu, logvar,
                             self.noise_std, weight)
                loss = -terms.elbo
                check_finite(loss, "training loss")
                loss.backward()
                backward_nfe = self.model.func.nfe - forward_nfe
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.train_seconds += time.perf_counter() - step_start
                loss_value = float(loss.detach())
                self.nfe_forward += forward_nfe
                self.nfe_backward += backward_nfe
                self.iterations_done = it
                if it % self.test_freq == 0 or it == self.niters:
                    self.seconds = time.perf_counter() - started
                    held_out = self.validate()
                    row = {"iteration": it, "loss": loss_value,
                           "loglik": float(terms.loglik.detach()),
                           "kl": float(terms.kl.detach()), **held_out,
                           "nfe_forward": forward_nfe,
                           "nfe_backward": backward_nfe,
                           "seconds": round(self.seconds, 3)}
                    self.history.append(row)
                    if held_out["score"] < best:
                        best, self.best_iteration = held_out["score"], it
                        self.best_state = copy.deepcopy(self.model.state_dict())
                    bar.update(it, loss=loss_value, held_out=held_out["score"])
                else:
                    bar.update(it, loss=loss_value)
                if self.checkpoint_every and it % self.checkpoint_every == 0:
                    self.save_checkpoint(it)
        self.seconds = time.perf_counter() - started
        self.save_checkpoint(self.niters)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def save_checkpoint(self, iteration: int) -> None:
        """model + optimizer + every RNG + iteration, written atomically."""
        state = {
            "iteration": iteration,
            "model": self.model.state_dict(),
            "best_model": self.best_state,
            "best_iteration": self.best_iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {"torch": torch.get_rng_state(), "numpy": self.rng.bit_generator.state,
                    "python": random.getstate()},
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        runs.atomic_write_bytes(self.run_dir / runs.CHECKPOINT, buf.getvalue())

    def summary(self) -> dict[str, Any]:
        done = max(self.iterations_done, 1)
        return {
            "iterations": self.iterations_done,
            "best_iteration": self.best_iteration,
            "seconds_per_iter": self.train_seconds / done,
            "train_seconds": self.train_seconds,
            "nfe_forward_per_iter": self.nfe_forward / done,
            "nfe_backward_per_iter": self.nfe_backward / done,
        }


def _setup(cfg: Any) -> tuple[device_mod.Runtime, SolverSpec, int]:
    rt = device_mod.setup(cfg.device)
    device_mod.quiet_warnings()
    spec = SolverSpec.from_cfg(cfg.solver, cfg.get("gradient"))
    if spec.notice:
        runs.notice(logging.getLogger("odecli.latent"), spec.notice)
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    random.seed(seed)
    return rt, spec, seed


def _advise_device(cfg: Any, rt: device_mod.Runtime, model: nn.Module, batch: int) -> None:
    advice = device_mod.gpu_advice(str(cfg.device.get("name", "cpu")), rt,
                                   sum(p.numel() for p in model.parameters()), batch)
    if advice:
        runs.notice(logging.getLogger("odecli.latent"), advice)


def _tensor(a: np.ndarray, rt: device_mod.Runtime) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=rt.dtype, device=rt.device)


def _mask_tensor(a: np.ndarray, rt: device_mod.Runtime) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=bool), device=rt.device)


def _run(cfg: Any, run_dir: Path, body: Callable[[float], dict[str, Any]],
         failed_extra: dict[str, Any]) -> dict[str, Any]:
    """Time the body, stamp the standard fields, and turn solver blow-ups into RunFailed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        metrics = body(started)
    except SolverError as exc:
        metrics = {"status": f"failed: {exc}", "hint": exc.hint, **failed_extra,
                   "environment": runs.environment(),
                   "wall_seconds": time.perf_counter() - started,
                   "peak_memory_mb": runs.peak_memory_mb()}
        runs.write_json(run_dir / runs.METRICS, metrics)
        raise RunFailed(f"{exc} ({exc.hint})" if exc.hint else str(exc)) from None
    return metrics


def _finish(run_dir: Path, metrics: dict[str, Any], rt: device_mod.Runtime, started: float
            ) -> dict[str, Any]:
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics["peak_memory_mb"] = runs.peak_memory_mb(rt.device)
    metrics["environment"] = runs.environment(rt.device, rt.dtype, rt.threads)
    runs.write_json(run_dir / runs.METRICS, metrics)
    return metrics


def _mse(pred: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    """Mean squared error over the selected points and both channels."""
    where = np.asarray(where, dtype=bool)
    if not where.any():
        return float("nan")
    return float(((pred - truth) ** 2)[where].mean())


@torch.no_grad()
def predict(model: LatentODEVAE, x: np.ndarray, mask: np.ndarray, t: torch.Tensor,
            spec: SolverSpec, rt: device_mod.Runtime, chunk: int = 512) -> np.ndarray:
    """Posterior-mean reconstruction over the whole grid (no sampling), in chunks."""
    model.eval()
    out = []
    for i in range(0, len(x), chunk):
        pred, _, _ = model(_tensor(x[i:i + chunk], rt), _mask_tensor(mask[i:i + chunk], rt), t,
                           spec, sample=False)
        out.append(pred.cpu().numpy())
    model.train()
    return np.concatenate(out, axis=0).astype(np.float64)


# ============================================================================ spiral-vae

def run_spiral_vae(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Train the latent-ODE VAE on noisy spirals; held-out reconstruction and extrapolation.

    The encoder reads each spiral's observed window on its own clock, the latent state sits in
    the middle of the observations, and the whole grid is predicted by solving the latent ODE
    forward and backward from there. Training scores only observed points; some windows hide
    part of themselves from the encoder (`train.partial_share`) to teach extrapolation.
    """
    run_dir = Path(run_dir)

    def body(started: float) -> dict[str, Any]:
        rt, spec, seed = _setup(cfg)
        data = make_spirals(cfg.data, seed)
        model = LatentODEVAE(2, cfg.model).to(device=rt.device, dtype=rt.dtype)
        width = int((data.span[:, 1] - data.span[:, 0]).max())
        xw, mw, anchor = anchored_windows(data.obs, data.mask, width)
        tau = _tensor(data.t[:width] - data.t[0], rt)
        n_points = len(data.t)
        batch_size = _positive_int(cfg.train, "batch_size", 50)
        _advise_device(cfg, rt, model, batch_size)
        partial, partial_min = _partial_settings(cfg.train)
        idx = np.arange(n_points)
        inside = (idx[None, :] >= data.span[:, 0:1]) & (idx[None, :] < data.span[:, 1:2])
        after = idx[None, :] >= data.span[:, 1:2]
        before = idx[None, :] < data.span[:, 0:1]

        def sample_batch(rng: np.random.Generator) -> Batch:
            pick = rng.choice(data.train, size=min(batch_size, len(data.train)), replace=False)
            x, m, a = partial_windows(xw[pick], mw[pick], rng, partial, partial_min)
            return Batch(x=_tensor(x, rt), mask=_mask_tensor(m, rt),
                         target=_tensor(xw[pick], rt), target_mask=_mask_tensor(mw[pick], rt),
                         anchor=torch.as_tensor(a, device=rt.device))

        @torch.no_grad()
        def full_grid(rows: np.ndarray, chunk: int = 512) -> np.ndarray:
            model.eval()
            out = []
            for i in range(0, len(rows), chunk):
                r = rows[i:i + chunk]
                pred, _, _ = model.forward_anchored(
                    _tensor(xw[r], rt), _mask_tensor(mw[r], rt), tau,
                    torch.as_tensor(anchor[r], device=rt.device), n_points, spec, sample=False)
                out.append(pred.cpu().numpy())
            model.train()
            return np.concatenate(out, axis=0).astype(np.float64)

        def scores(rows: np.ndarray, pred: np.ndarray) -> dict[str, float]:
            truth = data.truth[rows]
            return {"reconstruction_mse": _mse(pred, truth, inside[rows]),
                    "extrapolation_forward_mse": _mse(pred, truth, after[rows]),
                    "extrapolation_backward_mse": _mse(pred, truth, before[rows])}

        def validate() -> dict[str, float]:
            result = {f"val_{k}": v for k, v in scores(data.val, full_grid(data.val)).items()}
            result["score"] = float(np.nanmean(list(result.values())))
            return result

        trainer = Trainer(cfg=cfg, run_dir=run_dir, model=model, spec=spec, t=tau, rt=rt,
                          sample_batch=sample_batch, validate=validate,
                          rng=np.random.default_rng(seed + 1), description="spiral-vae")
        try:
            trainer.fit()
        finally:
            _loss_plot(cfg, run_dir, trainer.history.rows)
        pred = full_grid(data.test)
        held_out = scores(data.test, pred)
        baselines = spiral_baselines(data, data.test)
        for name, base in baselines.items():
            for key, value in scores(data.test, base).items():
                if key.startswith("extrapolation"):
                    held_out[f"{key[:-4]}_{name}_mse"] = value
        metrics: dict[str, Any] = {
            "status": "ok", "command": "spiral-vae", **held_out,
            "beats_baselines": all(
                held_out[f"extrapolation_{side}_mse"]
                < held_out[f"extrapolation_{side}_{name}_mse"]
                for side in ("forward", "backward") for name in baselines),
            "signal_variance": float(data.truth[data.test].var(axis=(0, 1)).mean()),
            "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
            **trainer.summary()}
        if _plots_enabled(cfg):
            from odecli.latent import plots as vae_plots

            rows = data.test[: int(cfg.plots.get("n_examples", 4))]
            vae_plots.spiral_figure(run_dir / "spiral_vae.png", data.t, data.truth[rows],
                                    data.obs[rows], data.mask[rows], data.span[rows],
                                    pred[: len(rows)])
        return _finish(run_dir, metrics, rt, started)

    return _run(cfg, run_dir, body, {"command": "spiral-vae"})


def partial_windows(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    share: float, min_length: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hide all but a random contiguous part of some training windows from the encoder.

    A `share` of the windows keep only a stretch of `min_length` to all of their length; the
    encoder input starts at the first observation it keeps, the latent state is placed in the
    middle of the kept observations, and the likelihood still scores the whole window, so the
    model learns to extrapolate both ways from what it sees. Returns (encoder values, encoder
    mask, anchor: the window column where the latent state sits).
    """
    n, width = mask.shape
    keep = np.ones_like(mask, dtype=bool)
    shortest = max(2, int(math.ceil(min_length * width)))
    for i in np.flatnonzero(rng.random(n) < share):
        length = int(rng.integers(min(shortest, width), width + 1))
        start = int(rng.integers(0, width - length + 1))
        part = np.zeros(width, dtype=bool)
        part[start:start + length] = True
        if (mask[i] & part).sum() >= 2:
            keep[i] = part
    seen = mask & keep
    first = seen.argmax(axis=1)
    cols = first[:, None] + np.arange(width)[None, :]
    inside = cols < width
    cols = np.minimum(cols, width - 1)
    rows = np.arange(n)[:, None]
    m = seen[rows, cols] & inside
    return np.where(m[..., None], x[rows, cols], 0.0), m, first + _middle(m)


def _middle(mask: np.ndarray) -> np.ndarray:
    """Column halfway between each row's first (column 0) and last observation."""
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    return last // 2


def _partial_settings(train: Mapping[str, Any]) -> tuple[float, float]:
    share = float(train.get("partial_share", 0.0) or 0.0)
    shortest = float(train.get("partial_min", 0.5))
    if not 0 <= share <= 1:
        raise ConfigError(f"train.partial_share must lie in [0, 1], got {share}")
    if not 0 < shortest <= 1:
        raise ConfigError(f"train.partial_min must lie in (0, 1], got {shortest}")
    return share, shortest


def spiral_baselines(data: Spirals, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Trivial predictors of the whole grid, for the extrapolation comparison.

    `hold`: the last observed (noisy) value carried forward and the first carried backward;
    `centre`: the spirals' common centre, the origin (the best constant for a full turn).
    """
    mask = data.mask[rows]
    obs = data.obs[rows]
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    k = np.arange(mask.shape[1])[None, :]
    i = np.arange(len(rows))
    hold = np.where((k <= first[:, None])[..., None], obs[i, first][:, None],
                    obs[i, last][:, None])
    return {"hold": hold, "centre": np.zeros_like(obs)}


# ============================================================================ ecg-vae

@dataclass
class TaskSet:
    """Deterministic inputs for the four held-out tasks on one set of beats."""

    x: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]  # what the encoder sees
    target: dict[str, np.ndarray]  # where the task is scored


def _task_inputs(task: str, clean: np.ndarray, tasks: Mapping[str, Any],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(encoder input, observed mask, scored mask) for one beat and one task."""
    n = clean.shape[0]
    if task == "reconstruction":
        mask = random_subset(n, float(tasks.get("obs_fraction", 0.5)), rng)
        noisy = clean + float(tasks.get("noise_std", 0.05)) * rng.standard_normal(clean.shape)
        return noisy * mask[:, None], mask, np.ones(n, dtype=bool)
    if task == "gap":
        mask = gap_mask(n, float(tasks.get("gap_fraction", 0.3)), rng)
    else:
        mask = edge_mask(n, float(tasks.get("extrap_fraction", 0.5)), task)
    return clean * mask[:, None], mask, ~mask


def make_task_set(paths: np.ndarray, tasks: Mapping[str, Any], seed: int) -> TaskSet:
    """Every beat gets every task, with masks and noise fixed by the seed."""
    rng = np.random.default_rng(seed)
    out = TaskSet({}, {}, {})
    for task in ECG_TASKS:
        rows = [_task_inputs(task, beat, tasks, rng) for beat in paths]
        out.x[task] = np.stack([r[0] for r in rows])
        out.mask[task] = np.stack([r[1] for r in rows])
        out.target[task] = np.stack([r[2] for r in rows])
    return out


def run_ecg_vae(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Train on real heartbeats; score reconstruction, gap filling and both extrapolations.

    The model is trained on the same task mix it is tested on: the encoder sees a noisy
    subset, a beat with a gap, or its first or last part, and the likelihood scores the whole
    clean beat, so predicting unobserved stretches is what it learns.
    """
    from odecli.latent import ecg_data as ecg

    run_dir = Path(run_dir)

    def body(started: float) -> dict[str, Any]:
        rt, spec, seed = _setup(cfg)
        beats = ecg.load_beats(cfg.data)
        tasks = cfg.get("tasks") or {}
        weights = np.array([float((tasks.get("weights") or {}).get(k, 1.0))
                            for k in ECG_TASKS])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError("tasks.weights must be non-negative and not all zero")
        weights = weights / weights.sum()
        train_paths = beats.paths[beats.split["train"]]
        val_paths = beats.paths[beats.split["val"]]
        test_paths = beats.paths[beats.split["test"]]
        model = LatentODEVAE(2, cfg.model).to(device=rt.device, dtype=rt.dtype)
        span = float(cfg.model.get("time_span", 1.0))
        if span <= 0:
            raise ConfigError("model.time_span must be positive")
        t = _tensor(span * (beats.t - beats.t[0]) / (beats.t[-1] - beats.t[0]), rt)
        batch_size = _positive_int(cfg.train, "batch_size", 64)
        _advise_device(cfg, rt, model, batch_size)
        val_set = make_task_set(val_paths, tasks, seed + 1000)
        ones = np.ones(beats.paths.shape[1], dtype=bool)

        def sample_batch(rng: np.random.Generator) -> Batch:
            pick = rng.choice(len(train_paths), size=min(batch_size, len(train_paths)),
                              replace=False)
            kinds = rng.choice(len(ECG_TASKS), size=len(pick), p=weights)
            rows = [_task_inputs(ECG_TASKS[k], train_paths[i], tasks, rng)
                    for i, k in zip(pick, kinds, strict=True)]
            target = _tensor(train_paths[pick], rt)
            return Batch(x=_tensor(np.stack([r[0] for r in rows]), rt),
                         mask=_mask_tensor(np.stack([r[1] for r in rows]), rt),
                         target=target, target_mask=_mask_tensor(
                             np.broadcast_to(ones, (len(pick), len(ones))), rt))

        def task_scores(paths: np.ndarray, ts: TaskSet) -> tuple[dict[str, float], dict]:
            result, preds = {}, {}
            for task in ECG_TASKS:
                preds[task] = predict(model, ts.x[task], ts.mask[task], t, spec, rt)
                result[f"{_task_name(task)}_mse"] = _mse(preds[task], paths, ts.target[task])
            return result, preds

        def validate() -> dict[str, float]:
            result, _ = task_scores(val_paths, val_set)
            result = {f"val_{k}": v for k, v in result.items()}
            result["score"] = float(np.mean(list(result.values())))
            return result

        trainer = Trainer(cfg=cfg, run_dir=run_dir, model=model, spec=spec, t=t, rt=rt,
                          sample_batch=sample_batch, validate=validate,
                          rng=np.random.default_rng(seed + 1), description="ecg-vae")
        try:
            trainer.fit()
        finally:
            _loss_plot(cfg, run_dir, trainer.history.rows, ecg.LICENSE_NOTICE)
        test_set = make_task_set(test_paths, tasks, seed + 2000)
        held_out, preds = task_scores(test_paths, test_set)
        mean_beat = ecg.mean_beat_baseline(train_paths, len(test_paths))
        baselines: dict[str, dict[str, np.ndarray]] = {}
        comparison: dict[str, Any] = {}
        for task in ("right", "left"):
            name = _task_name(task)
            hold = ecg.last_value_baseline(test_set.x[task], test_set.mask[task])
            baselines[task] = {"mean training beat": mean_beat, "last observed value": hold}
            target = test_set.target[task]
            mb, lv = _mse(mean_beat, test_paths, target), _mse(hold, test_paths, target)
            held_out[f"{name}_mean_beat_mse"] = mb
            held_out[f"{name}_last_value_mse"] = lv
            model_mse = held_out[f"{name}_mse"]
            comparison[name] = {
                "beats_mean_beat": model_mse < mb, "beats_last_value": model_mse < lv,
                "ratio_to_mean_beat": model_mse / mb, "ratio_to_last_value": model_mse / lv,
            }
        metrics: dict[str, Any] = {
            "status": "ok", "command": "ecg-vae", **held_out,
            "beats_both_baselines": all(c["beats_mean_beat"] and c["beats_last_value"]
                                        for c in comparison.values()),
            "baseline_comparison": comparison,
            "mse_space": "phase space (x, dx/dt), each channel scaled to [-1, 1] on train",
            "data": {"record": beats.record, "lead": beats.lead, "fs": beats.fs,
                     "signal_length": beats.signal_length, "beats": len(beats.paths),
                     "peaks_from": beats.source,
                     **{f"n_{k}": len(v) for k, v in beats.split.items()}},
            "data_license": ecg.LICENSE_NOTICE,
            **trainer.summary(),
        }
        if _plots_enabled(cfg):
            from odecli.latent import plots as vae_plots

            show = int(cfg.plots.get("n_examples", 3))
            lo, hi = beats.scale
            for task in ECG_TASKS:
                def real(a: np.ndarray) -> np.ndarray:
                    return ecg.unscale_paths(a[:show], lo, hi)

                vae_plots.ecg_task_figure(
                    run_dir / f"ecg_{_task_name(task)}.png", _TITLES[task], beats.t,
                    real(test_paths), real(test_set.x[task]), test_set.mask[task][:show],
                    real(preds[task]), {k: real(v) for k, v in baselines.get(task, {}).items()},
                    ecg.LICENSE_NOTICE)
        return _finish(run_dir, metrics, rt, started)

    return _run(cfg, run_dir, body, {"command": "ecg-vae"})


# ============================================================================ validation

def _validate_common(cfg: Any) -> None:
    device_mod.setup(cfg.device)
    SolverSpec.from_cfg(cfg.solver, cfg.get("gradient"))
    LatentODEVAE(2, cfg.model)
    for key, default in (("niters", 1000), ("test_freq", 50), ("batch_size", 50)):
        _positive_int(cfg.train, key, default)
    if float(cfg.train.get("lr", 1e-3)) <= 0:
        raise ConfigError("train.lr must be positive")
    if float(cfg.model.get("obs_noise_std", 0.1)) <= 0:
        raise ConfigError("model.obs_noise_std must be positive")
    if str(cfg.train.get("schedule", "constant")) not in ("constant", "cosine"):
        raise ConfigError("train.schedule must be 'constant' or 'cosine'")
    if not 0 <= float(cfg.train.get("lr_min", 0.0) or 0.0) <= float(cfg.train.get("lr", 1e-3)):
        raise ConfigError("train.lr_min must lie between 0 and train.lr")


def validate_spiral_vae(cfg: Any) -> None:
    """Check a composed spiral-vae config without training or writing anything."""
    _validate_common(cfg)
    _partial_settings(cfg.train)
    if bool(cfg.model.get("time_input", False)):
        raise ConfigError("spiral-vae solves the latent ODE from each spiral's first "
                          "observation both ways, so it needs model.time_input=false")
    make_spirals(cfg.data, int(cfg.get("seed", 0)))


def validate_ecg_vae(cfg: Any) -> None:
    """Check a composed ecg-vae config and its data before a run folder exists.

    The record is located (downloaded into the cache if need be) and cut into beats here, so a
    missing or corrupt record, a wrong lead or a record without beats fails up front.
    """
    from odecli.latent import ecg_data as ecg

    _validate_common(cfg)
    tasks = cfg.get("tasks") or {}
    for key in ("obs_fraction", "gap_fraction", "extrap_fraction"):
        value = float(tasks.get(key, 0.5))
        if not 0 < value < 1:
            raise ConfigError(f"tasks.{key} must lie strictly between 0 and 1, got {value}")
    if float(tasks.get("noise_std", 0.05)) < 0:
        raise ConfigError("tasks.noise_std must be non-negative")
    ecg.load_beats(cfg.data)


_TITLES = {
    "reconstruction": "Reconstruction from a noisy, irregularly sampled beat",
    "gap": "Gap filling: a contiguous stretch removed",
    "right": "Extrapolation to the right: first part observed",
    "left": "Extrapolation to the left: last part observed",
}


def _task_name(task: str) -> str:
    return {"right": "extrapolation_right", "left": "extrapolation_left"}.get(task, task)


def _plots_enabled(cfg: Any) -> bool:
    plots = cfg.get("plots") or {}
    return bool(plots.get("enabled", True))


def _loss_plot(cfg: Any, run_dir: Path, rows: list[dict[str, Any]],
               notice: str | None = None) -> None:
    if rows and _plots_enabled(cfg):
        from odecli.latent import plots as vae_plots

        vae_plots.loss_figure(run_dir / "loss.png", rows, notice)


def _range(node: Mapping[str, Any], key: str, default: tuple[float, float]
           ) -> tuple[float, float]:
    """A [low, high] pair of non-negative numbers, or one number for a fixed value."""
    value = node.get(key, default)
    try:
        pair = (float(value), float(value)) if isinstance(value, (int, float)) else tuple(
            float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not 0 <= pair[0] <= pair[1]:
        raise ConfigError(f"{_key_path(node, key)} must be a number or [low, high] with "
                          f"0 <= low <= high, got {value!r}")
    return pair[0], pair[1]


def _positive_int(node: Mapping[str, Any], key: str, default: int) -> int:
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        where = _key_path(node, key)
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")
    return value


def _key_path(node: Any, key: str) -> str:
    """'train.niters' rather than 'niters' when the node knows where it sits."""
    try:
        parent = node._get_full_key(None)
    except Exception:
        parent = ""
    return f"{parent}.{key}" if parent else key
