"""`odecli classify`: an ODE-Net or a ResNet on handwritten digits, on the shared engine.

The engine trains (cross-entropy on random batches), evaluates on the validation images every
`train.test_freq` iterations and keeps the best state; the test scores the test images at the
run's solver and, for an ODE-Net, at every point of the speed/accuracy dial (dial.py).
`odecli eval RUN solver=... solver.rtol=...` re-runs the same test with another solver.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from odecli.classify import data as data_mod
from odecli.classify import dial as dial_mod
from odecli.classify import schema as schema_mod
from odecli.classify.models import Classifier, n_params
from odecli.classify.trained import TrainedClassifier
from odecli.engine import rundir
from odecli.engine.experiment import Experiment, NumpyBatches
from odecli.engine.figures import confusion
from odecli.engine.schema import refuse_node_values
from odecli.errors import ConfigError
from odecli.numerics import device as device_mod
from odecli.numerics.solve import SolverSpec

log = logging.getLogger("odecli.classify")
TRADEOFF_CSV = "tradeoff.csv"


def check(cfg: DictConfig) -> dict[str, Any]:
    """The checked config, solver and device; `data=mnist` (a value, not the group) gets
    the override that was meant."""
    refuse_node_values(cfg, {"data": "classify_data", "model": "classify_model"})
    settings = schema_mod.check_classify(cfg)
    spec = SolverSpec.from_cfg(cfg.solver, cfg.get("gradient"))
    if settings["train"]["tol_spread"] != 1 and not spec.adaptive:
        raise ConfigError(f"train.tol_spread={settings['train']['tol_spread']:g} scales an "
                          f"adaptive solver's tolerances; solver={spec.method} has none "
                          f"(use train.tol_spread=1)")
    device_mod.setup(cfg.device)
    return settings


def resnet_point(run: str) -> dict[str, Any]:
    """Test accuracy, NFE and time of a ResNet run folder (its metrics.json)."""
    path = Path(run).expanduser() / rundir.METRICS
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"plots.resnet_run: cannot read {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    if m.get("architecture") != "resnet" or "test_accuracy" not in m:
        raise ConfigError(f"plots.resnet_run: {path} is not a finished classify ResNet run")
    return {"accuracy": m["test_accuracy"], "nfe_per_forward": m["nfe_eval"],
            "seconds": m["inference_seconds"], "blocks": m.get("blocks"),
            "n_params": m.get("n_params")}


class ClassifyExperiment(NumpyBatches, Experiment):
    """Cross-entropy on random training batches; the best validation error is kept."""

    command: ClassVar[str] = "classify"
    track_best: ClassVar[bool] = True
    objectives: ClassVar[tuple[str, ...]] = ("test_error", "best_score", "final_loss")
    summary_keys: ClassVar[tuple[str, ...]] = ("test_accuracy",)
    trained_model = TrainedClassifier
    schema = schema_mod.CONFIG
    loss_figure_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("val_loss", "validation loss"),)

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.configure(check(cfg), log)
        s = self.settings
        self.data = d = data_mod.load(s["data"], self.seed)
        self.name, self.citation = d.name, d.citation
        self.x = torch.as_tensor(d.x, dtype=self.rt.dtype, device=self.rt.device)
        self.y = torch.as_tensor(d.y, device=self.rt.device)
        self.model = Classifier(s["model"], tuple(d.x.shape[1:]), d.n_classes).to(
            device=self.rt.device, dtype=self.rt.dtype)
        self.model.set_spec(self.spec)
        self.counter = self.model.counter
        advice = device_mod.gpu_advice(str(cfg.device.name), self.rt, n_params(self.model),
                                       self.opts["batch_size"])
        if advice:
            rundir.notice(log, advice)
        self.rng = np.random.default_rng(self.seed + 1)
        self.steps = 0
        self.train_clock = 0.0
        self._t0 = 0.0
        self._dial: list[dict[str, Any]] | None = None
        self._confusion: np.ndarray | None = None

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        s = check(cfg)
        if s["data"]["name"] == "mnist":
            data_mod.locate_mnist(s["data"])
        else:
            data_mod.load(s["data"], s["seed"])
        if s["plots"]["resnet_run"]:
            resnet_point(s["plots"]["resnet_run"])

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "train_clock": self.train_clock}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.train_clock = float(state.get("train_clock", 0.0))

    # -- training ----------------------------------------------------------------------------
    def shifted(self, xb: torch.Tensor) -> torch.Tensor:
        """Each image moved by up to train.shift pixels each way (zeros shifted in)."""
        s = self.opts["shift"]
        if not s:
            return xb
        h, w = xb.shape[-2:]
        padded = F.pad(xb, (s, s, s, s))
        off = self.rng.integers(0, 2 * s + 1, size=(len(xb), 2))
        return torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(off)])

    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        self._t0 = time.perf_counter()
        train = self.data.train
        pick = self.rng.choice(train, size=min(self.opts["batch_size"], len(train)),
                               replace=False)
        idx = torch.as_tensor(pick, device=self.rt.device)
        self.model.set_spec(self.training_spec())
        try:
            logits = self.model(self.shifted(self.x[idx]))
        finally:
            self.model.set_spec(self.spec)
        target = self.y[idx]
        acc = (logits.detach().argmax(1) == target).float().mean()
        return F.cross_entropy(logits, target), {"train_accuracy": float(acc)}

    def training_spec(self) -> SolverSpec:
        """The solver of this training step: the run's, or with train.tol_spread > 1 its
        tolerances times a factor drawn log-uniformly from [1, tol_spread]. A network
        trained at one tolerance can come to rely on that discretisation (Ott et al. 2021,
        "ResNet After All?"); across a range it must classify well at all of them, and the
        looser solves make training cheaper. Scoring stays at the run's solver."""
        spread = self.opts["tol_spread"]
        if spread == 1 or not self.spec.adaptive or self.settings["model"]["name"] != "odenet":
            return self.spec
        factor = math.exp(self.rng.uniform(0.0, math.log(spread)))
        return dataclasses.replace(self.spec, rtol=self.spec.rtol * factor,
                                   atol=self.spec.atol * factor)

    def end_step(self) -> None:
        self.steps += 1
        self.train_clock += time.perf_counter() - self._t0

    # -- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, rows: np.ndarray, spec: SolverSpec | None = None) -> dict[str, Any]:
        """Accuracy, mean loss, predictions, NFE per forward pass and seconds on these rows."""
        self.model.set_spec(spec or self.spec)
        n0, nb, bs = self.counter.nfe, 0, self.opts["eval_batch_size"]
        preds, loss = [], 0.0
        start = time.perf_counter()
        try:
            for i in range(0, len(rows), bs):
                idx = torch.as_tensor(rows[i:i + bs], device=self.rt.device)
                logits = self.model(self.x[idx])
                loss += float(F.cross_entropy(logits, self.y[idx], reduction="sum"))
                preds.append(logits.argmax(1).cpu().numpy())
                nb += 1
        finally:
            self.model.set_spec(self.spec)
        seconds = time.perf_counter() - start
        pred = np.concatenate(preds)
        return {"accuracy": float((pred == self.data.y[rows]).mean()),
                "loss": loss / len(rows), "pred": pred, "seconds": seconds,
                "nfe_per_forward": (self.counter.nfe - n0) / max(nb, 1)}

    def evaluate(self) -> dict[str, float]:
        s = self.score(self.data.val)
        err = 1.0 - s["accuracy"]
        # ties in the error (a few hundred images) go to the lower validation loss
        return {"val_accuracy": s["accuracy"], "val_error": err, "val_loss": s["loss"],
                "score": err + 1e-4 * s["loss"]}

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        """Test accuracy at the run's solver, the confusion matrix and (ODE-Net) the dial."""
        d, m = self.data, self.settings["model"]
        ref = self.score(d.test)
        self._confusion = np.zeros((d.n_classes, d.n_classes), dtype=np.int64)
        np.add.at(self._confusion, (d.y[d.test], ref["pred"]), 1)
        out: dict[str, Any] = {
            "test_accuracy": ref["accuracy"], "test_error": 1.0 - ref["accuracy"],
            "test_loss": ref["loss"], "architecture": m["name"],
            "n_params": n_params(self.model), "nfe_eval": ref["nfe_per_forward"],
            "inference_seconds": ref["seconds"],
            "n_train": len(d.train), "n_val": len(d.val), "n_test": len(d.test)}
        if m["name"] == "resnet":
            out.update(blocks=m["blocks"], tied=m["tied"])
        if self.steps:
            epochs = self.steps * min(self.opts["batch_size"], len(d.train)) / len(d.train)
            out.update(epochs=epochs, seconds_per_epoch=self.train_clock / epochs)
        dial = self.settings["dial"]
        if dial["enabled"] and m["name"] == "odenet":
            self._dial = dial_mod.sweep(lambda spec: self.score(d.test, spec), self.spec, dial)
            out.update(dial_mod.summary(self._dial, dial["within"]))
        return out

    def write_files(self, run_dir: Path, test: dict[str, Any]) -> None:
        if self._dial is not None:
            dial_mod.write_csv(run_dir / TRADEOFF_CSV, self._dial)

    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        from odecli.classify import plots

        title = f"classify {self.name} {self.settings['model']['name']}"
        if history:
            plots.curves(run_dir / "curves.png", history, title, self.citation)
        if test is None:
            return
        if self._confusion is not None:
            confusion(run_dir / "confusion.png", self._confusion, title, self.citation)
        if self._dial is not None:
            run = self.settings["plots"]["resnet_run"]
            plots.tradeoff(run_dir / "tradeoff.png", self._dial,
                           resnet_point(run) if run else None, title, self.citation)
