"""Experiment family: latent-ODE VAEs on spirals and ECG heartbeats."""
