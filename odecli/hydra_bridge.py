"""Hydra behind Typer: hand an argument list to Hydra's own CLI driver.

`hydra.compose` cannot do multirun or launchers, and `@hydra.main` needs `sys.argv`; Hydra's
internal `_run_hydra` (what `@hydra.main` calls) takes a parsed argument list and supports
single runs, `-m` with any launcher, `--cfg` and `--info`. It is private API, hence the
`hydra-core>=1.3.2,<1.5` pin and the tests in tests/test_cli.py. See DESIGN.md for the facts
behind each workaround here.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs_index import config_dir
from .errors import OdecliError, RunFailed

log = logging.getLogger("odecli")


@dataclass
class Command:
    """How a CLI command maps to a primary config and the function that runs one job."""

    name: str
    config_name: str
    runner: str       # "module:function" taking (cfg, run_dir) -> metrics dict
    validator: str    # "module:function" taking (cfg) and raising OdecliError on bad input
    tag: str = ""     # appended to the run folder name, may use ${hydra.runtime.choices.X}


COMMANDS: dict[str, Command] = {
    "train": Command("train", "train", "odecli.train:run", "odecli.train:validate",
                     "_${hydra.runtime.choices.system}"),
    "spiral-vae": Command("spiral-vae", "spiral_vae", "odecli.latent:run_spiral_vae",
                          "odecli.latent:validate_spiral_vae"),
    "ecg-vae": Command("ecg-vae", "ecg_vae", "odecli.latent:run_ecg_vae",
                       "odecli.latent:validate_ecg_vae"),
}


@dataclass
class Outcome:
    """What a CLI call produced: run folders and their statuses (filled in-process)."""

    run_dirs: list[Path] = field(default_factory=list)
    sweep_dir: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)


def outputs_root() -> Path:
    """Absolute outputs folder: $ODECLI_OUTPUTS or ./outputs, fixed when first asked."""
    return Path(os.environ.get("ODECLI_OUTPUTS", "outputs")).expanduser().resolve()


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    # Cached, so the parent resolves it once and joblib workers get the same absolute path.
    if not OmegaConf.has_resolver("odecli_outputs"):
        OmegaConf.register_new_resolver("odecli_outputs", lambda: str(outputs_root()),
                                        use_cache=True)


_register_resolvers()


def _load(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def default_hydra_overrides(cmd: Command, user: list[str]) -> list[str]:
    """Run/sweep folders with microseconds (parallel shell loops never collide)."""
    stamp = "${now:%Y-%m-%d}/${now:%H-%M-%S-%f}"
    wanted = {
        "hydra.run.dir": f"${{odecli_outputs:}}/{cmd.name}/{stamp}{cmd.tag}",
        "hydra.sweep.dir": f"${{odecli_outputs:}}/multirun/{stamp}",
        "hydra.sweep.subdir": "${hydra.job.num}",
        "hydra.job.chdir": "false",
        "hydra.job.name": cmd.name.replace("-", "_"),
        "+hydra.callbacks.odecli_sweep._target_": "odecli.hydra_bridge.SweepDirCallback",
    }
    given = {o.split("=", 1)[0].lstrip("+~") for o in user}
    return [f"{k}={v}" for k, v in wanted.items() if k.lstrip("+") not in given]


def static_prefix(path: str) -> Path:
    """The part of a run-dir pattern before its first interpolation."""
    head = path.split("${", 1)[0]
    return Path(head or ".").expanduser().resolve()


def check_writable(overrides: list[str], multirun: bool) -> None:
    """Fail before any work when the output folder cannot be created or written."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    root = outputs_root()
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+") == key:
            root = static_prefix(o.split("=", 1)[1])
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".odecli-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OdecliError(f"cannot write the output folder {root}: {reason}; "
                          f"set ODECLI_OUTPUTS or hydra.run.dir to a writable folder") from exc


@contextlib.contextmanager
def _hydra_call_state() -> Iterator[None]:
    """Keep logging handlers and Hydra singletons from leaking between in-process calls."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    old_env = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # exceptions reach us; we print one line
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = old_env
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                with contextlib.suppress(Exception):
                    h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()


def compose(cmd: Command, overrides: list[str]) -> Any:
    """Compose a config without running it (used to validate single runs up front)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with _hydra_call_state(), initialize_config_dir(config_dir=str(config_dir()),
                                                    version_base="1.3"):
        return hydra_compose(config_name=cmd.config_name, overrides=overrides)


_OUTCOME = Outcome()


def _job(cmd_name: str) -> Callable[[Any], Any]:
    """The task function Hydra runs once per job (in-process or in a launcher worker)."""
    # A module-level factory keeps the function picklable for joblib/submitit.
    return _JobFunction(cmd_name)


class _JobFunction:
    def __init__(self, cmd_name: str) -> None:
        self.cmd_name = cmd_name
        # Hydra reads these to name the task and find the calling module.
        self.__module__ = __name__
        self.__name__ = "odecli_job"
        self.__qualname__ = "odecli_job"

    def __call__(self, cfg: Any) -> dict[str, Any]:
        from hydra.core.hydra_config import HydraConfig

        from . import runs

        cmd = COMMANDS[self.cmd_name]
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # The progress bar owns the terminal; per-evaluation log lines go to the log file.
        for h in logging.getLogger().handlers:
            if type(h) is logging.StreamHandler:
                h.setLevel(logging.WARNING)
        _OUTCOME.run_dirs.append(run_dir)
        try:
            metrics = _load(cmd.runner)(cfg, run_dir)
        except OdecliError as exc:
            metrics_path = run_dir / runs.METRICS
            if not metrics_path.exists():
                runs.write_json(metrics_path, {"status": f"failed: {exc}"})
            _OUTCOME.failures.append((str(run_dir), str(exc)))
            log.error("%s", exc)
            # Plain exception type: custom ones may not survive pickling back from workers.
            raise RunFailed(str(exc)) from None
        if not bool(cfg.get("quiet", False)):
            summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                if k in SUMMARY_KEYS and isinstance(v, (int, float)))
            print(f"{cmd.name}: {metrics.get('status')}  {summary}\n  run folder: {run_dir}")
        return {"status": metrics.get("status"), "run_dir": str(run_dir)}


