"""Composing and checking a command's config before anything runs: Hydra's compose in a
clean call state, the experiment's own validation, and the one-line messages for a bad key.

Why its own module: the up-front validation (every job of a sweep before the first starts),
the Python API (`odecli.load`, `odecli.run`) and the launchers all compose through here, and
Hydra's global state must not leak between those in-process calls.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from odecli.engine.rundir import outputs_root
from odecli.errors import ConfigError, OdecliError
from odecli.launch import overrides as ov
from odecli.launch.derived import Composer
from odecli.paths import config_dir
from odecli.registry import Command


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    # Cached, so the parent resolves it once and joblib workers get the same absolute path.
    if not OmegaConf.has_resolver("odecli_outputs"):
        OmegaConf.register_new_resolver("odecli_outputs", lambda: str(outputs_root()),
                                        use_cache=True)


_register_resolvers()


@contextlib.contextmanager
def hydra_call_state() -> Iterator[None]:
    """Keep logging handlers and Hydra singletons from leaking between in-process calls."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = [h.level for h in handlers]  # the job function quiets console handlers
    old_env = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # exceptions reach us; we print one line
    # a log file on a full disk must not print a traceback per record: the run's own
    # error line says what failed
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        yield
    finally:
        logging.raiseExceptions = raising
        if old_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = old_env
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                with contextlib.suppress(Exception):
                    h.close()
        for h, lv in zip(handlers, levels, strict=True):
            if h not in root.handlers:
                root.addHandler(h)
            h.setLevel(lv)
        root.setLevel(level)
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()


def compose(cmd: Command, overrides: list[str], with_hydra: bool = False) -> Any:
    """Compose a config without running it (used to validate runs up front)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with hydra_call_state(), initialize_config_dir(config_dir=str(config_dir()),
                                                    version_base="1.3"):
        return hydra_compose(config_name=cmd.config, overrides=overrides,
                             return_hydra_config=with_hydra)


def validate(cmd: Command, overrides: list[str], composer: Composer | None = None) -> Any:
    """Compose and check one job's config before Hydra creates its folder; returns the
    composed config (with its `hydra` node, which the validator does not see). `composer`:
    a sweep's, which composes once per kind of job and derives the others."""
    from omegaconf import open_dict

    try:
        composed = (composer(overrides) if composer is not None
                    else compose(cmd, overrides, with_hydra=True))
    except OdecliError:
        raise
    except Exception as exc:
        unknown = re.match(r"Could not override '([^']+)'", str(exc))
        if unknown:
            raise OdecliError(unknown_key_message(cmd, unknown.group(1), overrides)
                              ) from exc
        raise OdecliError(ov.hydra_message(exc)) from exc
    job = composed.copy()
    with open_dict(job):
        job.pop("hydra", None)
    experiment = cmd.experiment_class()
    with _checking_for(composed):
        experiment.validate(job)
    objective = job.get("objective")
    if objective is not None and objective not in experiment.objectives:
        raise ConfigError(f"objective '{objective}' is not a metric odecli {cmd.name} can "
                          f"minimise; choose one of: {', '.join(experiment.objectives)}")
    return composed


def _checking_for(composed: Any) -> contextlib.AbstractContextManager[None]:
    """Jobs a cluster launcher runs elsewhere are checked as for their nodes (no GPU here
    is no reason to refuse device=cuda)."""
    from odecli.launch.targets import SLURM_TARGET
    from odecli.numerics import device as device_mod

    launcher = composed.hydra.get("launcher") or {}
    if str(launcher.get("_target_", "")) == SLURM_TARGET:
        return device_mod.checked_for_elsewhere()
    return contextlib.nullcontext()


def unknown_key_message(cmd: Command, key: str, overrides: Sequence[str] = ()) -> str:
    """A typo in a key gets the nearest real keys, not only Hydra's advice to add it; a key
    that belongs to another option of its group (system.y0 with system=file) says so."""
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
    known = flat(defaults)
    group = key.split(".", 1)[0]
    chosen = ov.value(list(overrides), group)
    if key in known and chosen:
        return (f"config key '{key}' does not apply to {group}={chosen}: it belongs to other "
                f"{group} options; see `odecli {cmd.name} {group}={chosen} --cfg job` for "
                f"this one's keys")
    close = difflib.get_close_matches(key, [k for k in known if k != key], n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return (f"unknown config key '{key}'{hint}; see `odecli {cmd.name} --cfg job`, or add a "
            f"new key with +{key}=VALUE")
