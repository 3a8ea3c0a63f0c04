"""Numerics shared by every experiment: solving, the checkpointed gradient, devices."""
