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

from odecli.cli.configs_index import config_dir
from odecli.errors import Interrupted, OdecliError

log = logging.getLogger("odecli")


@dataclass
class Command:
    """How a CLI command maps to a primary config and the function that runs one job."""

    name: str
    config_name: str
    runner: str       # "module:function" taking (cfg, run_dir) -> metrics dict
    validator: str    # "module:function" taking (cfg) and raising OdecliError on bad input
    tag: str = ""     # appended to the run folder name, may use ${hydra.runtime.choices.X}
    tag_group: str = ""  # the config group whose choice names single-run folders


COMMANDS: dict[str, Command] = {
    "train": Command("train", "train", "odecli.dynamics.experiment:run",
                     "odecli.dynamics.experiment:validate",
                     "_${hydra.runtime.choices.system}", "system"),
    "spiral-vae": Command("spiral-vae", "spiral_vae", "odecli.latent.experiments:run_spiral_vae",
                          "odecli.latent.experiments:validate_spiral_vae"),
    "ecg-vae": Command("ecg-vae", "ecg_vae", "odecli.latent.experiments:run_ecg_vae",
                       "odecli.latent.experiments:validate_ecg_vae"),
}


@dataclass
class Outcome:
    """What a CLI call produced: run folders and their statuses (filled in-process)."""

    run_dirs: list[Path] = field(default_factory=list)
    sweep_dir: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    errors: list[OdecliError] = field(default_factory=list)


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
        "+hydra.callbacks.odecli_sweep._target_": "odecli.cli.bridge.SweepDirCallback",
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


def compose(cmd: Command, overrides: list[str], with_hydra: bool = False) -> Any:
    """Compose a config without running it (used to validate runs up front)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with _hydra_call_state(), initialize_config_dir(config_dir=str(config_dir()),
                                                    version_base="1.3"):
        return hydra_compose(config_name=cmd.config_name, overrides=overrides,
                             return_hydra_config=with_hydra)


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

        from odecli.engine import rundir as runs

        cmd = COMMANDS[self.cmd_name]
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # The progress bar and the CLI's one-line summary or error own the terminal; log
        # records (evaluations, failures with their iteration) go to the run's log file.
        for h in logging.getLogger().handlers:
            if type(h) is logging.StreamHandler:
                h.setLevel(logging.CRITICAL + 1)
        _OUTCOME.run_dirs.append(run_dir)
        from odecli.numerics import device as device_mod

        try:
            with device_mod.thread_cap(thread_share(HydraConfig.get().launcher)):
                metrics = _load(cmd.runner)(cfg, run_dir)
        except Interrupted as exc:
            # Past Hydra's per-job `except Exception`: Ctrl-C stops the whole sweep.
            raise _Stop(exc) from None
        except OdecliError as exc:
            metrics_path = run_dir / runs.METRICS
            if not metrics_path.exists():
                runs.write_json(metrics_path, {"status": f"failed: {exc}"})
            _OUTCOME.errors.append(exc)
            log.error("%s", exc)
            # Returned, not raised: Hydra would print its own "Error executing job" line. The
            # CLI reads failures from metrics.json (sweeps) or from _OUTCOME (single runs).
            return {"status": f"failed: {exc}", "run_dir": str(run_dir)}
        if not bool(cfg.get("quiet", False)):
            summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                if k in SUMMARY_KEYS and isinstance(v, (int, float)))
            print(f"{cmd.name}: {metrics.get('status')}  {summary}\n  run folder: {run_dir}")
        return {"status": metrics.get("status"), "run_dir": str(run_dir)}


class _Stop(BaseException):
    """Carries an Interrupted out of Hydra's job runner, which catches every Exception."""

    def __init__(self, exc: Interrupted) -> None:
        super().__init__(exc)
        self.exc = exc


