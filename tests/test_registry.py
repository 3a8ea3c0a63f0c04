"""The command registry is the one place a command is named: the CLI, its help, `odecli list`
and the primary configs all agree with it."""

from __future__ import annotations

import shlex

import pytest
import yaml

from odecli.cli.app import app
from odecli.errors import OdecliError
from odecli.launch.bridge import validate
from odecli.launch.sweeps import sweep_jobs
from odecli.paths import config_dir
from odecli.registry import COMMANDS, get

# the commands that read runs, not families
READERS = {"report", "eval", "sample", "recover", "list", "export"}


def _defaults_groups(config: str) -> list[str]:
    data = yaml.safe_load((config_dir() / f"{config}.yaml").read_text())
    groups = []
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            (key,) = entry
            groups.append(key.removeprefix("optional ").removeprefix("override ").strip())
    return groups


@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_entry_names_the_groups_its_primary_config_composes(name):
    cmd = COMMANDS[name]
    assert sorted(cmd.groups) == sorted(_defaults_groups(cmd.config))
    assert cmd.experiment_class().command == name


def test_the_typer_app_has_one_command_per_entry_and_the_readers():
    names = {c.name for c in app.registered_commands}
    assert names == set(COMMANDS) | READERS


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_is_built_from_the_entry(cli, name):
    cmd = COMMANDS[name]
    text = " ".join(cli(name, "--help").stdout.split())
    assert cmd.help in text and f"Config groups: {', '.join(cmd.groups)}" in text
    for example in cmd.examples:
        assert " ".join(example.split()) in text
    listing = " ".join(w for w in cli("--help").stdout.split() if w != "│")  # a boxed table
    assert cmd.help in listing


@pytest.mark.parametrize("name,example", [(n, e) for n, c in COMMANDS.items()
                                          for e in c.examples])
def test_every_help_example_composes(name, example):
    words = shlex.split(example)
    assert words[:2] == ["odecli", name]
    args = [w for w in words[2:] if w not in ("-m", "--multirun")]
    args = [a.replace("path/to/mitdb", "tests/data").replace("path/to/idx", "tests/data")
            .replace("path/to/uea", "tests/data/uea")
            for a in args]
    for job in (sweep_jobs(args) if "-m" in words else [args]):
        if any("mnist" in a for a in job):  # needs the MNIST files: the key check only
            job = [a for a in job if not a.startswith("data.dir")]
            with pytest.raises(OdecliError, match="MNIST"):
                validate(COMMANDS[name], job)
            continue
        validate(COMMANDS[name], job)


def test_an_unknown_command_lists_the_registered_ones():
    with pytest.raises(OdecliError, match="unknown command 'nope'; choose one of: train, "):
        get("nope")
