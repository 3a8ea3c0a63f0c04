"""CUDA gives CPU's results: every system and both VAE commands (skipped without a GPU).

Runs in float64 so that CPU and GPU arithmetic agree far below the comparison tolerance; the
solver's adaptive steps then match and so do the trained models. The device=auto advice is
checked on any machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_latent import TINY_ECG, TINY_SPIRAL, compose_cfg
from test_training import make, trainer

from odecli.cli.configs_index import config_dir
from odecli.engine import loop
from odecli.latent.ecg_experiment import EcgVAE
from odecli.latent.spiral_experiment import SpiralVAE
from odecli.numerics import device

SYSTEMS = sorted(p.stem for p in (config_dir() / "system").glob("*.yaml"))
SHORT = ["train.niters=6", "train.test_freq=3", "plots.enabled=false", "device.dtype=float64"]


def test_every_system_is_covered():
    # the CUDA tests are parametrized from the config folder; an empty list would pass vacuously
    assert SYSTEMS == ["lotka", "lotka_linear", "mlp", "nonlinear", "random", "spiral",
                       "spiral_cubic"]


@pytest.mark.cuda
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_system_trains_the_same_on_cuda_as_on_cpu(tmp_path: Path, system: str, gradient: str):
    metrics, params = {}, {}
    for dev in ("cpu", "cuda"):
        tr = trainer(make(f"system={system}", f"gradient={gradient}", f"device={dev}",
                                *SHORT), tmp_path / dev)
        metrics[dev] = tr.run()
        params[dev] = torch.cat([p.detach().flatten().cpu() for p in tr.exp.field.parameters()])
        if dev == "cuda":
            assert next(tr.exp.field.parameters()).is_cuda
    assert metrics["cuda"]["device"].startswith("cuda")
    assert torch.allclose(params["cpu"], params["cuda"], rtol=1e-6, atol=1e-9)
    for key in ("final_loss", "error_rel", "extrap_error_rel"):
        assert metrics["cuda"][key] == pytest.approx(metrics["cpu"][key], rel=1e-5), key


@pytest.mark.cuda
@pytest.mark.parametrize("name,tiny,keys", [
    ("spiral_vae", TINY_SPIRAL, ("reconstruction_mse", "extrapolation_forward_mse")),
    pytest.param("ecg_vae", TINY_ECG, ("reconstruction_mse", "gap_mse",
                                       "extrapolation_right_mse")),
])
def test_vae_command_is_the_same_on_cuda(tmp_path: Path, name, tiny, keys):
    experiment = SpiralVAE if name == "spiral_vae" else EcgVAE
    out = {}
    for dev in ("cpu", "cuda"):
        cfg = compose_cfg(name, tiny + [f"device={dev}", "device.dtype=float64",
                                        "plots.enabled=false"])
        out[dev] = loop.run(experiment, cfg, tmp_path / dev)
    for key in keys:
        assert np.isclose(out["cuda"][key], out["cpu"][key], rtol=1e-5), key


def test_auto_device_advises_cpu_once_for_a_tiny_model_on_a_gpu(monkeypatch):
    monkeypatch.setattr(device, "_ADVISED", False)
    gpu = device.Runtime(torch.device("cuda"), torch.float32, 1)
    cpu = device.Runtime(torch.device("cpu"), torch.float32, 1)
    assert device.gpu_advice("auto", cpu, 252, 20) is None          # CPU chosen: nothing
    assert device.gpu_advice("cuda", gpu, 252, 20) is None          # asked for explicitly
    assert device.gpu_advice("auto", gpu, 2562, 4096) is None       # big enough for a GPU
    note = device.gpu_advice("auto", gpu, 252, 20)
    assert note and "252 parameters x batch 20" in note and "device=cpu" in note
    assert device.gpu_advice("auto", gpu, 252, 20) is None          # only once


def test_train_and_the_vae_commands_pass_the_device_advice_on(monkeypatch, tmp_path, capsys):
    calls = []

    def advice(requested, rt, n_params, batch):
        calls.append((requested, n_params, batch))
        return "tiny-model advice"

    monkeypatch.setattr(device, "gpu_advice", advice)
    trainer(make("device=auto", "train.niters=1"), tmp_path / "train")
    cfg = compose_cfg("spiral_vae", TINY_SPIRAL + ["train.niters=1", "plots.enabled=false",
                                                   "device=auto"])
    loop.run(SpiralVAE, cfg, tmp_path / "vae")
    assert [(c[0], c[2]) for c in calls] == [("auto", 20), ("auto", 12)]
    assert calls[0][1] == 252  # the 2-50-2 field's parameters
    assert capsys.readouterr().err.count("note: tiny-model advice") == 2
