"""Preset groups: a config group whose options each name a dataset (and may carry the
settings tuned for it), while a plain key can still pick the dataset on its own.

`odecli cnf cnf_data=checkerboard` sets `data.name` and the model and training settings
measured for the checkerboard; `odecli cnf data.name=checkerboard` keeps the default option's
settings. Both are legitimate, so nothing is refused; the run is told which settings it got
when a preset is in play (the chosen option's, or the named dataset's), unless the command
line already sets every key those presets set.
"""

from __future__ import annotations

from typing import Any

from odecli import registry
from odecli.launch import overrides as ov
from odecli.paths import config_dir


def preset_keys(group: str, option: str) -> set[str]:
    """Dotted keys that configs/GROUP/OPTION.yaml (a `_global_` file) sets; empty where the
    option does not exist."""
    from omegaconf import OmegaConf

    from odecli.engine.checkpoint import flatten  # (torch: not on odecli --help's path)

    path = config_dir() / group / f"{option}.yaml"
    if not path.exists():
        return set()
    return set(flatten(OmegaConf.to_container(OmegaConf.load(path))))


def note(command: str, composed: Any, overrides: list[str]) -> str | None:
    """What to tell a job whose dataset key was set on the command line to another dataset
    than its preset option's, or None."""
    preset = registry.get(command).preset
    if preset is None:
        return None
    group, key = preset
    given = ov.keys([o for o in overrides if "=" in o])  # (not `~key` deletions)
    if key not in given:
        return None
    from omegaconf import OmegaConf

    choice = composed.hydra.runtime.choices.get(group)
    name = OmegaConf.select(composed, key)
    if choice is None or name == choice:
        return None
    kept = preset_keys(group, str(choice)) - {key} - given      # the option's, still in force
    tuned = preset_keys(group, str(name)) - {key} - given       # the dataset's, not applied
    if not kept and not tuned:
        return None
    text = (f"{key}={name} runs with {group}={choice}'s settings for every key the command "
            "line does not set")
    if tuned:
        text += f"; {group}={name} picks the ones tuned for {name}"
    return text
