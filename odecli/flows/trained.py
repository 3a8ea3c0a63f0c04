"""A trained continuous normalizing flow from Python: samples and exact log-densities."""

from __future__ import annotations

from typing import Any

import numpy as np

from odecli.engine.trained import TrainedModel
from odecli.errors import ConfigError

# The most points one call draws or scores at once; bigger requests go in chunks of this.
CHUNK = 100_000


class TrainedFlow(TrainedModel):
    """The flow an `odecli cnf` run fitted (its best validation state).

    >>> import odecli
    >>> run = odecli.run("cnf", ["train.niters=2", "quiet=true", "plots.enabled=false",
    ...                          "data.n_train=200", "data.n_val=100", "data.n_test=100",
    ...                          "train.batch_size=100"])
    >>> run.model.sample(5, seed=1).shape
    (5, 2)
    >>> run.model.log_prob([[0.0, 0.0], [1.0, -1.0]]).shape
    (2,)
    """

    def sample(self, n: int, seed: int = 0, solver: str | None = None,
               rtol: float | None = None, atol: float | None = None) -> np.ndarray:
        """`n` points from the model, (n, 2): base draws (seeded) carried back to the data
        (as `odecli sample RUN --n N --seed S` does)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        exp = self.experiment
        spec, old = self.solver(solver, rtol, atol), exp.spec
        exp.spec = spec
        try:
            with self.counting(exp.eval_counter):
                return np.concatenate(list(exp.sample_chunks(n, seed)))
        finally:
            exp.spec = old

    def log_prob(self, x: Any, solver: str | None = None, rtol: float | None = None,
                 atol: float | None = None) -> np.ndarray:
        """Exact-trace log-density (nats) of each point of `x` ((n, 2)): (n,)."""
        xt = self.tensor(x, "x", dims=(2,))
        if xt.shape[-1] != 2:
            raise ConfigError(f"x must have 2 columns (x, y), got {xt.shape[-1]}")
        exp = self.experiment
        spec, old = self.solver(solver, rtol, atol), exp.spec
        exp.spec = spec
        out, nfe = [], 0
        try:
            for i in range(0, len(xt), CHUNK):
                logp, used = exp.log_density(xt[i:i + CHUNK])
                out.append(logp)
                nfe += used
        finally:
            exp.spec = old
        self.last_nfe = nfe
        return np.concatenate(out)
