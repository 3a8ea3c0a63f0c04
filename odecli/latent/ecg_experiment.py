"""`odecli ecg-vae`: the latent-ODE VAE on real heartbeats as phase-space paths (x, dx/dt).

The model is trained on the same task mix it is tested on: the encoder sees a noisy subset,
a beat with a gap, or its first or last part, and the likelihood scores the whole clean beat,
so predicting unobserved stretches is what it learns. Held out: reconstruction, gap filling
and extrapolation to either side, against a mean beat and a last-value baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from odecli.latent import ecg_data
from odecli.latent import schema as schema_mod
from odecli.latent.masks import edge_mask, gap_mask, random_subset
from odecli.latent.trained import TrainedEcgVAE
from odecli.latent.vae import MaskedBatch, VAEExperiment, mean_score, mse

ECG_TASKS = schema_mod.TASKS  # the order of tasks.weights
TITLES = {
    "reconstruction": "Reconstruction from a noisy, irregularly sampled beat",
    "gap": "Gap filling: a contiguous stretch removed",
    "right": "Extrapolation to the right: first part observed",
    "left": "Extrapolation to the left: last part observed",
}


def task_name(task: str) -> str:
    return {"right": "extrapolation_right", "left": "extrapolation_left"}.get(task, task)


@dataclass
class TaskSet:
    """Deterministic inputs for the four held-out tasks on one set of beats."""

    x: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]  # what the encoder sees
    target: dict[str, np.ndarray]  # where the task is scored


def task_inputs(task: str, clean: np.ndarray, tasks: Mapping[str, Any],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(encoder input, observed mask, scored mask) for one beat and one task."""
    n = clean.shape[0]
    if task == "reconstruction":
        mask = random_subset(n, tasks["obs_fraction"], rng)
        noisy = clean + tasks["noise_std"] * rng.standard_normal(clean.shape)
        return noisy * mask[:, None], mask, np.ones(n, dtype=bool)
    if task == "gap":
        mask = gap_mask(n, tasks["gap_fraction"], rng)
    else:
        mask = edge_mask(n, tasks["extrap_fraction"], task)
    return clean * mask[:, None], mask, ~mask


def make_task_set(paths: np.ndarray, tasks: Mapping[str, Any], seed: int) -> TaskSet:
    """Every beat gets every task, with masks and noise fixed by the seed."""
    rng = np.random.default_rng(seed)
    out = TaskSet({}, {}, {})
    for task in ECG_TASKS:
        rows = [task_inputs(task, beat, tasks, rng) for beat in paths]
        out.x[task] = np.stack([r[0] for r in rows])
        out.mask[task] = np.stack([r[1] for r in rows])
        out.target[task] = np.stack([r[2] for r in rows])
    return out


def mean_beat_baseline(train_paths: np.ndarray, n: int) -> np.ndarray:
    """The mean training beat (windows are R-peak aligned), repeated for n beats."""
    mean = np.asarray(train_paths).mean(axis=0)
    return np.broadcast_to(mean, (n, *mean.shape)).copy()


