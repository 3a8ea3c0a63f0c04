"""`odecli cnf`: a continuous normalizing flow fitted by maximum likelihood to a 2-D toy
density, scored against the true density and two baselines on a fixed test sample.

Training minimises the batch NLL (plus RNODE's weighted kinetic-energy and Jacobian-norm
integrals when `reg.*` > 0) with the run's trace estimator; validation, test, heat map and
`odecli eval` always use the exact trace, so a Hutchinson-trained model is scored exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from odecli.engine import rundir
from odecli.engine.experiment import Experiment
from odecli.flows import schema as schema_mod
from odecli.flows import toy
from odecli.flows.model import (
    CNFDynamics,
    Field,
    flow_back,
    log_likelihood,
    sample_noise,
)
from odecli.flows.schema import check_cnf
from odecli.flows.trained import TrainedFlow
from odecli.numerics import device as device_mod
from odecli.numerics.solve import CountingField, SolverSpec, check_finite

# Points per solve when sampling: bounded memory for any count; a multiple of 16, so torch's
# chunked normal draws equal one draw of them all.
SAMPLE_CHUNK = 65536

log = logging.getLogger("odecli.cnf")
LN2 = math.log(2.0)


class CNFExperiment(Experiment):
    """One toy density, one field; the state with the best validation NLL is reported."""

    command: ClassVar[str] = "cnf"
    track_best: ClassVar[bool] = True
    objectives: ClassVar[tuple[str, ...]] = ("val_nll", "test_nll", "final_loss")
    loss_figure_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("val_nll", "validation NLL (nats)"),)
    summary_keys: ClassVar[tuple[str, ...]] = ("test_nll", "nll_gap")
    trained_model = TrainedFlow
    schema = schema_mod.CONFIG

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.configure(check_cnf(cfg), log)  # numpy draws the data: seeding order is free
        s = self.settings
        self.data = toy.make_data(s["data"], self.seed)
        self.name = self.data.name
        m = s["model"]
        self.T = m["time_length"]
        self.field = Field(2, m["width"], m["depth"], m["activation"], m["time_input"]).to(
            self.rt.device, self.rt.dtype)
        self.weights = (s["reg"]["kinetic"], s["reg"]["jacobian"])
        self.dyn = CNFDynamics(self.field, m["trace"], regularise=any(self.weights))
        self.counter = CountingField(self.dyn)
        # Held-out scoring: exact trace, no regularisers, its own NFE count.
        self.eval_counter = CountingField(CNFDynamics(self.field, "exact", False))
        self.rng = np.random.default_rng(self.seed + 1)
        self.train_x = self.tensor(self.data.train)
        advice = device_mod.gpu_advice(str(cfg.device.name), self.rt,
                                       sum(p.numel() for p in self.field.parameters()),
                                       self.opts["batch_size"])
        if advice:
            rundir.notice(log, advice)
        self._baselines: dict[str, Any] | None = None

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        check_cnf(cfg)
        SolverSpec.from_cfg(cfg.solver, cfg.gradient)
        device_mod.setup(cfg.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"field": self.field}

    def rng_state(self) -> dict[str, Any]:
        return {"batches": self.rng.bit_generator.state}

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["batches"]

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=self.rt.dtype, device=self.rt.device)

    # -- training --------------------------------------------------------------------------
    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(self.data.train)
        idx = self.rng.choice(n, size=self.opts["batch_size"], replace=False)
        x = self.train_x[torch.as_tensor(idx, device=self.rt.device)]
        if self.dyn.trace == "hutchinson":
            self.dyn.noise = sample_noise(self.settings["model"]["noise"], x)
        logp, kinetic, jac = log_likelihood(self.counter, self.dyn, x, self.T, self.spec)
        nll = -logp.mean()
        extras = {"nll": float(nll.detach())}
        loss = nll
        if kinetic is not None and jac is not None:
            loss = loss + self.weights[0] * kinetic.mean() + self.weights[1] * jac.mean()
            extras.update(kinetic=float(kinetic.detach().mean()),
                          jacobian=float(jac.detach().mean()))
        return loss, extras

    def end_step(self) -> None:
        self.dyn.noise = None

    # -- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def log_density(self, x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, int]:
        """Exact-trace log p(x) under the model, and the NFE of that one solve."""
        xt = x if isinstance(x, torch.Tensor) else self.tensor(x)
        self.eval_counter.abort = self.counter.abort
        n0 = self.eval_counter.nfe
        logp, _, _ = log_likelihood(self.eval_counter, self.eval_counter.func, xt, self.T,
                                    self.spec, grad=False)
        return logp.double().cpu().numpy(), self.eval_counter.nfe - n0

    def nll(self, x: np.ndarray) -> tuple[float, int]:
        logp, nfe = self.log_density(x)
        value = float(-logp.mean())
        check_finite(torch.tensor(value), "held-out NLL")
        return value, nfe

    def evaluate(self) -> dict[str, float]:
        val, nfe = self.nll(self.data.val)
        return {"val_nll": val, "score": val, "val_nfe": float(nfe)}

    def baselines(self) -> dict[str, Any]:
        """What any model is measured against on this test sample (computed once)."""
        if self._baselines is None:
            d = self.data
            kde, bandwidth = toy.kde_nll(d.train, d.val, d.test)
            true = toy.true_nll(d.name, d.test)
            self._baselines = {"true_nll": true, "gaussian_nll": toy.gaussian_nll(d.train,
                                                                                  d.test),
                               "kde_nll": kde, "kde_bandwidth": bandwidth}
        return dict(self._baselines)

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        """Test NLL (nats, bits per dimension) against the true NLL and the baselines."""
        d = self.data
        test_nll, nfe = self.nll(d.test)
        val = last_eval["val_nll"] if last_eval else self.nll(d.val)[0]
        base = self.baselines()
        out: dict[str, Any] = {
            "test_nll": test_nll, "test_bpd": test_nll / (2 * LN2), "val_nll": val, **base,
            "nll_gap": None if base["true_nll"] is None else test_nll - base["true_nll"],
            "beats_kde": test_nll < base["kde_nll"],
            "beats_gaussian": test_nll < base["gaussian_nll"],
            "nfe_eval": float(nfe), "trace": self.dyn.trace,
            "reg_kinetic": self.weights[0], "reg_jacobian": self.weights[1],
            "n_train": len(d.train), "n_val": len(d.val), "n_test": len(d.test)}
        return out

    # -- sampling and figures --------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, n_times: int = 2) -> np.ndarray:
        """Model samples: base draws carried from t=T back to the data at t=0; with
        n_times > 2, the whole path at evenly spaced times, shape (n_times, n, 2)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, 2, generator=gen, dtype=torch.float64).to(self.rt.device,
                                                                     self.rt.dtype)
        times = torch.linspace(self.T, 0.0, n_times, dtype=self.rt.dtype,
                               device=self.rt.device)
        path = flow_back(self.eval_counter, z, times, self.spec)
        out = path.double().cpu().numpy()
        return out[-1] if n_times == 2 else out

    def sample_chunks(self, n: int, seed: int, chunk: int = SAMPLE_CHUNK
                      ) -> Iterator[np.ndarray]:
        """`n` model samples as (<= chunk, 2) arrays, in bounded memory (`odecli sample`
        streams them to a file): one seeded generator draws the base points chunk by chunk,
        so the draws are those of a single (n, 2) draw (chunk is a multiple of 16)."""
        gen = torch.Generator().manual_seed(seed)
        times = torch.tensor([self.T, 0.0], dtype=self.rt.dtype, device=self.rt.device)
        for start in range(0, n, chunk):
            z = torch.randn(min(chunk, n - start), 2, generator=gen, dtype=torch.float64)
            z = z.to(self.rt.device, self.rt.dtype)
            yield flow_back(self.eval_counter, z, times, self.spec)[-1].double().cpu().numpy()

    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        from odecli.flows import plots

        if test is None:
            return
        p = self.cfg.plots
        extent, grid = float(p.extent), int(p.grid)
        axis = np.linspace(-extent, extent, grid)
        xx, yy = np.meshgrid(axis, axis)
        logp, _ = self.log_density(np.stack([xx.ravel(), yy.ravel()], 1))
        n = int(p.n_samples)
        frames = int(p.n_frames)
        gif = bool(p.gif)
        path = self.sample(n, self.seed + 2, n_times=(4 * frames if gif else frames))
        title = f"{self.name}: test NLL {test['test_nll']:.3f} nats"
        if test.get("true_nll") is not None:
            title += f" (true {test['true_nll']:.3f})"
        plots.density_figure(run_dir / "cnf_density.png", self.data.test[:n],
                             np.exp(logp).reshape(grid, grid), path[-1], extent, title)
        times = np.linspace(self.T, 0.0, len(path))
        step = max(1, (len(path) - 1) // (frames - 1)) if gif else 1
        pick = list(range(0, len(path), step))[: frames - 1] + [len(path) - 1]
        plots.flow_strip(run_dir / "cnf_flow.png", path[pick], times[pick], extent,
                         self.name)
        if gif:
            plots.flow_gif(run_dir / "flow.gif", path, times, extent, self.name)
