"""A learned vector field from Python: trajectories from any initial states, the field itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from odecli.engine.trained import TrainedModel
from odecli.errors import ConfigError


class TrainedSystem(TrainedModel):
    """The field an `odecli train` run learned.

    >>> import odecli
    >>> run = odecli.run("train", ["system=lotka", "train.niters=20", "quiet=true",
    ...                            "plots.enabled=false"])
    >>> run.model.predict([[1.0, 1.0], [2.0, 1.0]], [0.0, 0.5, 1.0]).shape
    (3, 2, 2)
    >>> run.model.f(0.0, [1.0, 1.0]).shape
    (2,)
    """

    @property
    def dim(self) -> int:
        """How many state variables the system has."""
        return int(self.experiment.system.dim)

    @property
    def times(self) -> np.ndarray:
        """The run's time grid: the training span, then the extrapolation window."""
        return self.numpy(self.experiment.t_full)

    @property
    def truth(self) -> np.ndarray:
        """The true trajectory on `times`, (len(times), dim)."""
        return self.numpy(self.experiment.truth)

    def predict(self, y0: Any, t: Any, solver: str | None = None, rtol: float | None = None,
                atol: float | None = None, steps: int | None = None) -> np.ndarray:
        """Trajectories of the learned field from initial states `y0` ((n, dim), or one
        state (dim,)) at the increasing times `t`: (len(t), n, dim), or (len(t), dim) for one
        state. The run's solver unless `solver`/`rtol`/`atol`/`steps` change it (`steps`:
        fixed steps per unit of time, for a fixed-step `solver` such as rk4)."""
        y = self.tensor(y0, "y0", dims=(1, 2))
        single = y.dim() == 1
        y = y.reshape(-1, y.shape[-1])
        self._check_dim(y, "y0")
        tt = self.tensor(t, "t", dims=(1,))
        if len(tt) < 2 or not bool((tt[1:] > tt[:-1]).all()):
            raise ConfigError("t must hold at least two strictly increasing times")
        spec = self.solver(solver, rtol, atol, steps)
        with self.counting(self.experiment.counter):
            out = self.experiment.rollout(y, tt, spec)
        path = self.numpy(out)
        return path[:, 0] if single else path

    def f(self, t: float, y: Any) -> np.ndarray:
        """The learned field dy/dt at time `t` and states `y` ((n, dim), or (dim,))."""
        yy = self.tensor(y, "y", dims=(1, 2))
        single = yy.dim() == 1
        yy = yy.reshape(-1, yy.shape[-1])
        self._check_dim(yy, "y")
        out = self.numpy(self.experiment.velocity(float(t), yy))
        return out[0] if single else out

    def recover(self, degree: int | None = None, threshold: float | None = None,
                refit: bool = True) -> Any:
        """Equations back from the learned field (PySINDy; `pip install odecli[recover]`):
        a sparse polynomial fit of the field at the data's states (under model.known, of
        the network's part alone), its kept coefficients then refitted to the observed
        trajectories (`refit=False`: not), as `odecli recover` makes it: `.equations()`,
        `.summary()` (recover.json's content), `.figure(path)`."""
        from odecli.dynamics import recover, recovery

        return recovery.Recovery(
            self.experiment, recover.DEFAULT_DEGREE if degree is None else degree,
            recover.DEFAULT_THRESHOLD if threshold is None else threshold, refit)

    def _check_dim(self, y: Any, name: str) -> None:
        if y.shape[-1] != self.dim:
            raise ConfigError(f"{name} must have {self.dim} values per state (the system's "
                              f"variables), got {y.shape[-1]}")


class TrainedDataSystem(TrainedSystem):
    """The field an `odecli train system=file` run (or a shipped dataset's) learned, in the
    file's own units: states and times as the file writes them.

    >>> import odecli
    >>> run = odecli.run("train", ["system=hare_lynx", "train.niters=5", "quiet=true",
    ...                            "plots.enabled=false"])
    >>> m = run.model
    >>> m.variables
    ['hare', 'lynx']
    >>> m.predict([30.0, 4.0], [1900.0, 1901.0, 1902.5]).shape
    (3, 2)
    """

    @property
    def dim(self) -> int:
        return int(self.experiment.dim)

    @property
    def variables(self) -> list[str]:
        return list(self.experiment.variables)

    @property
    def trajectories(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The file's trajectories: name -> (times, states), NaN where a cell is missing."""
        return {str(tr.name): (np.asarray(tr.t), np.asarray(tr.y))
                for tr in self.experiment.table.trajectories}

    @property
    def times(self) -> np.ndarray:
        raise AttributeError("a data file has one time grid per trajectory: see trajectories")

    @property
    def truth(self) -> np.ndarray:
        raise AttributeError("a data file's true trajectory is unknown: see trajectories")

    def predict(self, y0: Any, t: Any, solver: str | None = None, rtol: float | None = None,
                atol: float | None = None, steps: int | None = None) -> np.ndarray:
        """Trajectories from states `y0` (file units; (n, dim) or (dim,)) at `t[0]`, at the
        increasing times `t`: (len(t), n, dim), or (len(t), dim) for one state."""
        from odecli.dynamics import tabular

        y = self.array(y0, "y0", dims=(1, 2))
        single = y.ndim == 1
        y = y.reshape(-1, y.shape[-1])
        self._check_dim(y, "y0")
        tt = self.array(t, "t", dims=(1,))
        if len(tt) < 2 or not bool((tt[1:] > tt[:-1]).all()):
            raise ConfigError("t must hold at least two strictly increasing times")
        exp = self.experiment
        parts = [tabular.Part("predict", tt, np.zeros((len(tt), self.dim)), float(tt[0]), s,
                              True) for s in y]
        spec, old = self.solver(solver, rtol, atol, steps), exp.spec
        exp.spec = spec
        try:
            paths, self.last_nfe = exp.rollout_parts(parts)
        finally:
            exp.spec = old
        out = np.stack(paths, axis=1)
        return out[:, 0] if single else out

    def f(self, t: float, y: Any) -> np.ndarray:
        """The learned field dy/dt (file units per file time unit) at states `y`."""
        yy = self.array(y, "y", dims=(1, 2))
        single = yy.ndim == 1
        yy = yy.reshape(-1, yy.shape[-1])
        self._check_dim(yy, "y")
        out = np.asarray(self.experiment.field_in_data_units(yy, float(t)))
        return out[0] if single else out