SUMMARY_KEYS = ("error_rel", "extrap_error_rel", "seconds_per_iter", "recon_mse",
                "extrap_mse", "wall_seconds")


def launch(cmd_name: str, overrides: list[str], multirun: bool = False,
           cfg: str | None = None, package: str | None = None, resolve: bool = False,
           info: str | None = None) -> Outcome:
    """Run a command through Hydra's CLI driver; raises OdecliError with a one-line message."""
    from hydra import version as hydra_version
    from hydra._internal.utils import _run_hydra, get_args_parser

    cmd = COMMANDS[cmd_name]
    if multirun and (cfg or info):
        raise OdecliError("-m/--multirun cannot be combined with --cfg or --info; "
                          "drop -m to see the composed config")
    hydra_version.setbase("1.3")
    args = list(overrides)
    showing = bool(cfg or info)
    if not showing:
        check_writable(args, multirun)
        if not multirun:
            validate(cmd, args)
    argv = args + default_hydra_overrides(cmd, args)
    if multirun:
        argv.insert(0, "--multirun")
    if cfg:
        argv[:0] = ["--cfg", cfg]
        if package:
            argv[:0] = ["--package", package]
        if resolve:
            argv.insert(0, "--resolve")
    if info:
        argv[:0] = ["--info", info]
    parser = get_args_parser()
    parsed = parser.parse_args(argv)
    outcome = Outcome()
    global _OUTCOME
    _OUTCOME = outcome
    sweep_recorder = _SweepRecorder()
    with _hydra_call_state(), sweep_recorder:
        try:
            _run_hydra(args=parsed, args_parser=parser, task_function=_job(cmd_name),
                       config_path=str(config_dir()), config_name=cmd.config_name)
        except OdecliError:
            if not multirun:
                raise
        except Exception as exc:  # Hydra / OmegaConf errors: one line, no traceback
            if not multirun or not _is_job_failure(exc):
                raise OdecliError(one_line(exc)) from exc
    outcome.sweep_dir = sweep_recorder.sweep_dir
    if multirun:
        outcome.failures = sweep_failures(outcome.sweep_dir) if outcome.sweep_dir else []
        if outcome.failures:
            names = "; ".join(f"job {Path(d).name}: {r}" for d, r in outcome.failures)
            raise MultirunFailed(f"{len(outcome.failures)} job(s) failed: {names}")
    return outcome


class MultirunFailed(OdecliError):
    exit_code = 1


def _is_job_failure(exc: BaseException) -> bool:
    return isinstance(exc, OdecliError) or "RunFailed" in type(exc).__name__


def validate(cmd: Command, overrides: list[str]) -> None:
    """Compose and check a single run's config before Hydra creates its folder."""
    try:
        composed = compose(cmd, overrides)
    except OdecliError:
        raise
    except Exception as exc:
        raise OdecliError(one_line(exc)) from exc
    _load(cmd.validator)(composed)


def sweep_failures(sweep_dir: Path) -> list[tuple[str, str]]:
    """Jobs of a sweep whose metrics.json is missing or not 'ok'."""
    from . import runs

    failures = []
    for job in sorted((p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()),
                      key=lambda p: (len(p.name), p.name)):
        metrics = job / runs.METRICS
        if not metrics.exists():
            failures.append((str(job), "no metrics.json (the job crashed)"))
            continue
        status = str(runs.read_json(metrics).get("status", "unknown"))
        if status != "ok":
            failures.append((str(job), status))
    return failures


class _SweepRecorder:
    """Learns the sweep folder from the multirun config Hydra composes in this process."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def _hook(self, config: Any) -> None:
        with contextlib.suppress(Exception):
            self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def __enter__(self) -> _SweepRecorder:
        _SWEEP_HOOKS.append(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        _SWEEP_HOOKS.remove(self._hook)


_SWEEP_HOOKS: list[Callable[[Any], None]] = []


def _callback_base() -> type:
    from hydra.experimental.callback import Callback

    return Callback


class SweepDirCallback(_callback_base()):  # type: ignore[misc]
    """Hydra callback (added by the bridge's overrides): tells the CLI the sweep folder."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        for hook in list(_SWEEP_HOOKS):
            hook(config)


_WS = re.compile(r"\s*\n\s*")


def one_line(exc: BaseException) -> str:
    """Hydra's multi-line messages ('Available options in ...') folded onto one line."""
    text = str(exc).strip() or type(exc).__name__
    text = text.replace("\n\nAvailable options", ". Available options")
    parts = [p for p in _WS.split(text) if p]
    if len(parts) > 1 and parts[0].endswith(":"):
        return parts[0] + " " + ", ".join(parts[1:])
    return "; ".join(parts).replace(":;", ":").replace(".;", ".")
