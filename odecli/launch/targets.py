"""The Hydra `_target_` of odecli's own launcher, in a module of its own: composing checks
it, and must not import the sweep machinery (which reaches the Slurm job, which composes)."""

SLURM_TARGET = "hydra_plugins.odecli_plugins.slurm_launcher.SlurmLauncher"
