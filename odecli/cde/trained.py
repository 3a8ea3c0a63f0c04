"""A trained `odecli cde` classifier from Python: classes of series with missing points."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from odecli.engine.trained import TrainedModel
from odecli.errors import ConfigError


class TrainedCDE(TrainedModel):
    """The neural CDE (or baseline) an `odecli cde` run trained (its best validation state).

    `values` are series in the data's own units, shaped (n, length, dimensions) (or one
    series, (length, dimensions)), NaN where a point is missing (a series that is shorter
    ends in NaN); `times` (length,) the observation times shared by the batch, the data's
    index 0, 1, 2, ... unless given. Each series needs two observed points. Predictions are
    class indices into `classes`.

    >>> import numpy as np, odecli
    >>> run = odecli.run("cde", ["cde_data=spirals", "data.n=40", "train.niters=2",
    ...                          "quiet=true", "plots.enabled=false"])
    >>> t = np.arange(30.0)
    >>> spiral = np.stack([np.cos(t / 5), np.sin(t / 5)], axis=1)
    >>> spiral[3:8] = np.nan  # five missing points
    >>> run.model.predict(np.stack([spiral, spiral[::-1]])).shape
    (2,)
    >>> run.model.predict_proba(spiral, times=t).shape
    (1, 2)
    >>> run.model.classes
    ['counterclockwise', 'clockwise']
    """

    @property
    def classes(self) -> list[str]:
        return list(self.experiment.data.classes)

    @property
    def dimensions(self) -> int:
        return int(self.experiment.data.x.shape[-1])

    def predict_proba(self, values: Any, times: Any = None) -> np.ndarray:
        """Class probabilities, (n, n_classes)."""
        return self.numpy(torch.softmax(self._logits(values, times).double(), dim=1))

    def predict(self, values: Any, times: Any = None) -> np.ndarray:
        """Predicted class indices, (n,)."""
        return self.numpy(self._logits(values, times).argmax(1)).astype(np.int64)

    def _series(self, values: Any, times: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        try:
            x = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"values must be an array of numbers: {exc}") from None
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != self.dimensions:
            raise ConfigError(f"values must be shaped (n, length, {self.dimensions}) or "
                              f"(length, {self.dimensions}), got {tuple(np.shape(values))}")
        if np.isinf(x).any():
            raise ConfigError("values hold infinite numbers (NaN marks a missing point)")
        t = (np.arange(x.shape[1], dtype=np.float64) if times is None
             else self.array(times, "times", (1,)))
        if len(t) != x.shape[1] or (len(t) > 1 and not np.all(np.diff(t) > 0)):
            raise ConfigError(f"times must be {x.shape[1]} increasing numbers, one per point")
        few = np.nonzero((~np.isnan(x).all(axis=-1)).sum(axis=1) < 2)[0]
        if len(few):
            raise ConfigError(f"series {few[0]} has fewer than 2 observed points")
        d = self.experiment.data
        return (x - d.mean) / d.std, t

    @torch.no_grad()
    def _logits(self, values: Any, times: Any) -> torch.Tensor:
        exp = self.experiment
        x, t = self._series(values, times)
        feats = exp.features(x, t)
        tt = torch.as_tensor(t, dtype=exp.rt.dtype, device=exp.rt.device)
        bs, out = exp.opts["eval_batch_size"], []
        with self.counting(exp.counter):
            for i in range(0, len(x), bs):
                rows = torch.arange(i, min(i + bs, len(x)), device=exp.rt.device)
                out.append(exp.model({k: v[rows] for k, v in feats.items()}, tt, exp.spec))
        return torch.cat(out)