def last_value_baseline(observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Hold the nearest observed value: forward past the last one, backward before the first.

    Between observations the most recent earlier value is held, so for a prefix this is
    "repeat the last observed value" and for a suffix "repeat the first observed value".
    """
    observed, mask = np.asarray(observed), np.asarray(mask, dtype=bool)
    out = np.empty_like(observed)
    for i in range(observed.shape[0]):
        idx = np.flatnonzero(mask[i])
        if idx.size == 0:
            out[i] = 0.0
            continue
        pos = np.searchsorted(idx, np.arange(mask.shape[1]), side="right") - 1
        out[i] = observed[i, idx[np.clip(pos, 0, None)]]
    return out


class EcgVAE(VAEExperiment):
    command: ClassVar[str] = "ecg-vae"
    summary_keys: ClassVar[tuple[str, ...]] = (
        "reconstruction_mse", "gap_mse", "extrapolation_right_mse", "extrapolation_left_mse")
    trained_model = TrainedEcgVAE
    schema = schema_mod.ECG_VAE
    check_config = staticmethod(schema_mod.check_ecg_vae)

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.beats = beats = ecg_data.load_beats(self.settings["data"])
        # "mitdb/100" for an MIT-BIH record, else the record's own name
        mitdb = beats.citation == ecg_data.LICENSE_NOTICE
        self.name = f"mitdb/{beats.record}" if mitdb else beats.record
        self.citation = beats.citation
        self.tasks = tasks = self.settings["tasks"]
        weights = np.array([tasks["weights"][k] for k in ECG_TASKS], dtype=float)
        self.weights = weights / weights.sum()
        self.train_paths = beats.paths[beats.split["train"]]
        self.val_paths = beats.paths[beats.split["val"]]
        self.test_paths = beats.paths[beats.split["test"]]
        self.build_model()
        span = self.settings["model"]["time_span"]
        self.t = self.tensor(span * (beats.t - beats.t[0]) / (beats.t[-1] - beats.t[0]))
        self.val_set = make_task_set(self.val_paths, tasks, self.seed + 1000)
        self.ones = np.ones(beats.paths.shape[1], dtype=bool)

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """Checks the config and the record: it is located (downloaded into the cache if need
        be) and cut into beats here, so a missing or corrupt record, a wrong lead or a record
        without beats fails before a run folder exists."""
        ecg_data.load_beats(cls.check(cfg)["data"])

    def sample_batch(self) -> MaskedBatch:
        rng, paths = self.rng, self.train_paths
        pick = rng.choice(len(paths), size=min(self.opts["batch_size"], len(paths)),
                          replace=False)
        kinds = rng.choice(len(ECG_TASKS), size=len(pick), p=self.weights)
        rows = [task_inputs(ECG_TASKS[k], paths[i], self.tasks, rng)
                for i, k in zip(pick, kinds, strict=True)]
        return MaskedBatch(x=self.tensor(np.stack([r[0] for r in rows])),
                           mask=self.mask_tensor(np.stack([r[1] for r in rows])),
                           target=self.tensor(paths[pick]),
                           target_mask=self.mask_tensor(
                               np.broadcast_to(self.ones, (len(pick), len(self.ones)))))

    @torch.no_grad()
    def predict(self, x: np.ndarray, mask: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Posterior-mean reconstruction over the whole grid (no sampling), in chunks."""
        self.model.eval()
        out = []
        for i in range(0, len(x), chunk):
            pred, _, _ = self.model(self.tensor(x[i:i + chunk]),
                                    self.mask_tensor(mask[i:i + chunk]), self.t, self.spec,
                                    sample=False)
            out.append(pred.cpu().numpy())
        self.model.train()
        return np.concatenate(out, axis=0).astype(np.float64)

    def task_scores(self, paths: np.ndarray, ts: TaskSet
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        result, preds = {}, {}
        for task in ECG_TASKS:
            preds[task] = self.predict(ts.x[task], ts.mask[task])
            result[f"{task_name(task)}_mse"] = mse(preds[task], paths, ts.target[task])
        return result, preds

    def evaluate(self) -> dict[str, float]:
        result, _ = self.task_scores(self.val_paths, self.val_set)
        result = {f"val_{k}": v for k, v in result.items()}
        result["score"] = mean_score(result)
        return result

    def test(self, last_eval: dict[str, float] | None) -> dict[str, Any]:
        """Held-out beats: every task, and both extrapolations against two baselines."""
        beats, test_paths = self.beats, self.test_paths
        self._test_set = test_set = make_task_set(test_paths, self.tasks, self.seed + 2000)
        held_out, self._test_preds = self.task_scores(test_paths, test_set)
        mean_beat = mean_beat_baseline(self.train_paths, len(test_paths))
        self._baselines: dict[str, dict[str, np.ndarray]] = {}
        comparison: dict[str, Any] = {}
        for task in ("right", "left"):
            name = task_name(task)
            hold = last_value_baseline(test_set.x[task], test_set.mask[task])
            self._baselines[task] = {"mean training beat": mean_beat,
                                     "last observed value": hold}
            target = test_set.target[task]
            mb, lv = mse(mean_beat, test_paths, target), mse(hold, test_paths, target)
            held_out[f"{name}_mean_beat_mse"] = mb
            held_out[f"{name}_last_value_mse"] = lv
            model_mse = held_out[f"{name}_mse"]
            comparison[name] = {
                "beats_mean_beat": model_mse < mb, "beats_last_value": model_mse < lv,
                "ratio_to_mean_beat": model_mse / mb, "ratio_to_last_value": model_mse / lv,
            }
        return {
            **held_out,
            "beats_both_baselines": all(c["beats_mean_beat"] and c["beats_last_value"]
                                        for c in comparison.values()),
            "baseline_comparison": comparison,
            "mse_space": "phase space (x, dx/dt), each channel scaled to [-1, 1] on train",
            "data": {"record": beats.record, "lead": beats.lead, "fs": beats.fs,
                     "signal_length": beats.signal_length, "beats": len(beats.paths),
                     "peaks_from": beats.source,
                     **{f"n_{k}": len(v) for k, v in beats.split.items()}},
        }

    def figures(self, run_dir: Path, history: list[dict[str, Any]],
                test: dict[str, Any] | None) -> None:
        from odecli.latent import plots

        if test is None:
            return
        beats, test_set = self.beats, self._test_set
        show = int(self.cfg.plots.n_examples)
        lo, hi = beats.scale

        def real(a: np.ndarray) -> np.ndarray:
            return ecg_data.unscale_paths(a[:show], lo, hi)

        for task in ECG_TASKS:
            plots.ecg_task_figure(
                run_dir / f"ecg_{task_name(task)}.png", TITLES[task], beats.t,
                real(self.test_paths), real(test_set.x[task]), test_set.mask[task][:show],
                real(self._test_preds[task]),
                {k: real(v) for k, v in self._baselines.get(task, {}).items()},
                self.citation or "")
