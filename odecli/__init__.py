"""odecli: a command-line experiment runner for neural ODEs."""

__version__ = "0.1.0"
