"""A trained model outside the engine: what `odecli.run` returns and `odecli.load` rebuilds.

Each family subclasses `TrainedModel` with its own methods (`predict`, `sample`, ...); they
take numpy arrays, lists or torch tensors and return numpy arrays, and run with the solver
the run was trained with unless told otherwise. `evaluate()` is `odecli eval`'s test of the
same model, so numbers from Python and from the shell agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odecli.errors import ConfigError
from odecli.numerics.solve import SolverSpec


class TrainedModel:
    """A trained experiment with its reported model loaded (the best state where a run
    keeps one). Attributes: `run_dir`, `command`, `experiment` (the family's Experiment,
    for what the methods do not cover), `last_nfe` (function evaluations of the last call).
    """

    def __init__(self, experiment: Any, run_dir: Path) -> None:
        self.experiment = experiment
        self.run_dir = Path(run_dir)
        self.command: str = experiment.command
        self.last_nfe = 0

    def __repr__(self) -> str:
        return (f"<odecli {self.command} model {self.experiment.name!r} from {self.run_dir}, "
                f"solver {self.spec.method}>")

    # -- what every model has ------------------------------------------------------------
    @property
    def spec(self) -> SolverSpec:
        """The solver and gradient mode calls use (the run's, or the loading overrides')."""
        return self.experiment.spec

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved config as plain values."""
        from omegaconf import OmegaConf

        return OmegaConf.to_container(self.experiment.cfg, resolve=True)  # type: ignore

    @property
    def metrics(self) -> dict[str, Any] | None:
        """The run's metrics.json (None while a run has none, e.g. one that was killed)."""
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """The test metrics `odecli eval` computes for this model (nothing is written)."""
        return self.experiment.test(None)

    # -- helpers for the families --------------------------------------------------------
    @staticmethod
    def array(value: Any, name: str, dims: tuple[int, ...] | None = None) -> np.ndarray:
        """A numpy array, list or tensor as float64 numpy; `dims`: the numbers of dimensions
        accepted (a one-line error otherwise, as for NaN or infinite values)."""
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        try:
            out = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be an array of numbers: {exc}") from None
        if dims is not None and out.ndim not in dims:
            shapes = " or ".join(f"{d}-D" for d in dims)
            raise ConfigError(f"{name} must be {shapes}, got shape {tuple(out.shape)}")
        if not np.isfinite(out).all():
            raise ConfigError(f"{name} holds NaN or infinite values")
        return out

    def tensor(self, value: Any, name: str, dims: tuple[int, ...] | None = None
               ) -> torch.Tensor:
        """`array()` as a tensor on the model's device and dtype."""
        rt = self.experiment.rt
        return torch.as_tensor(self.array(value, name, dims)).to(device=rt.device,
                                                                 dtype=rt.dtype)

    @staticmethod
    def numpy(value: torch.Tensor) -> np.ndarray:
        return value.detach().double().cpu().numpy()

    @contextmanager
    def counting(self, counter: Any) -> Iterator[None]:
        """Set `last_nfe` to the evaluations `counter` (a CountingField) made inside."""
        n0 = counter.nfe
        try:
            yield
        finally:
            self.last_nfe = counter.nfe - n0

    def solver(self, method: str | None = None, rtol: float | None = None,
               atol: float | None = None, steps: int | None = None) -> SolverSpec:
        """The model's solver with some settings changed (the speed/accuracy dial): another
        method (its own defaults from configs/solver/), tolerances, or `steps` fixed steps
        per unit time; checked like a config."""
        base = self.spec
        if method is None and rtol is None and atol is None and steps is None:
            return base
        node: dict[str, Any] = {"method": method or base.method}
        if method is None or method == base.method:
            node.update(rtol=base.rtol, atol=base.atol, step_size=base.step_size,
                        options=base.options)
        if rtol is not None:
            node["rtol"] = rtol
        if atol is not None:
            node["atol"] = atol
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ConfigError(f"steps must be a positive integer, got {steps!r}")
            node["step_size"] = 1.0 / steps
        node.update(fast=base.fast, compile=False)
        return SolverSpec.from_cfg(node, {"name": base.gradient})
