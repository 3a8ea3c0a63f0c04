"""Experiment family: learn the vector field of a known dynamical system (`odecli train`)."""
