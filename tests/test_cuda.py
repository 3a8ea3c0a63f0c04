"""CUDA gives CPU's results: every system with every gradient mode, both VAE commands,
`classify`, `cnf` and the compiled fast loop (skipped without a GPU).

Runs in float64 so that CPU and GPU arithmetic agree far below the comparison tolerance; the
solver's adaptive steps then match and so do the trained models. The device=auto advice is
checked on any machine. ODECLI_CUDA_REHEARSAL=1 runs the `cuda` tests without a GPU, cpu
standing in for cuda (tests/conftest.py), so this file is debugged before GPU minutes are
spent on it; device checks then hold for the stand-in.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gpu_name
from test_classify import QUICK
from test_cnf import SMALL
from test_latent import TINY_ECG, TINY_SPIRAL, compose_cfg
from test_training import make, trainer

from odecli.classify.experiment import ClassifyExperiment
from odecli.engine import loop
from odecli.flows.experiment import CNFExperiment
from odecli.latent.ecg_experiment import EcgVAE
from odecli.latent.spiral_experiment import SpiralVAE
from odecli.launch.bridge import compose
from odecli.numerics import device
from odecli.paths import config_dir
from odecli.registry import COMMANDS

# every system but system=file, which needs a file of the user's (hare_lynx stands for it)
SYSTEMS = sorted(p.stem for p in (config_dir() / "system").glob("*.yaml") if p.stem != "file")
GRADIENTS = sorted(p.stem for p in (config_dir() / "gradient").glob("*.yaml"))
SHORT = ["train.niters=6", "train.test_freq=3", "plots.enabled=false", "device.dtype=float64"]
GPU = gpu_name()  # "cuda", or "cpu" in a rehearsal
SIDES = {"cpu": "cpu", "gpu": GPU}  # side -> device: CPU's reference and the device on trial


def test_every_system_and_gradient_mode_is_covered():
    # the CUDA tests are parametrized from the config folder; an empty list would pass vacuously
    assert SYSTEMS == ["equations", "fitzhugh_nagumo", "hare_lynx", "lorenz", "lotka",
                       "lotka_linear", "mlp", "nonlinear", "pendulum", "random", "sir",
                       "spiral", "spiral_cubic"]
    assert GRADIENTS == ["adjoint", "checkpoint", "direct"]


def _train(run_dir: Path, dev: str, *overrides: str) -> tuple[dict, torch.Tensor]:
    """An `odecli train` run on `dev`: its metrics and its trained parameters (on the CPU)."""
    run_dir.mkdir(parents=True)
    tr = trainer(make(*overrides, f"device={dev}", *SHORT), run_dir)
    metrics = tr.run()
    assert next(tr.exp.field.parameters()).device.type == dev
    return metrics, torch.cat([p.detach().flatten().cpu() for p in tr.exp.field.parameters()])


@pytest.mark.cuda
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_system_trains_the_same_on_cuda_as_on_cpu(tmp_path: Path, system: str, gradient: str):
    metrics, params = {}, {}
    for side, dev in SIDES.items():
        metrics[side], params[side] = _train(tmp_path / side, dev, f"system={system}",
                                             f"gradient={gradient}")
    cpu, gpu = metrics["cpu"], metrics["gpu"]
    assert gpu["status"] == "ok" and gpu["device"].startswith(GPU)
    assert torch.allclose(params["cpu"], params["gpu"], rtol=1e-6, atol=1e-9)
    later = "extrap_error_rel" if "extrap_error_rel" in cpu else "heldout_error_rel"
    for key in ("final_loss", "error_rel", later):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-5), key


@pytest.mark.cuda
def test_compiled_fast_loop_on_cuda_gives_the_eager_numbers(tmp_path: Path):
    # solver.compile=true: each whole step of the fast loop through torch.compile (Triton
    # kernels on a GPU), forward and checkpoint replay, against the eager loop on the same device
    metrics, params = {}, {}
    for compiled in ("false", "true"):
        metrics[compiled], params[compiled] = _train(
            tmp_path / compiled, GPU, "system=spiral", "gradient=checkpoint",
            f"solver.compile={compiled}")
    assert metrics["false"]["solver_loop"] == "fast"
    assert metrics["true"]["solver_loop"] == "fast, compiled"
    assert torch.allclose(params["true"], params["false"], rtol=1e-6, atol=1e-9)
    for key in ("final_loss", "error_rel", "extrap_error_rel", "nfe_forward_per_iter"):
        assert metrics["true"][key] == pytest.approx(metrics["false"][key], rel=1e-5), key


@pytest.mark.cuda
@pytest.mark.parametrize("name,tiny,keys", [
    ("spiral_vae", TINY_SPIRAL, ("reconstruction_mse", "extrapolation_forward_mse")),
    pytest.param("ecg_vae", TINY_ECG, ("reconstruction_mse", "gap_mse",
                                       "extrapolation_right_mse")),
])
def test_vae_command_is_the_same_on_cuda(tmp_path: Path, name, tiny, keys):
    experiment = SpiralVAE if name == "spiral_vae" else EcgVAE
    out = {}
    for side, dev in SIDES.items():
        cfg = compose_cfg(name, tiny + [f"device={dev}", "device.dtype=float64",
                                        "plots.enabled=false"])
        out[side] = loop.run(experiment, cfg, tmp_path / side)
    assert out["gpu"]["device"].startswith(GPU)
    for key in ("final_loss", *keys):
        assert np.isclose(out["gpu"][key], out["cpu"][key], rtol=1e-5), key


@pytest.mark.cuda
@pytest.mark.parametrize("model", ["odenet", "resnet"])
def test_classify_is_the_same_on_cuda(tmp_path: Path, model: str):
    # a tiny run each: the ODE-Net (checkpoint gradient, then the dial's solvers) and a ResNet
    extra = ["classify_model=resnet", "model.blocks=3"] if model == "resnet" else []
    out = {}
    for side, dev in SIDES.items():
        cfg = compose(COMMANDS["classify"], [*QUICK, *extra, f"device={dev}",
                                             "device.dtype=float64", "plots.enabled=false"])
        out[side] = loop.run(ClassifyExperiment, cfg, tmp_path / side)
    cpu, gpu = out["cpu"], out["gpu"]
    assert gpu["device"].startswith(GPU)
    for key in ("final_loss", "test_loss", "nfe_forward_per_iter", "nfe_eval"):
        assert np.isclose(gpu[key], cpu[key], rtol=1e-5), key
    assert (gpu["test_accuracy"], gpu["best_iteration"]) == (cpu["test_accuracy"],
                                                             cpu["best_iteration"])
    # the dial's accuracies and NFE at each solver (its times are the device's own)
    dial = sorted(k for k in cpu if k.startswith("dial_") and "time" not in k
                  and "seconds" not in k)
    assert bool(dial) == (model == "odenet")
    assert dial == sorted(k for k in gpu if k.startswith("dial_") and "time" not in k
                          and "seconds" not in k)
    for key in dial:
        if isinstance(cpu[key], str):
            assert gpu[key] == cpu[key], key
        else:
            assert np.isclose(gpu[key], cpu[key], rtol=1e-5, equal_nan=True), key


@pytest.mark.cuda
@pytest.mark.parametrize("reg", [[], ["reg.kinetic=0.01", "reg.jacobian=0.01"]],
                         ids=["plain", "rnode"])
def test_cnf_is_the_same_on_cuda(tmp_path: Path, reg: list[str]):
    # the exact trace: Hutchinson's noise is drawn on the device, so its draws differ
    out = {}
    for side, dev in SIDES.items():
        cfg = compose(COMMANDS["cnf"], [*SMALL, *reg, "model.trace=exact", f"device={dev}",
                                        "device.dtype=float64", "plots.enabled=false"])
        out[side] = loop.run(CNFExperiment, cfg, tmp_path / side)
    cpu, gpu = out["cpu"], out["gpu"]
    assert gpu["device"].startswith(GPU)
    for key in ("final_loss", "val_nll", "test_nll", "nfe_forward_per_iter", "nfe_eval"):
        assert np.isclose(gpu[key], cpu[key], rtol=1e-5), key
    if reg:  # the integrals the solver computed (metrics.json holds only their weights)
        rows = {}
        for side in SIDES:
            with open(tmp_path / side / "history.csv", newline="") as fh:
                rows[side] = list(csv.DictReader(fh))[-1]
        for key in ("kinetic", "jacobian"):
            assert float(rows["cpu"][key]) > 0, key
            assert np.isclose(float(rows["gpu"][key]), float(rows["cpu"][key]), rtol=1e-5), key


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
