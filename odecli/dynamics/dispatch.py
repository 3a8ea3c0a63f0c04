"""`odecli train`'s experiment: a simulated system, or a data file.

The registry names `TrainExperiment`; building one (or validating a config) hands the work
to `DynamicsExperiment` for the built-in and equation systems and to `FileExperiment` for
`system=file` and the shipped datasets. Neither module imports this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from odecli.dynamics import systems
from odecli.dynamics.ensemble import DynamicsMembers
from odecli.dynamics.experiment import DynamicsExperiment
from odecli.dynamics.file_experiment import FileExperiment


def reads_file(cfg: Any) -> bool:
    """Whether the config's system is a data file (system=file, a shipped dataset)."""
    system = cfg.get("system") if hasattr(cfg, "get") else None
    name = system.get("name") if hasattr(system, "get") else None
    return name in systems.FILE_SYSTEMS


class TrainExperiment(DynamicsExperiment):
    """The class `odecli train` runs; an instance is one of the two experiments above."""

    ensemble = DynamicsMembers  # hydra/launcher=ensemble: members trained as one batch

    def __new__(cls, cfg: DictConfig, run_dir: Path) -> Any:  # type: ignore[misc]
        return (FileExperiment if reads_file(cfg) else DynamicsExperiment)(cfg, run_dir)

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        (FileExperiment if reads_file(cfg) else DynamicsExperiment).validate(cfg)
