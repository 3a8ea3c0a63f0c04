"""`hydra/launcher=ensemble` (the logic: odecli.launch.ensemble).

Defined here: Hydra instantiates launchers only from the `hydra_plugins` namespace, and its
plugin scan re-executes its core plugin modules, so a subclass of BasicLauncher made before
the scan would no longer match the class Hydra checks against."""

from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher

try:
    from odecli.launch import ensemble
except ImportError:  # an odecli without it (another checkout on this Python): offer nothing
    ensemble = None

if ensemble is not None:

    class EnsembleLauncher(BasicLauncher):
        """Trains each group of same-shaped jobs as one batched model."""

        def __init__(self, max_members: int = 64) -> None:
            super().__init__()
            self.max_members = max_members

        def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
            super().setup(hydra_context=hydra_context, task_function=task_function,
                          config=config)
            ensemble.share_compositions(hydra_context)

        def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
            return ensemble.launch(self, job_overrides, initial_job_idx)
