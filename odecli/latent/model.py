"""Latent-ODE VAE (Chen et al. 2018, sec. 5; Rubanova et al. 2019): encoder, latent ODE,
decoder and the ELBO, shared by `spiral-vae` and `ecg-vae`.

For ECG beats (aligned windows) the latent initial state sits at the grid's first time and
the latent ODE is solved forward over the whole grid. For spirals, whose observed windows sit
anywhere on the grid, the encoder reads each window on its own clock, the latent state is
placed in the middle of the observed stretch, and the autonomous latent ODE is solved forward
and backward from there (`forward_anchored`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from odecli.errors import ConfigError
from odecli.latent.schema import ENCODERS
from odecli.numerics.solve import CountingField, SolverSpec, solve

_LOG_2PI = math.log(2.0 * math.pi)


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
        self.ode_spec = ode_spec or SolverSpec("euler", "direct", step_size=None)
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

    def __init__(self, obs_dim: int, model: Mapping[str, Any]) -> None:
        """`model` is the checked `model` node (odecli.latent.schema)."""
        super().__init__()
        latent = model["latent_dim"]
        # one step per gap between observations: no step_size
        enc_spec = SolverSpec.from_cfg({"method": model["odernn_method"], "step_size": None},
                                       {"name": "direct"})
        self.encoder = Encoder(model["encoder"], obs_dim, model["encoder_width"], latent,
                               enc_spec, model["odernn_width"])
        self.func = CountingField(ODEFunc(latent, model["ode_width"], model["ode_layers"],
                                          model["time_input"]))
        self.decoder = _mlp(latent, model["decoder_width"], obs_dim, model["decoder_layers"],
                            nn.ReLU)
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
