"""Experiment trackers beside the run folder: TensorBoard event files and MLflow runs.

The run folder stays the source of truth; a tracker only mirrors it (the config, every
evaluation row, the final metrics and figures). A tracker that fails (missing package,
unwritable store, server down) prints one warning line and is dropped: it never stops a run.
`cfg.logger` holds one node per chosen tracker (`logger=tensorboard`,
`logger=[tensorboard,mlflow]`); `logger=none` (the default) writes only the run folder.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from odecli.engine import rundir
from odecli.engine.checkpoint import flatten

log = logging.getLogger("odecli.engine")


def _numbers(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iteration"}


class TensorBoard:
    """Event files in <run>/tensorboard: scalars per evaluation, figures and config at the
    end (`tensorboard --logdir outputs` shows every run)."""

    def __init__(self, node: Mapping[str, Any], cfg: Any, run_dir: Path, command: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / str(node["log_dir"])))
        self.figures = bool(node["figures"])
        self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "```")

    def evaluation(self, step: int, row: Mapping[str, Any]) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, run_dir: Path, metrics: Mapping[str, Any]) -> None:
        if self.figures:
            import numpy as np
            from PIL import Image

            for png in sorted(run_dir.glob("*.png")):
                image = np.asarray(Image.open(png).convert("RGB"))
                self.writer.add_image(f"figures/{png.stem}", image, dataformats="HWC")
        self.writer.add_text("metrics", "```\n" + str(dict(metrics)) + "\n```")
        self.writer.close()


class MLflow:
    """One MLflow run per odecli run: params = the flattened config, metrics per evaluation,
    metrics.json, the config and the figures as artifacts. Store: logger.mlflow.tracking_uri,
    else $MLFLOW_TRACKING_URI, else sqlite in the outputs folder (`mlflow ui
    --backend-store-uri sqlite:///outputs/mlflow.db`)."""

    def __init__(self, node: Mapping[str, Any], cfg: Any, run_dir: Path, command: str) -> None:
        # A server that is down must cost seconds, not MLflow's default minutes of retries;
        # settings the user made in the environment win.
        for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                           ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                           ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        root = rundir.outputs_root()
        uri = (node["tracking_uri"] or os.environ.get("MLFLOW_TRACKING_URI")
               or f"sqlite:///{root / 'mlflow.db'}")
        self.client = MlflowClient(tracking_uri=uri)
        name = str(node["experiment"] or command)
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=(root / "mlartifacts" / name).as_uri()
            if uri.startswith("sqlite") else None)
        sweep = run_dir.parent if run_dir.name.isdigit() else None
        tags = {"odecli.run_dir": str(run_dir), "odecli.command": command}
        if sweep is not None:  # a sweep's jobs share this tag: find the sweep as one unit
            tags["odecli.sweep"] = str(sweep)
        run_name = f"{sweep.name}/{run_dir.name}" if sweep else run_dir.name
        self.run_id = self.client.create_run(experiment, run_name=run_name,
                                             tags=tags).info.run_id
        params = {k: str(v)[:500] for k, v in flatten(
            OmegaConf.to_container(cfg, resolve=True)).items()}
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def evaluation(self, step: int, row: Mapping[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, v, now, step) for k, v in _numbers(row).items()])

    def finish(self, run_dir: Path, metrics: Mapping[str, Any]) -> None:
        for path in [run_dir / rundir.METRICS, run_dir / ".hydra" / "config.yaml",
                     *sorted(run_dir.glob("*.png"))]:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        status = "FINISHED" if metrics.get("status") == "ok" else (
            "KILLED" if metrics.get("status") == "interrupted" else "FAILED")
        self.client.set_terminated(self.run_id, status=status)


TRACKERS: dict[str, type] = {"tensorboard": TensorBoard, "mlflow": MLflow}


class Trackers:
    """The chosen trackers, fed from a background thread so that importing them, opening
    their stores and writing every evaluation overlap training instead of adding to it. Each
    call is guarded: a failing tracker is dropped with one warning line, never the run."""

    def __init__(self, cfg: Any, run_dir: Path, command: str) -> None:
        self.active: dict[str, Any] = {}
        node = cfg.get("logger") or {}
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        if not node:
            return
        for name, settings in node.items():
            self._queue.put(lambda n=name, s=settings: self._guard(n, lambda: self.active
                            .__setitem__(n, TRACKERS[n](s, cfg, run_dir, command))))
        self._thread = threading.Thread(target=self._work, name="odecli-trackers",
                                        daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job()

    def _guard(self, name: str, call: Any) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - any tracker failure must not stop the run
            self.active.pop(name, None)
            rundir.notice(log, f"logger {name} disabled: {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]}")

    def _each(self, call: Any) -> None:
        for name, tracker in list(self.active.items()):
            self._guard(name, lambda t=tracker: call(t))

    def evaluation(self, step: int, row: Mapping[str, Any]) -> None:
        if self._thread is not None:
            row = dict(row)
            self._queue.put(lambda: self._each(lambda t: t.evaluation(step, row)))

    def finish(self, run_dir: Path, metrics: Mapping[str, Any]) -> None:
        """Hand over the final metrics and figures and wait until every tracker is done."""
        if self._thread is None:
            return
        metrics = dict(metrics)
        self._queue.put(lambda: self._each(lambda t: t.finish(run_dir, metrics)))
        self._queue.put(None)
        self._thread.join()
        self._thread = None
