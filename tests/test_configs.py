"""Config composition: every option of every group, and the two reference presets."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from odecli.cli.configs_index import options
from odecli.dynamics.dispatch import TrainExperiment
from odecli.errors import ConfigError, OdecliError
from odecli.numerics.solve import ADAPTIVE, METHODS
from odecli.paths import config_dir

ROOT = config_dir()


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_defaults_compose_to_the_documented_run():
    cfg = make()
    assert cfg.system.name == "spiral"
    assert cfg.model.depth == 1 and cfg.model.width == 50 and cfg.model.activation == "tanh"
    assert cfg.solver.method == "dopri5"
    assert cfg.gradient.name == "checkpoint"
    assert cfg.device.name == "cpu" and cfg.device.threads == 1
    TrainExperiment.validate(cfg)


@pytest.mark.parametrize("name", [n for n, _ in options(ROOT, "system")])
def test_every_system_composes_and_validates(name):
    cfg = make(f"system={name}")
    assert cfg.system.name == name
    if name == "file":  # the user's file: refused, one line, until system.path names it
        with pytest.raises(OdecliError, match=r"^system.path is not set: give the data file"):
            TrainExperiment.validate(cfg)
        return
    TrainExperiment.validate(cfg)


def test_mlp_system_defaults_to_a_deep_time_dependent_field():
    cfg = make("system=mlp")
    assert cfg.model.depth == 3 and list(cfg.model.width) == [150, 50, 50]
    assert cfg.model.time_dependent is True
    # The user's choice still wins over the system's suggestion.
    cfg = make("system=mlp", "model=small", "model.time_dependent=false")
    assert cfg.model.depth == 1 and cfg.model.time_dependent is False


@pytest.mark.parametrize("name", ["small", "deep"])
def test_every_model_composes(name):
    cfg = make(f"model={name}")
    TrainExperiment.validate(cfg)


@pytest.mark.parametrize("method", METHODS)
def test_every_torchdiffeq_method_has_a_solver_option(method):
    cfg = make(f"solver={method}")
    assert cfg.solver.method == method
    if method in ADAPTIVE:
        assert cfg.solver.rtol > 0 and cfg.solver.atol > 0
    else:
        assert cfg.solver.step_size > 0
    TrainExperiment.validate(cfg)


@pytest.mark.parametrize("name", ["checkpoint", "adjoint", "direct"])
def test_every_gradient_mode_composes(name):
    cfg = make(f"gradient={name}")
    assert cfg.gradient.name == name
    TrainExperiment.validate(cfg)


@pytest.mark.parametrize("name", ["cpu", "auto", "cuda"])
def test_every_device_composes(name):
    cfg = make(f"device={name}")
    assert cfg.device.name == name
    if name == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=auto"):
            TrainExperiment.validate(cfg)
    else:
        TrainExperiment.validate(cfg)


def test_depth_and_width_keys_shape_the_network():
    from odecli.dynamics import models

    cfg = make("model.depth=3", "model.width=16", "model.activation=relu")
    field = models.build(cfg.model, 2)
    linears = [m for m in field.net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 16, 16, 2]
    assert any(isinstance(m, torch.nn.ReLU) for m in field.net)


def test_seed_notebook_preset_is_the_seed_protocol():
    cfg = make("experiment=seed_notebook")
    assert cfg.system.name == "spiral"
    assert list(cfg.system.y0) == [1.0, 1.0]
    assert (cfg.system.t0, cfg.system.t1, cfg.system.data_size) == (-1.0, 1.0, 200)
    t = cfg.train
    assert (t.batch_time, t.batch_size, t.niters, t.test_freq) == (10, 20, 5000, 50)
    assert (t.optimizer, t.lr, t.loss, t.schedule) == ("rmsprop", 1e-3, "l1", "constant")
    assert t.sampling == "uniform"
    assert cfg.solver.method == "dopri5" and cfg.gradient.name == "adjoint"
    assert cfg.model.width == 50 and cfg.model.normalize is False and cfg.model.init == "seed"
    assert cfg.plots.gif is True
    TrainExperiment.validate(cfg)


def test_ode_demo_preset_is_torchdiffeqs_protocol():
    cfg = make("experiment=ode_demo")
    assert cfg.system.name == "spiral_cubic"
    assert list(cfg.system.y0) == [2.0, 0.0]
    assert (cfg.system.t0, cfg.system.t1, cfg.system.data_size) == (0.0, 25.0, 1000)
    t = cfg.train
    assert (t.batch_time, t.batch_size, t.niters) == (10, 20, 2000)
    assert (t.optimizer, t.lr, t.loss, t.sampling) == ("rmsprop", 1e-3, "l1", "uniform")
    assert (cfg.solver.rtol, cfg.solver.atol) == (1e-7, 1e-9)
    assert cfg.model.input_power == 3 and cfg.gradient.name == "direct"
    TrainExperiment.validate(cfg)


def test_ode_fast_preset_keeps_ode_demos_problem_and_changes_only_how_it_trains():
    fast, demo = make("experiment=ode_fast"), make("experiment=ode_demo")
    for key in ("system", "data"):
        assert fast[key] == demo[key], key
    assert (fast.model.width, fast.model.depth, fast.model.input_power) == (50, 1, 3)
    assert fast.train.batch_time == demo.train.batch_time == 10
    assert (fast.train.niters, fast.train.batch_size, fast.train.sampling) == (
        400, 100, "arclength")
    assert (fast.solver.rtol, fast.solver.atol) == (1e-3, 1e-4)
    TrainExperiment.validate(fast)
