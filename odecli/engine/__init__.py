"""The training engine every command runs on: loop, checkpoints, run folder."""
