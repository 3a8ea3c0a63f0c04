"""Turning a command and its overrides into runs: compose and check configs with Hydra, claim
run and sweep folders, expand sweeps, continue runs (`resume=`), read run folders back.

Below the Python API (`odecli.api`) and the command line (`odecli.cli`), above the experiment
families: nothing here trains (the engine does) or prints to the terminal.
"""
