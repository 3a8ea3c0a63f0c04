"""`odecli cde`: a neural CDE (or a baseline) classifying irregular, partly missing series.

The engine trains (cross-entropy on random batches of training series), evaluates on the
validation series every `train.test_freq` iterations (the best state is kept with
train.keep=best; the default tests the final one); the test scores the test series:
accuracy, per-class accuracy and the confusion matrix. The data's protocol (points dropped,
channels, the re-split) is odecli.cde.data; the models odecli.cde.models.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from odecli.cde import data as data_mod
from odecli.cde import models
from odecli.cde import schema as schema_mod
from odecli.cde.trained import TrainedCDE
from odecli.engine import rundir
from odecli.engine.experiment import Experiment, NumpyBatches
from odecli.engine.figures import confusion
from odecli.engine.schema import refuse_node_values
from odecli.numerics import device as device_mod
from odecli.numerics.solve import SolverSpec

log = logging.getLogger("odecli.cde")
PER_CLASS_CSV = "per_class.csv"


def check(cfg: DictConfig) -> dict[str, Any]:
    """The checked config, solver and device; `data=spirals` (a value, not the group) gets
    the override that was meant."""
    refuse_node_values(cfg, {"data": "cde_data", "model": "cde_model"})
    settings = schema_mod.check_cde(cfg)
    SolverSpec.from_cfg(cfg.solver, cfg.get("gradient"))
    device_mod.setup(cfg.device)
    return settings


def per_class(confusion: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Test series, correct and accuracy per class (rows of the confusion matrix: the true
    class). A class without test series has no accuracy (None: empty in the CSV, null in
    metrics.json), not 0."""
    rows = []
    for k, name in enumerate(classes):
        n = int(confusion[k].sum())
        correct = int(confusion[k, k])
        rows.append({"class": name, "n": n, "correct": correct,
                     "accuracy": correct / n if n else None})
    return rows


