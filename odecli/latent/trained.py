"""A trained latent-ODE VAE from Python: encode observations, reconstruct, extrapolate.

Every prediction is the posterior mean (no sampling), as the runs' test scores are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from odecli.engine.trained import TrainedModel
from odecli.errors import ConfigError


class TrainedVAE(TrainedModel):
    """What both VAE commands offer: series (n, T, 2) in, the latent posterior out."""

    def _series(self, x: Any, mask: Any | None) -> tuple[torch.Tensor, torch.Tensor]:
        xt = self.tensor(x, "x", dims=(2, 3))
        if xt.dim() == 2:
            xt = xt[None]
        if xt.shape[-1] != 2:
            raise ConfigError(f"x must hold 2 channels per time point, got {xt.shape[-1]}")
        if mask is None:
            m = torch.ones(xt.shape[:2], dtype=torch.bool, device=xt.device)
        else:
            m = torch.as_tensor(np.asarray(mask, dtype=bool), device=xt.device)
            if m.dim() == 1:
                m = m[None].expand(len(xt), -1)
            if tuple(m.shape) != tuple(xt.shape[:2]):
                raise ConfigError(f"mask must be shaped {tuple(xt.shape[:2])}, got "
                                  f"{tuple(m.shape)}")
        return xt, m

    @torch.no_grad()
    def _encode(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.experiment.model
        model.eval()
        try:
            return model.encode(x, mask, t)
        finally:
            model.train()

    @torch.no_grad()
    def _decode(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Decode from z0 (the state at time 0) at times t, before or after 0, any order:
        one solve each way over the sorted times, as the runs' evaluation does."""
        exp = self.experiment
        times, order = torch.unique(t, sorted=True, return_inverse=True)
        zero = times.new_zeros(1)
        after = times[times > 0]
        before = times[times < 0].flip(0)
        with self.counting(exp.model.func):
            fwd = exp.model._path(z0, torch.cat([zero, after]), exp.spec)
            bwd = exp.model._path(z0, torch.cat([zero, before]), exp.spec)
        z = torch.cat([bwd[1:].flip(0), fwd[:1] if bool((times == 0).any()) else fwd[:0],
                       fwd[1:]])
        return exp.model.decoder(z[order]).transpose(0, 1)


