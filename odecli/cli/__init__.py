"""The command line: Typer commands, the Hydra bridge, and the commands that read run folders."""

from odecli.cli.app import app, main

__all__ = ["app", "main"]