class CDEExperiment(NumpyBatches, Experiment):
    """Cross-entropy on random training batches; the final state is tested (train.keep=last)
    or the one with the best validation error."""

    command: ClassVar[str] = "cde"
    track_best: ClassVar[bool] = True
    objectives: ClassVar[tuple[str, ...]] = ("test_error", "best_score", "final_loss")
    summary_keys: ClassVar[tuple[str, ...]] = ("test_accuracy",)
    progress_metric: ClassVar[tuple[str, str]] = ("val_accuracy", "val_acc")
    trained_model = TrainedCDE
    schema = schema_mod.CONFIG
    loss_figure_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("val_loss", "validation loss"),)

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.configure(check(cfg), log)
        self.restore_best = self.opts["keep"] == "best"
        s, rt = self.settings, self.rt
        self.data = d = data_mod.load(s["data"], self.seed)
        self.name, self.citation = d.name, d.citation
        self.t_scale = max(float(d.t[-1] - d.t[0]), 1.0)
        self.t = torch.as_tensor(d.t, dtype=rt.dtype, device=rt.device)
        self.y = torch.as_tensor(d.y, device=rt.device)
        self.model = models.build(s["model"], self.channels, d.n_classes).to(
            device=rt.device, dtype=rt.dtype)
        self.counter = self.model.counter
        self.feats = self.features(d.x)
        if "row" in self.feats:  # the 1-NN: training series, each never its own neighbour
            self.feats["row"] = torch.arange(len(d.y), device=rt.device)
            rows = torch.as_tensor(d.train, device=rt.device)
            self.model.remember({k: v[rows] for k, v in self.feats.items()}, self.y[rows],
                                rows)
        # train.ema: `net` is trained; `model`, its exponential moving average, is scored
        self.net = self.model
        if self.opts["ema"]:
            self.model = copy.deepcopy(self.net).requires_grad_(False)
        self.rng = np.random.default_rng(self.seed + 1)
        self.steps = 0
        self.train_clock = 0.0
        self._t0 = 0.0
        self._confusion: np.ndarray | None = None
        self._per_class: list[dict[str, Any]] = []

    @property
    def channels(self) -> int:
        d = self.settings["data"]
        return self.data.x.shape[-1] + int(d["time_channel"]) + int(d["mask_channel"])

    def features(self, x: np.ndarray, t: np.ndarray | None = None) -> models.Feats:
        """The model's per-series tensors of standardised values x (N, L, D), NaN missing."""
        d, rt = self.settings["data"], self.rt
        t = self.data.t if t is None else t
        path = data_mod.path_channels(x, t, self.t_scale, d["time_channel"], d["mask_channel"])
        as_t = {"dtype": rt.dtype, "device": rt.device}
        return self.model.features(torch.as_tensor(path, **as_t), torch.as_tensor(x, **as_t),
                                   torch.as_tensor(t, **as_t))

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        s = check(cfg)
        models.torchcde()
        data_mod.load(s["data"], s["seed"])

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "net": self.net} if self.opts["ema"] else {
            "model": self.model}

    def extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "train_clock": self.train_clock}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.train_clock = float(state.get("train_clock", 0.0))

    # -- training ----------------------------------------------------------------------------
    def logits(self, feats: models.Feats, rows: torch.Tensor,
               spec: SolverSpec | None = None, train: bool = False) -> torch.Tensor:
        model = self.net if train else self.model
        return model({k: v[rows] for k, v in feats.items()}, self.t, spec or self.spec)

    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        self._t0 = time.perf_counter()
        train = self.data.train
        pick = self.rng.choice(train, size=min(self.opts["batch_size"], len(train)),
                               replace=False)
        idx = torch.as_tensor(pick, device=self.rt.device)
        if self.opts["augment_drop"] or self.opts["noise"]:
            x = self.data.x[pick]
            if self.opts["augment_drop"]:
                x = data_mod.thin(x, self.opts["augment_drop"], self.rng)
            if self.opts["noise"]:  # NaN (missing) stays NaN
                x = x + self.opts["noise"] * self.rng.standard_normal(x.shape)
            feats = self.features(x)
            if "row" in feats:
                feats["row"] = idx
            logits = self.logits(feats, torch.arange(len(pick), device=self.rt.device),
                                 train=True)
        else:
            logits = self.logits(self.feats, idx, train=True)
        target = self.y[idx]
        acc = (logits.detach().argmax(1) == target).float().mean()
        loss = F.cross_entropy(logits, target, label_smoothing=self.opts["label_smoothing"])
        return loss, {"train_accuracy": float(acc)}

    def end_step(self) -> None:
        if self.opts["ema"]:
            with torch.no_grad():
                for avg, p in zip(self.model.parameters(), self.net.parameters(), strict=True):
                    avg.lerp_(p, 1.0 - self.opts["ema"])
        self.steps += 1
        self.train_clock += time.perf_counter() - self._t0

    # -- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, rows: np.ndarray, spec: SolverSpec | None = None) -> dict[str, Any]:
        """Accuracy, mean loss, predictions, NFE per forward pass and seconds on these rows."""
        counter = self.model.counter
        n0, nb, bs = counter.nfe, 0, self.opts["eval_batch_size"]
        preds, loss = [], 0.0
        start = time.perf_counter()
        for i in range(0, len(rows), bs):
            idx = torch.as_tensor(rows[i:i + bs], device=self.rt.device)
            logits = self.logits(self.feats, idx, spec)
            loss += float(F.cross_entropy(logits, self.y[idx], reduction="sum"))
            preds.append(logits.argmax(1).cpu().numpy())
            nb += 1
        pred = np.concatenate(preds)
        return {"accuracy": float((pred == self.data.y[rows]).mean()),
                "loss": loss / len(rows), "pred": pred,
                "seconds": time.perf_counter() - start,
                "nfe_per_forward": (counter.nfe - n0) / max(nb, 1)}

    def evaluate(self) -> dict[str, float]:
        s = self.score(self.data.val)
        err = 1.0 - s["accuracy"]
        # ties in the error (a hundred series) go to the lower validation loss
        return {"val_accuracy": s["accuracy"], "val_error": err, "val_loss": s["loss"],
                "score": err + 1e-4 * min(s["loss"], 100.0)}

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        """Test accuracy, per-class accuracy and the confusion matrix."""
        d, s = self.data, self.settings
        ref = self.score(d.test)
        truth = d.y[d.test]
        self._confusion = np.zeros((d.n_classes, d.n_classes), dtype=np.int64)
        np.add.at(self._confusion, (truth, ref["pred"]), 1)
        self._per_class = per_class(self._confusion, d.classes)
        out: dict[str, Any] = {
            "test_accuracy": ref["accuracy"], "test_error": 1.0 - ref["accuracy"],
            "test_loss": ref["loss"], "model": s["model"]["name"],
            "per_class_accuracy": {r["class"]: r["accuracy"] for r in self._per_class},
            "n_params": models.n_params(self.model), "nfe_eval": ref["nfe_per_forward"],
            "inference_seconds": ref["seconds"], "drop": s["data"]["drop"],
            "points_kept": float(d.kept.mean()), "channels": self.channels,
            "n_train": len(d.train), "n_val": len(d.val), "n_test": len(d.test)}
        if s["model"]["name"] == "cde":
            out["interpolation"] = s["model"]["interpolation"]
        if self.steps:
            epochs = self.steps * min(self.opts["batch_size"], len(d.train)) / len(d.train)
            out.update(epochs=epochs, seconds_per_epoch=self.train_clock / epochs)
        return out

    def write_files(self, run_dir: Path, test: dict[str, Any]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["class", "n", "correct", "accuracy"])
        w.writeheader()
        w.writerows(self._per_class)
        rundir.atomic_write_bytes(run_dir / PER_CLASS_CSV, buf.getvalue().encode())

    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        from odecli.cde import plots

        drop = self.settings["data"]["drop"]
        title = f"cde {self.name} {self.settings['model']['name']}, drop {drop:g}"
        if history:
            plots.curves(run_dir / "curves.png", history, title, self.citation)
        if test is not None and self._confusion is not None:
            confusion(run_dir / "confusion.png", self._confusion, title, self.citation,
                      self.data.classes)