class TrainedSpiralVAE(TrainedVAE):
    """The latent ODE of an `odecli spiral-vae` run.

    `x` holds observed windows (n, T, 2) at times `t` (T,), read on their own clock: the
    latent state z0 is the state at t[0]. `mask` (n, T) marks which points are observed.

    >>> import odecli
    >>> run = odecli.run("spiral-vae", ["train.niters=2", "quiet=true",
    ...                                 "plots.enabled=false", "data.n_spirals=24"])
    >>> m = run.model
    >>> x, t = m.windows[:3], m.window_times
    >>> m.encode(x, t)[0].shape == (3, m.latent_dim)
    True
    >>> m.extrapolate(x, t, [0.0, 1.0, 2.0, 40.0]).shape
    (3, 4, 2)
    """

    @property
    def latent_dim(self) -> int:
        return int(self.experiment.model.latent_dim)

    @property
    def windows(self) -> np.ndarray:
        """The test spirals' observed windows (n, T, 2), the form `x` takes."""
        exp = self.experiment
        return exp.xw[exp.data.test].astype(np.float64)

    @property
    def window_masks(self) -> np.ndarray:
        exp = self.experiment
        return exp.mw[exp.data.test]

    @property
    def window_times(self) -> np.ndarray:
        return self.numpy(self.experiment.t)

    def encode(self, x: Any, t: Any, mask: Any | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The posterior q(z0 | x) as (mean, standard deviation), each (n, latent_dim)."""
        xt, m = self._series(x, mask)
        mu, logvar = self._encode(xt, m, self._times(t, xt))
        return self.numpy(mu), self.numpy(torch.exp(0.5 * logvar))

    def reconstruct(self, x: Any, t: Any, mask: Any | None = None) -> np.ndarray:
        """The posterior-mean path at the observation times, (n, T, 2)."""
        return self.extrapolate(x, t, t, mask)

    def extrapolate(self, x: Any, t: Any, t_new: Any, mask: Any | None = None) -> np.ndarray:
        """The posterior-mean path at `t_new` (any times, before or after the window, on
        the clock of `t`): (n, len(t_new), 2)."""
        xt, m = self._series(x, mask)
        tt = self._times(t, xt)
        mu, _ = self._encode(xt, m, tt)
        new = self.tensor(t_new, "t_new", dims=(1,)) - tt[0]
        return self.numpy(self._decode(mu, new))

    def _times(self, t: Any, x: torch.Tensor) -> torch.Tensor:
        tt = self.tensor(t, "t", dims=(1,))
        if len(tt) != x.shape[1] or (len(tt) > 1 and not bool((tt[1:] > tt[:-1]).all())):
            raise ConfigError(f"t must hold {x.shape[1]} increasing times (one per column "
                              "of x)")
        return tt - tt[0]


class TrainedEcgVAE(TrainedVAE):
    """The latent ODE of an `odecli ecg-vae` run, on the run's beat grid.

    A beat is its phase-space path (n, L, 2): (x, dx/dt), each channel scaled to [-1, 1] on
    the training beats (as the run's metrics are); `mask` (n, L) marks observed points.

    >>> import odecli  # the record: data.dir=..., $ODECLI_ECG_DIR, or a PhysioNet download
    >>> run = odecli.run("ecg-vae", ["train.niters=2", "quiet=true", "plots.enabled=false",
    ...                              "data.max_beats=80", "data.n_points=24"])
    >>> beats = run.model.beats[:4]
    >>> run.model.reconstruct(beats).shape == beats.shape
    True
    >>> run.model.extrapolate(beats, 10).shape == beats.shape
    True
    """

    @property
    def beats(self) -> np.ndarray:
        """The test beats (n, L, 2), in the scaled phase space the model reads."""
        return np.asarray(self.experiment.test_paths, dtype=np.float64)

    @property
    def times(self) -> np.ndarray:
        """The model's clock over one beat grid."""
        return self.numpy(self.experiment.t)

    def encode(self, x: Any, mask: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The posterior q(z0 | x) as (mean, standard deviation), each (n, latent_dim)."""
        xt, m = self._grid_series(x, mask)
        mu, logvar = self._encode(xt, m, self.experiment.t)
        return self.numpy(mu), self.numpy(torch.exp(0.5 * logvar))

    def reconstruct(self, x: Any, mask: Any | None = None) -> np.ndarray:
        """The whole beat grid from the observed points (all, or where `mask` is true)."""
        xt, m = self._grid_series(x, mask)
        with self.counting(self.experiment.model.func):
            out = self.experiment.predict(self.numpy(xt), m.cpu().numpy())
        return np.asarray(out)

    def extrapolate(self, x: Any, n_observed: int, side: str = "right") -> np.ndarray:
        """The whole beat from its first (`side="right"`: predict the rest) or last
        (`side="left"`) `n_observed` points."""
        xt, _ = self._grid_series(x, None)
        length = xt.shape[1]
        if isinstance(n_observed, bool) or not isinstance(n_observed, int) or not (
                1 <= n_observed < length):
            raise ConfigError(f"n_observed must be an integer in [1, {length - 1}], got "
                              f"{n_observed!r}")
        if side not in ("right", "left"):
            raise ConfigError(f"side must be 'right' or 'left', got {side!r}")
        mask = np.zeros(xt.shape[:2], dtype=bool)
        if side == "right":
            mask[:, :n_observed] = True
        else:
            mask[:, -n_observed:] = True
        return self.reconstruct(self.numpy(xt), mask)

    def _grid_series(self, x: Any, mask: Any | None) -> tuple[torch.Tensor, torch.Tensor]:
        xt, m = self._series(x, mask)
        length = len(self.experiment.t)
        if xt.shape[1] != length:
            raise ConfigError(f"x must hold {length} points per beat (the run's grid), got "
                              f"{xt.shape[1]}")
        return xt, m
