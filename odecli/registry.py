"""The command registry: one entry per experiment family, the only place a command is named.

The Typer commands and their `--help`, `odecli list`, `eval`, `resume=`, `report` and the
Python API (`odecli.run`, `odecli.load`) are all built from `COMMANDS`, so adding a family is
its subpackage, its configs and one `Command` here. Plain data, no torch or Hydra import:
`odecli --help` reads it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from odecli.errors import OdecliError


@dataclass(frozen=True)
class Command:
    """A command: its primary config, the experiment that runs one job, and its help."""

    name: str                  # the CLI command, as metrics.json and checkpoints record it
    config: str                # primary config: configs/<config>.yaml
    experiment: str            # "module:Class", an odecli.engine.experiment.Experiment
    help: str                  # one line: `odecli --help`, `odecli list`, the docs
    groups: tuple[str, ...]    # the config groups its primary config composes
    examples: tuple[str, ...] = ()   # command lines shown by --help (and checked by tests)
    details: tuple[str, ...] = ()    # further --help paragraphs
    tag_group: str = ""        # the group whose choice ends single-run folder names
    dataset: str = ""          # the `system` of a run whose metrics.json names none
    eval_keys: tuple[str, ...] = ()  # family keys `eval`/`load` may change besides solver...
    # A preset group (launch/presets.py): (group, the key each of its options sets to the
    # option's name), e.g. cnf_data options each set data.name.
    preset: tuple[str, str] | None = None

    @property
    def tag(self) -> str:
        """The run-folder suffix as a Hydra interpolation ('' when none)."""
        return f"_${{hydra.runtime.choices.{self.tag_group}}}" if self.tag_group else ""

    def experiment_class(self) -> Any:
        """The Experiment subclass (imports the family, and torch with it)."""
        module, _, name = self.experiment.partition(":")
        return getattr(importlib.import_module(module), name)


_RUNTIME = ("solver", "gradient", "device", "logger")

COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command(
        "train", "train", "odecli.dynamics.dispatch:TrainExperiment",
        "Learn a dynamical system with a neural ODE.",
        ("system", "model", "solver", "gradient", "device", "experiment", "logger"),
        examples=("odecli train system=lotka solver=dopri5",
                  "odecli train system=mlp model=deep model.time_dependent=true",
                  "odecli train -m system=spiral,lotka model=small,deep seed=0,1,2"),
        tag_group="system", eval_keys=("system.extrapolate", "system.y0")),
    Command(
        "spiral-vae", "spiral_vae", "odecli.latent.spiral_experiment:SpiralVAE",
        "Latent-ODE VAE on noisy, irregularly sampled 2-D spirals.",
        _RUNTIME,
        examples=("odecli spiral-vae train.niters=2000 model.encoder=odernn",),
        details=("Continue a stopped run: odecli spiral-vae resume=RUN_FOLDER",),
        dataset="spirals"),
    Command(
        "ecg-vae", "ecg_vae", "odecli.latent.ecg_experiment:EcgVAE",
        "Latent-ODE VAE on real ECG heartbeats (MIT-BIH via wfdb).",
        _RUNTIME,
        examples=("odecli ecg-vae data.dir=path/to/mitdb data.record=100",),
        details=("Continue a stopped run: odecli ecg-vae resume=RUN_FOLDER",
                 "Without data.dir (or $ODECLI_ECG_DIR) the record is downloaded from "
                 "PhysioNet."),
        dataset="ecg"),
    Command(
        "cnf", "cnf", "odecli.flows.experiment:CNFExperiment",
        "Continuous normalizing flow on a 2-D toy density, scored against the true density.",
        ("cnf_data", *_RUNTIME),
        examples=("odecli cnf cnf_data=checkerboard",
                  "odecli cnf reg.kinetic=0.03 reg.jacobian=0.03 model.trace=hutchinson"),
        preset=("cnf_data", "data.name"),
        details=("cnf_data=NAME picks a density and the settings tuned for it.",
                 "Re-score with another solver: odecli eval RUN solver.rtol=1e-6; draw "
                 "samples: odecli sample RUN --n 1000 --out samples.npy")),
    Command(
        "classify", "classify", "odecli.classify.experiment:ClassifyExperiment",
        "ODE-Net against ResNet on handwritten digits, with the speed/accuracy dial.",
        ("classify_data", "classify_model", *_RUNTIME),
        examples=("odecli classify",
                  "odecli classify -m classify_model=odenet,resnet",
                  "odecli classify classify_data=mnist data.dir=path/to/idx "
                  "model.downsample=2"),
        details=("Data: scikit-learn's 8x8 digits offline, or MNIST.",
                 "Re-score with another solver: odecli eval RUN solver=rk4 "
                 "solver.step_size=0.25"),
        tag_group="classify_model"),
    Command(
        "cde", "cde", "odecli.cde.experiment:CDEExperiment",
        "Neural CDE on irregular, partly missing multivariate series, against baselines.",
        ("cde_data", "cde_model", *_RUNTIME),
        examples=("odecli cde",
                  "odecli cde -m data.drop=0,0.3,0.5,0.7",
                  "odecli cde -m cde_model=cde,gru_dt,odernn,knn data.drop=0.5",
                  "odecli cde cde_data=uea data.dir=path/to/uea"),
        details=("Data: UEA JapaneseVowels (shipped), spirals, or any folder of UEA .ts "
                 "files; data.drop removes that fraction of each series' points.",
                 "Compare a sweep: odecli report outputs/multirun/DATE/TIME"),
        tag_group="cde_model"),
)}


def get(name: str) -> Command:
    """The command called `name`, or a one-line error listing the commands there are."""
    try:
        return COMMANDS[name]
    except KeyError:
        raise OdecliError(f"unknown command '{name}'; choose one of: "
                          f"{', '.join(COMMANDS)}") from None


def groups_used() -> list[str]:
    """Every config group some command composes, in registry order (`odecli list`)."""
    seen: list[str] = []
    for cmd in COMMANDS.values():
        seen += [g for g in cmd.groups if g not in seen]
    return seen
