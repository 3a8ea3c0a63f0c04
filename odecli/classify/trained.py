"""A trained image classifier from Python, with the ODE-Net's speed/accuracy dial."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from odecli.engine.trained import TrainedModel
from odecli.errors import ConfigError


class TrainedClassifier(TrainedModel):
    """The ODE-Net (or ResNet) an `odecli classify` run trained (its best validation state).

    Images are arrays shaped like the training data's (`image_shape`, e.g. (1, 8, 8) for
    the digits), or without the channel axis, or flattened; pixels scaled as in training
    (the digits: scikit-learn's values / 16, MNIST: / 255). An ODE-Net's solver is a dial:
    a looser `rtol` or fewer fixed `steps` costs fewer function evaluations (`last_nfe`
    after each call, per forward pass of a batch).

    >>> import odecli
    >>> run = odecli.run("classify", ["train.niters=2", "quiet=true", "dial.enabled=false",
    ...                               "plots.enabled=false"])
    >>> from sklearn.datasets import load_digits
    >>> images = load_digits().images[:5] / 16.0
    >>> run.model.predict(images).shape, run.model.predict_proba(images).shape
    ((5,), (5, 10))
    >>> run.model.predict(images, solver="rk4", steps=2).shape
    (5,)
    """

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(channels, height, width) of one image."""
        return tuple(self.experiment.data.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(self.experiment.data.n_classes)

    def predict_proba(self, images: Any, solver: str | None = None, rtol: float | None = None,
                      atol: float | None = None, steps: int | None = None) -> np.ndarray:
        """Class probabilities, (n, n_classes), at the run's solver unless changed."""
        logits = self._logits(images, solver, rtol, atol, steps)
        return self.numpy(torch.softmax(logits.double(), dim=1))

    def predict(self, images: Any, solver: str | None = None, rtol: float | None = None,
                atol: float | None = None, steps: int | None = None) -> np.ndarray:
        """Predicted labels, (n,)."""
        return self.numpy(self._logits(images, solver, rtol, atol, steps).argmax(1)
                          ).astype(np.int64)

    @torch.no_grad()
    def _logits(self, images: Any, solver: str | None, rtol: float | None,
                atol: float | None, steps: int | None) -> torch.Tensor:
        exp = self.experiment
        x = self.tensor(images, "images")
        shape = self.image_shape
        if x.dim() >= 1 and tuple(x.shape[1:]) != shape:
            if x.dim() >= 2 and math.prod(x.shape[1:]) == math.prod(shape):
                x = x.reshape(len(x), *shape)
            else:
                raise ConfigError(f"images must be shaped (n, {', '.join(map(str, shape))}) "
                                  f"(or flattened), got {tuple(x.shape)}")
        spec = self.solver(solver, rtol, atol, steps)
        exp.model.set_spec(spec)
        bs, out, n0, batches = exp.opts["eval_batch_size"], [], exp.counter.nfe, 0
        try:
            for i in range(0, len(x), bs):
                out.append(exp.model(x[i:i + bs]))
                batches += 1
        finally:
            exp.model.set_spec(exp.spec)
        self.last_nfe = (exp.counter.nfe - n0) // max(batches, 1)
        return torch.cat(out)
