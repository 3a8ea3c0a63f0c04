"""`odecli spiral-vae`: the latent-ODE VAE on noisy, irregularly sampled 2-D spirals.

The encoder reads each spiral's observed window on its own clock, the latent state sits in
the middle of the observations, and the whole grid is predicted by solving the latent ODE
forward and backward from there. Training scores only observed points; some windows hide
part of themselves from the encoder (`train.partial_share`) to teach extrapolation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from odecli.latent import schema as schema_mod
from odecli.latent.ensemble import SpiralMembers
from odecli.latent.masks import anchored_windows, partial_windows
from odecli.latent.spirals import make_spirals, spiral_baselines
from odecli.latent.trained import TrainedSpiralVAE
from odecli.latent.vae import MaskedBatch, VAEExperiment, mean_score, mse


class SpiralVAE(VAEExperiment):
    command: ClassVar[str] = "spiral-vae"
    summary_keys: ClassVar[tuple[str, ...]] = (
        "reconstruction_mse", "extrapolation_forward_mse", "extrapolation_backward_mse")
    trained_model = TrainedSpiralVAE
    schema = schema_mod.SPIRAL_VAE
    check_config = staticmethod(schema_mod.check_spiral_vae)
    ensemble = SpiralMembers  # hydra/launcher=ensemble: members trained as one batch

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.name = "spirals"
        self.data = data = make_spirals(self.settings["data"], self.seed)
        self.build_model()
        width = int((data.span[:, 1] - data.span[:, 0]).max())
        self.xw, self.mw, self.anchor = anchored_windows(data.obs, data.mask, width)
        self.t = self.tensor(data.t[:width] - data.t[0])
        self.n_points = len(data.t)
        idx = np.arange(self.n_points)
        span = data.span
        self.inside = (idx[None, :] >= span[:, 0:1]) & (idx[None, :] < span[:, 1:2])
        self.after = idx[None, :] >= span[:, 1:2]
        self.before = idx[None, :] < span[:, 0:1]

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        settings = cls.check(cfg)
        make_spirals(settings["data"], settings["seed"])

    def sample_batch(self) -> MaskedBatch:
        o, data = self.opts, self.data
        pick = self.rng.choice(data.train, size=min(o["batch_size"], len(data.train)),
                               replace=False)
        x, m, a = partial_windows(self.xw[pick], self.mw[pick], self.rng, o["partial_share"],
                                  o["partial_min"])
        return MaskedBatch(x=self.tensor(x), mask=self.mask_tensor(m),
                     target=self.tensor(self.xw[pick]),
                     target_mask=self.mask_tensor(self.mw[pick]),
                     anchor=torch.as_tensor(a, device=self.rt.device))

    @torch.no_grad()
    def full_grid(self, rows: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Posterior-mean predictions of the whole grid for these spirals."""
        self.model.eval()
        out = []
        for i in range(0, len(rows), chunk):
            r = rows[i:i + chunk]
            pred, _, _ = self.model.forward_anchored(
                self.tensor(self.xw[r]), self.mask_tensor(self.mw[r]), self.t,
                torch.as_tensor(self.anchor[r], device=self.rt.device), self.n_points,
                self.spec, sample=False)
            out.append(pred.cpu().numpy())
        self.model.train()
        return np.concatenate(out, axis=0).astype(np.float64)

    def scores(self, rows: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        truth = self.data.truth[rows]
        return {"reconstruction_mse": mse(pred, truth, self.inside[rows]),
                "extrapolation_forward_mse": mse(pred, truth, self.after[rows]),
                "extrapolation_backward_mse": mse(pred, truth, self.before[rows])}

    def evaluate(self) -> dict[str, float]:
        return self.evaluation(self.full_grid(self.data.val))

    def evaluation(self, pred: np.ndarray) -> dict[str, float]:
        """The history columns of the validation spirals' predictions `pred`."""
        result = {f"val_{k}": v for k, v in self.scores(self.data.val, pred).items()}
        result["score"] = mean_score(result)
        return result

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        """Held-out spirals: reconstruction and both extrapolations, against baselines."""
        data = self.data
        self._test_pred = pred = self.full_grid(data.test)
        held_out = self.scores(data.test, pred)
        baselines = spiral_baselines(data, data.test)
        for name, base in baselines.items():
            for key, value in self.scores(data.test, base).items():
                if key.startswith("extrapolation"):
                    held_out[f"{key[:-4]}_{name}_mse"] = value
        return {
            **held_out,
            "beats_baselines": all(
                held_out[f"extrapolation_{side}_mse"]
                < held_out[f"extrapolation_{side}_{name}_mse"]
                for side in ("forward", "backward") for name in baselines),
            "signal_variance": float(data.truth[data.test].var(axis=(0, 1)).mean()),
            "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test)}

    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        from odecli.latent import plots

        if test is None:
            return
        data = self.data
        rows = data.test[: int(self.cfg.plots.n_examples)]
        plots.spiral_figure(run_dir / "spiral_vae.png", data.t, data.truth[rows],
                            data.obs[rows], data.mask[rows], data.span[rows],
                            self._test_pred[: len(rows)])
