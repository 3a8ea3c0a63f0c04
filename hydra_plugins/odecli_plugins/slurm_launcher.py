"""`hydra/launcher=slurm` (the logic: odecli.launch.slurm); nothing without the slurm extra."""

try:
    from odecli.launch import slurm
except ImportError:  # hydra-submitit-launcher not installed: no Slurm launcher to offer
    slurm = None

if slurm is not None:

    class SlurmLauncher(slurm.SlurmLauncher):
        """Hydra instantiates launchers only from `hydra_plugins` modules."""
