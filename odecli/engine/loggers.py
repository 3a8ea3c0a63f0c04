"""Experiment trackers beside the run folder: TensorBoard event files and MLflow runs.

The run folder stays the source of truth; a tracker only mirrors it (the config, every
evaluation row, the final metrics and figures), from a child process so that it costs the
training loop almost nothing. A tracker that fails (missing package, unwritable store, server
down) prints one warning line and is dropped: it never stops a run.
`cfg.logger` holds one node per chosen tracker (`logger=tensorboard`,
`logger=[tensorboard,mlflow]`); `logger=none` (the default) writes only the run folder.
"""

from __future__ import annotations

import logging
import os
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
        self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(OmegaConf.create(cfg))
                             + "```")

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
        params = {k: str(v)[:500] for k, v in flatten(cfg).items()}
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        self.pending: list[Any] = []
        self.flushed = 0.0

    def evaluation(self, step: int, row: Mapping[str, Any]) -> None:
        """Buffered: one database write every FLUSH_SECONDS at most (each is a transaction)."""
        import time

        from mlflow.entities import Metric

        now = time.time()
        self.pending += [Metric(k, v, int(now * 1000), step) for k, v in _numbers(row).items()]
        if now - self.flushed >= FLUSH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        import time

        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
        self.pending, self.flushed = [], time.time()

    def finish(self, run_dir: Path, metrics: Mapping[str, Any]) -> None:
        self._flush()
        for path in [run_dir / rundir.METRICS, run_dir / ".hydra" / "config.yaml",
                     *sorted(run_dir.glob("*.png"))]:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        status = "FINISHED" if metrics.get("status") == "ok" else (
            "KILLED" if metrics.get("status") == "interrupted" else "FAILED")
        self.client.set_terminated(self.run_id, status=status)


FLUSH_SECONDS = 5.0  # live enough for a UI, few enough writes to cost the run nothing

TRACKERS: dict[str, type] = {"tensorboard": TensorBoard, "mlflow": MLflow}


class Trackers:
    """The chosen trackers, run in a child process: importing them, opening their stores and
    writing every evaluation happen beside training (on another core, outside this process's
    GIL) instead of adding to it. A failing tracker is dropped with one warning line, printed
    here when the run ends; it never stops the run."""

    def __init__(self, cfg: Any, run_dir: Path, command: str) -> None:
        node = cfg.get("logger") or {}
        self._process: Any = None
        if not node:
            return
        import multiprocessing

        # spawn: forking this process, which has torch's threads running, is unsafe (Python
        # 3.12+ warns that the child may deadlock), and a forkserver would hand children the
        # environment of its own start; the child imports what it needs itself, on another
        # core, beside training
        ctx = multiprocessing.get_context("spawn")
        self._jobs: Any = ctx.Queue()
        self._notes: Any = ctx.Queue()
        plain = OmegaConf.to_container(cfg, resolve=True)
        self._process = ctx.Process(
            target=_serve, name="odecli-trackers", daemon=True,
            args=(self._jobs, self._notes, plain, str(run_dir), command,
                  str(rundir.outputs_root())))
        self._process.start()

    def evaluation(self, step: int, row: Mapping[str, Any]) -> None:
        if self._process is not None:
            self._jobs.put(("evaluation", step, _numbers(row)))

    def finish(self) -> None:
        """Tell the trackers the run folder is complete (they read its metrics.json and
        figures) and wait until every tracker is done."""
        if self._process is None:
            return
        self._jobs.put(("finish",))
        self._jobs.put(None)
        self._process.join(timeout=120)
        if self._process.is_alive():
            self._process.terminate()
            rundir.notice(log, "logger: the trackers did not finish within 120 s; stopped")
        while not self._notes.empty():
            rundir.notice(log, self._notes.get())
        self._process = None


def _serve(jobs: Any, notes: Any, cfg: dict[str, Any], run_dir: str, command: str,
           outputs: str) -> None:
    """The child process: build each tracker, then feed it every message until None."""
    os.environ["ODECLI_OUTPUTS"] = outputs
    active: dict[str, Any] = {}

    def guard(name: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:  # noqa: BLE001 - any tracker failure must not stop the run
            active.pop(name, None)
            notes.put(f"logger {name} disabled: {type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:200]}")
            return None

    folder = Path(run_dir)
    for name, settings in (cfg.get("logger") or {}).items():
        tracker = guard(name, TRACKERS[name], settings, cfg, folder, command)
        if tracker is not None:
            active[name] = tracker
    while (message := jobs.get()) is not None:
        if message[0] == "evaluation":
            for name, tracker in list(active.items()):
                guard(name, tracker.evaluation, *message[1:])
            continue
        # "finish": the run folder is complete, and it is the source of truth
        metrics = rundir.read_json(folder / rundir.METRICS)
        for name, tracker in list(active.items()):
            guard(name, tracker.finish, folder, metrics)