def thread_share(launcher: Any) -> int | None:
    """CPU threads one job may use: cores // parallel jobs under joblib (jobs must not fight
    over cores), the allocation under submitit, no cap for the sequential basic launcher."""
    target = str(launcher.get("_target_", "")).lower() if launcher is not None else ""
    cpus = os.cpu_count() or 1
    if "joblib" in target:
        n = launcher.get("n_jobs", -1)
        n = cpus if n is None else (max(1, cpus + 1 + n) if n < 0 else max(1, n))
        return max(1, cpus // min(n, cpus))
    if "submitit" in target:
        per_task = launcher.get("cpus_per_task")
        return int(per_task) if isinstance(per_task, int) and per_task > 0 else None
    return None


SUMMARY_KEYS = ("error_rel", "extrap_error_rel", "reconstruction_mse", "gap_mse",
                "extrapolation_forward_mse", "extrapolation_backward_mse",
                "extrapolation_right_mse", "extrapolation_left_mse", "seconds_per_iter",
                "wall_seconds")


def launch(cmd_name: str, overrides: list[str], multirun: bool = False,
           cfg: str | None = None, package: str | None = None, resolve: bool = False,
           info: str | None = None) -> Outcome:
    """Run a command through Hydra's CLI driver; raises OdecliError with a one-line message.

    Before Hydra runs, every job's config is validated (bad input writes nothing), a single
    run's folder (or a sweep's) is claimed with an exclusive mkdir so parallel shell-started
    runs never share one, and `resume=` is turned into a run in the stored folder.
    """
    from hydra import version as hydra_version
    from hydra._internal.utils import _run_hydra, get_args_parser

    from odecli.cli import resume as resume_mod

    cmd = COMMANDS[cmd_name]
    if multirun and (cfg or info):
        raise OdecliError("-m/--multirun cannot be combined with --cfg or --info; "
                          "drop -m to see the composed config")
    hydra_version.setbase("1.3")
    args = list(overrides)
    showing = bool(cfg or info)
    given = {o.split("=", 1)[0].lstrip("+~") for o in args}
    resume_dir = resume_mod.target(args)
    claimed: Path | None = None
    extra: list[str] = []
    if resume_dir is not None:
        if cmd_name != "train":
            raise OdecliError("resume= is supported by odecli train only")
        if multirun:
            raise OdecliError("resume= continues one run and cannot be combined with -m")
        run_dir = resume_mod.run_folder(resume_dir)
        args = resume_mod.merged_overrides(run_dir, args)
    if not showing:
        check_writable(args, multirun)
        jobs = sweep_jobs(args) if multirun else [args]
        composed = None
        for i, job in enumerate(jobs):
            try:
                composed = validate(cmd, job)
            except OdecliError as exc:
                if len(jobs) == 1:
                    raise
                swept = " ".join(o for o in job if o not in args)
                raise type(exc)(f"sweep job {i} ({swept}): {exc}") from None
        if resume_dir is not None:
            resume_mod.check(run_dir, composed)
            resume_mod.backup_hydra_files(run_dir)
            extra.append(f"hydra.run.dir={resume_mod.quote(str(run_dir))}")
        elif multirun and "hydra.sweep.dir" not in given:
            claimed = claim_dir(outputs_root() / "multirun", "")
            extra.append(f"hydra.sweep.dir={resume_mod.quote(str(claimed))}")
        elif not multirun and "hydra.run.dir" not in given:
            tag = ""
            if cmd.tag_group and composed is not None:
                tag = "_" + str(composed.hydra.runtime.choices.get(cmd.tag_group))
            claimed = claim_dir(outputs_root() / cmd.name, tag)
            extra.append(f"hydra.run.dir={resume_mod.quote(str(claimed))}")
    argv = args + extra + default_hydra_overrides(cmd, args + extra)
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
    try:
        with _hydra_call_state(), sweep_recorder:
            try:
                _run_hydra(args=parsed, args_parser=parser, task_function=_job(cmd_name),
                           config_path=str(config_dir()), config_name=cmd.config_name)
            except _Stop as stop:
                raise stop.exc from None
            except OdecliError:
                raise
            except Exception as exc:  # Hydra / OmegaConf errors: one line, no traceback
                raise OdecliError(one_line(exc)) from exc
    except BaseException:
        if claimed is not None:  # nothing ran in it: do not leave an empty folder behind
            with contextlib.suppress(OSError):
                claimed.rmdir()
        raise
    outcome.sweep_dir = sweep_recorder.sweep_dir
    if not multirun and outcome.errors:
        raise outcome.errors[0]
    if multirun:
        outcome.failures = sweep_failures(outcome.sweep_dir) if outcome.sweep_dir else []
        if outcome.failures:
            names = "; ".join(f"job {Path(d).name}: {r}" for d, r in outcome.failures)
            raise MultirunFailed(f"{len(outcome.failures)} job(s) failed: {names}")
    return outcome


def claim_dir(parent: Path, tag: str) -> Path:
    """<parent>/<date>/<time with microseconds><tag>, created with an exclusive mkdir: two
    processes started in the same microsecond still get two folders."""
    from datetime import datetime

    while True:
        now = datetime.now()
        path = parent / now.strftime("%Y-%m-%d") / (now.strftime("%H-%M-%S-%f") + tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise OdecliError(f"cannot create the run folder {path}: "
                              f"{exc.strerror or exc}") from exc
        return path


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Expand a sweep the way Hydra's basic sweeper does (cartesian product of a,b,c lists),
    so every job's config can be checked before any job runs."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise OdecliError(one_line(exc)) from exc
    axes = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            try:
                axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            except Exception as exc:
                raise OdecliError(one_line(exc)) from exc
        else:
            axes.append([o.input_line])
    return [list(job) for job in itertools.product(*axes)]


class MultirunFailed(OdecliError):
    exit_code = 1


def validate(cmd: Command, overrides: list[str]) -> Any:
    """Compose and check one job's config before Hydra creates its folder; returns the
    composed config (with its `hydra` node, which the validator does not see)."""
    from omegaconf import open_dict

    try:
        composed = compose(cmd, overrides, with_hydra=True)
    except OdecliError:
        raise
    except Exception as exc:
        unknown = re.match(r"Could not override '([^']+)'", str(exc))
        if unknown:
            raise OdecliError(unknown_key_message(cmd, unknown.group(1))) from exc
        raise OdecliError(one_line(exc)) from exc
    job = composed.copy()
    with open_dict(job):
        job.pop("hydra", None)
    _load(cmd.validator)(job)
    return composed


def unknown_key_message(cmd: Command, key: str) -> str:
    """A typo in a key gets the nearest real keys, not only Hydra's advice to add it."""
    import difflib

    from omegaconf import OmegaConf

    def flat(node: Any, prefix: str = "") -> list[str]:
        keys = []
        for k, v in node.items():
            name = f"{prefix}{k}"
            keys.append(name)
            if isinstance(v, dict):
                keys.extend(flat(v, name + "."))
        return keys

    defaults = OmegaConf.to_container(compose(cmd, []), resolve=False)
    close = difflib.get_close_matches(key, flat(defaults), n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return (f"unknown config key '{key}'{hint}; see `odecli {cmd.name} --cfg job`, or add a "
            f"new key with +{key}=VALUE")


def sweep_failures(sweep_dir: Path) -> list[tuple[str, str]]:
    """Jobs of a sweep whose metrics.json is missing or not 'ok'."""
    from odecli.engine import rundir as runs

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
    text = text.split("\nConfig search path", 1)[0].strip()
    text = re.sub(r"^In '[\w/]+': ", "", text)
    text = text.replace("\n\nAvailable options", ". Available options")
    parts = [p for p in _WS.split(text) if p]
    if len(parts) > 1 and parts[0].endswith(":"):
        return parts[0] + " " + ", ".join(parts[1:])
    return "; ".join(parts).replace(":;", ":").replace(".;", ".")
