"""`hydra.sweeper._target_` for a continued sweep (the logic: odecli.launch.continuation).

Defined here, not in odecli.launch: Hydra's plugin scan re-executes its core plugin modules,
so a subclass of BasicSweeper made before the scan would no longer match the class that
BasicSweeper's own methods name."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

try:
    from odecli.launch import continuation
except ImportError:  # an odecli without it (another checkout on this Python): offer nothing
    continuation = None

if continuation is not None:

    class ContinueSweeper(BasicSweeper):
        """Launches only the unfinished jobs of a sweep, each in its own folder."""

        def sweep(self, arguments: list[str]) -> object:
            return continuation.sweep(self)
