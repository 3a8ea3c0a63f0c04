"""Config schemas: one rule per key, every default in the YAML, no orphan key on either side."""

from __future__ import annotations

import math
from typing import Any

import pytest

from odecli.cde import schema as cde
from odecli.classify import schema as cls
from odecli.cli.configs_index import options
from odecli.dynamics import models, systems
from odecli.dynamics import schema as dyn
from odecli.engine import schema as engine
from odecli.errors import ConfigError
from odecli.fields import (
    Bool,
    Choice,
    Float,
    Free,
    Int,
    List,
    Range,
    Rule,
    Schema,
    Str,
    Tagged,
    Union,
)
from odecli.flows import schema as flw
from odecli.latent import schema as lat
from odecli.launch.bridge import compose
from odecli.numerics import device, solve
from odecli.numerics import schema as num
from odecli.paths import config_dir, yaml_node
from odecli.registry import COMMANDS

ROOT = config_dir()
CHECKS = {"train": dyn.check_train, "spiral-vae": lat.check_spiral_vae,
          "ecg-vae": lat.check_ecg_vae, "classify": cls.check_classify,
          "cnf": flw.check_cnf, "cde": cde.check_cde}
# each command's whole-config schema, as its experiment declares it
SCHEMAS = {name: cmd.experiment_class().schema for name, cmd in COMMANDS.items()}


def composed(command: str, overrides: list[str] | None = None) -> Any:
    return compose(COMMANDS[command], overrides or [])


def refused(command: str, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        CHECKS[command](composed(command, overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- the mechanism

def test_values_come_back_as_plain_python_of_the_declared_type():
    s = Schema({"n": Int(1), "x": Float(0), "flag": Bool(), "name": Choice("a", "b"),
                "text": Str(nullable=True), "r": Range(), "v": List(Float(), length=2),
                "free": Free(mapping=True)})
    out = s.check({"n": 3, "x": 2, "flag": True, "name": "b", "text": None, "r": 0.5,
                   "v": [1, 2.5], "free": {"k": [1]}}, "node")
    assert out == {"n": 3, "x": 2.0, "flag": True, "name": "b", "text": None, "r": [0.5, 0.5],
                   "v": [1.0, 2.5], "free": {"k": [1]}}
    assert type(out["x"]) is float and type(out["v"][0]) is float


@pytest.mark.parametrize("field,value,message", [
    (Int(1), True, "k must be a positive integer, got True"),
    (Int(1), 1e3, "k must be a positive integer, got 1000.0"),
    (Int(0), -1, "k must be an integer >= 0, got -1"),
    (Int(2, 5), 6, "k must be an integer in [2, 5], got 6"),
    (Float(0, low_open=True), False, "k must be a positive number, got False"),
    (Float(0), math.inf, "k must be a non-negative number, got inf"),
    (Float(0), math.nan, "k must be a non-negative number, got nan"),
    (Float(0, 1, low_open=True), 0, "k must be in (0, 1], got 0"),
    (Float(0, 1, low_open=True, high_open=True), 1.0, "k must be in (0, 1), got 1.0"),
    (Bool(), "yes", "k must be true or false, got 'yes'"),
    (Choice("x", "y"), "z", "unknown k 'z'; choose one of: x, y"),
    (Str(), 5, "k must be text, got 5"),
    (Range(), [0.5, 0.2], "k must be a number or [low, high] with 0 <= low <= high"),
    (Range(), -1, "k must be a number or [low, high]"),
    (List(Float(), length=2), [1.0], "k must have 2 entries, got 1"),
    (List(Float(), length=2), [1.0, "a"], "k[1] must be a number, got 'a'"),
    (List(Int(1)), "abc", "k must be a list"),
    (Union(Int(1), List(Int(1)), message="{path} must be an int or ints, got {value!r}"),
     [1, 0], "k must be an int or ints, got [1, 0]"),
])
def test_a_bad_value_is_one_line_naming_the_key(field, value, message):
    with pytest.raises(ConfigError) as info:
        Schema({"k": field}).check({"k": value})
    assert message in str(info.value)


def test_missing_and_unknown_keys_name_the_full_key():
    s = Schema({"sub": Schema({"lr": Float(0)})})
    with pytest.raises(ConfigError, match=r"^train.sub.lr is missing from the config$"):
        s.check({"sub": {}}, "train")
    with pytest.raises(ConfigError, match=r"^unknown config key 'train.sub.lrr' \(did you "
                                          r"mean 'train.sub.lr'\?\)$"):
        s.check({"sub": {"lr": 1.0, "lrr": 2}}, "train")


def test_partial_checks_skip_absent_keys_and_their_rules_only():
    s = Schema({"lo": Float(), "hi": Float()}, [Rule(lambda v: v["lo"] <= v["hi"],
                                                     "{p}lo ({lo:g}) > {p}hi ({hi:g})")])
    assert s.check({"lo": 5}, "r", partial=True) == {"lo": 5.0}
    with pytest.raises(ConfigError, match=r"r.lo \(5\) > r.hi \(1\)"):
        s.check({"lo": 5, "hi": 1}, "r", partial=True)
    with pytest.raises(ConfigError, match="unknown config key 'r.x'"):
        s.check({"x": 1}, "r", partial=True)


def test_extend_adds_keys_and_keeps_rules():
    base = Schema({"a": Int()}, [Rule(lambda v: v["a"] > 0, "{p}a must be > 0")])
    more = base.extend({"b": Bool()})
    assert list(more.fields) == ["a", "b"] and list(base.fields) == ["a"]
    with pytest.raises(ConfigError, match="n.a must be > 0"):
        more.check({"a": 0, "b": True}, "n")


def test_a_tagged_node_has_its_variants_keys():
    t = Tagged("name", {"one": Schema({"x": Int()}), "two": Schema({})})
    assert t.check({"name": "one", "x": 1}, "g") == {"name": "one", "x": 1}
    with pytest.raises(ConfigError, match="unknown config key 'g.x'"):
        t.check({"name": "two", "x": 1}, "g")
    with pytest.raises(ConfigError, match="unknown g.name 'three'; choose one of: one, two"):
        t.check({"name": "three"}, "g")


def test_schemas_hold_no_defaults():
    """A key missing from the config is an error, never a value chosen in code."""
    cfg = composed("spiral-vae")
    for node, key in (("data", "window"), ("data", "n_spirals"), ("data", "noise_std"),
                      ("model", "obs_noise_std"), ("train", "partial_min")):
        plain = lat.check_spiral_vae(cfg)
        del plain[node][key]
        with pytest.raises(ConfigError, match=rf"^{node}\.{key} is missing from the config$"):
            lat.SPIRAL_VAE.check(plain)


# ---------------------------------------------------------------------------- the YAML files

def _declared(field: Any, node: Any, prefix: str) -> set[str]:
    """The keys a schema declares for this node (a tagged node: its variant's), flattened."""
    if isinstance(field, Tagged):
        field = field.variants[node[field.tag]]
    if not isinstance(field, Schema):
        return {prefix[:-1]}
    keys: set[str] = set()
    for key, sub in field.fields.items():
        keys |= _declared(sub, node.get(key) if isinstance(node, dict) else None,
                          f"{prefix}{key}.")
    return keys


def _in_yaml(node: Any, schema: Any, prefix: str = "") -> set[str]:
    """The keys the composed config has, flattened down to the schema's leaves."""
    if isinstance(schema, Tagged):
        schema = schema.variants.get(node.get(schema.tag), Schema({}))
    if not isinstance(schema, Schema) or not isinstance(node, dict):
        return {prefix[:-1]}
    keys: set[str] = set()
    for key, value in node.items():
        keys |= _in_yaml(value, schema.fields.get(key, Free()), f"{prefix}{key}.")
    return keys


def _overrides() -> list[tuple[str, list[str]]]:
    cases: list[tuple[str, list[str]]] = [(c, []) for c in COMMANDS]
    for group in ("system", "model", "solver", "gradient", "device", "experiment"):
        cases += [("train", [f"{group}={name}"]) for name, _ in options(ROOT, group)]
    for group in ("solver", "gradient", "device"):
        cases += [(c, [f"{group}={name}"]) for c in ("spiral-vae", "ecg-vae")
                  for name, _ in options(ROOT, group)]
    return cases


@pytest.mark.parametrize("command,overrides", _overrides(),
                         ids=lambda x: x if isinstance(x, str) else ",".join(x) or "defaults")
def test_composed_defaults_pass_and_no_key_is_orphaned(command, overrides):
    assert set(SCHEMAS) == set(CHECKS)
    cfg = composed(command, overrides)
    out = CHECKS[command](cfg)
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    schema = SCHEMAS[command]
    in_yaml, declared = _in_yaml(plain, schema), _declared(schema, plain, "")
    assert declared - in_yaml == set(), "schema keys missing from the YAML"
    assert in_yaml - declared == set(), "YAML keys no schema knows"
    assert set(out) == set(plain)


def test_every_schema_option_has_a_config_file_and_back():
    for group, tagged in (("gradient", num.GRADIENT), ("device", num.DEVICE)):
        assert {n for n, _ in options(ROOT, group)} == set(tagged.variants), group
    assert {n for n, _ in options(ROOT, "system")} == set(dyn.SYSTEMS)
    assert {n for n, _ in options(ROOT, "solver")} == set(solve.METHODS)


def test_names_in_schemas_match_what_the_code_implements():
    assert list(systems.REGISTRY) == [n for n in dyn.SYSTEMS if n not in dyn.FILE_SYSTEMS]
    assert tuple(models.ACTIVATIONS) == dyn.ACTIVATIONS
    assert tuple(device.DTYPES) == num.DTYPES and device.DEVICES == num.DEVICES
    assert tuple(num.GRADIENT.variants) == solve.GRADIENTS
    optim = pytest.importorskip("odecli.engine.optim")
    assert tuple(optim.OPTIMIZERS) == engine.OPTIMIZERS


# ---------------------------------------------------------------------------- fixed rules

@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_shares_the_engines_train_keys(command):
    train = SCHEMAS[command].fields["train"]
    for key, field in engine.TRAIN.fields.items():
        assert train.fields[key] is field, key
    out = CHECKS[command](composed(command))["train"]
    assert set(engine.TRAIN.fields) <= set(out)


@pytest.mark.parametrize("command", ["spiral-vae", "ecg-vae"])
def test_vaes_keep_todays_optimizer_as_their_yaml_default(command):
    out = CHECKS[command](composed(command))["train"]
    assert (out["optimizer"], out["weight_decay"], out["grad_clip"]) == ("adam", 0.0, None)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_lr_min_above_lr_is_refused_by_every_command(command):
    message = refused(command, ["train.lr_min=1"])
    assert message.startswith("train.lr_min (1) must lie between 0 and train.lr (")
    assert refused(command, ["train.lr_min=-1"]) == (
        "train.lr_min must be a non-negative number, got -1")
    assert refused(command, ["train.lr=0"]) == "train.lr must be a positive number, got 0"


@pytest.mark.parametrize("command", ["spiral-vae", "ecg-vae"])
def test_negative_kl_warmup_is_refused(command):
    assert refused(command, ["train.kl_warmup=-5"]) == (
        "train.kl_warmup must be an integer >= 0, got -5")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_negative_checkpoint_interval_is_refused_everywhere(command):
    assert refused(command, ["train.checkpoint_every=-3"]) == (
        "train.checkpoint_every must be an integer >= 0, got -3")


@pytest.mark.parametrize("command", ["spiral-vae", "ecg-vae"])
def test_a_scipy_odernn_solver_is_refused_naming_its_own_key(command):
    message = refused(command, ["model.odernn_method=scipy_solver"])
    assert message.startswith("unknown model.odernn_method 'scipy_solver'; choose one of: ")
    assert "solver=" not in message
    assert set(lat.ODERNN_METHODS) == set(solve.METHODS) - {"scipy_solver"}


def test_yaml_values_are_what_the_vaes_get():
    spiral = lat.check_spiral_vae(composed("spiral-vae"))
    assert (spiral["data"]["n_spirals"], spiral["data"]["window"]) == (1000, 0.5)
    assert spiral["data"]["noise_std"] == 0.05 and spiral["model"]["obs_noise_std"] == 0.05
    assert spiral["train"]["partial_min"] == 0.2
    assert spiral["data"]["radius_start"] == [0.2, 0.4]
    ecg = lat.check_ecg_vae(composed("ecg-vae"))
    assert ecg["model"]["obs_noise_std"] == 0.03 and ecg["data"]["record"] == "100"


@pytest.mark.parametrize("command,overrides,message", [
    ("train", ["+train.extra=1"], "unknown config key 'train.extra'"),
    ("train", ["+system.matrix_seed=3"], "unknown config key 'system.matrix_seed'"),
    ("train", ["device=cpu", "+device.index=1"], "unknown config key 'device.index'"),
    ("train", ["gradient=direct", "+gradient.rtol=1e-3"], "unknown config key 'gradient.rtol'"),
    ("train", ["system=lotka", "system.y0=[1.0,-1.0]"], "system.y0 must be positive"),
    ("train", ["system=mlp", "system.widths=[2,5,3]"], "system.widths must start and end"),
    ("train", ["solver.rtol=null"], "solver.rtol and solver.atol must be positive numbers"),
    ("train", ["train.batch_time=1"], "train.batch_time must be an integer >= 2, got 1"),
    ("train", ["model.width=[8,0]"], "model.width must be a positive integer or a list"),
    ("train", ["seed=abc"], "seed must be an integer in [0, 4294967295], got 'abc'"),
    ("spiral-vae", ["data.n_spirals=2"], "leave no training spirals"),
    ("spiral-vae", ["data.window=0"], "data.window must be in (0, 1], got 0"),
    ("spiral-vae", ["train.partial_share=2"], "train.partial_share must be in [0, 1], got 2"),
    ("spiral-vae", ["model.time_input=true"], "model.time_input=false"),
    ("spiral-vae", ["+model.time_span=1.0"], "unknown config key 'model.time_span'"),
    ("ecg-vae", ["tasks.gap_fraction=1.5"], "tasks.gap_fraction must be in (0, 1), got 1.5"),
    ("ecg-vae", ["tasks.weights.gap=-1"], "tasks.weights.gap must be a non-negative number"),
    ("ecg-vae", ["tasks.weights={reconstruction:0,gap:0,right:0,left:0}"],
     "tasks.weights must not all be zero"),
    ("ecg-vae", ["data.split=[0.5,0.5]"], "data.split must have 3 entries"),
    ("ecg-vae", ["data.n_points=4"], "data.n_points must be an integer >= 8, got 4"),
    ("ecg-vae", ["model.time_span=0"], "model.time_span must be a positive number, got 0"),
])
def test_bad_values_are_refused_with_their_key(command, overrides, message):
    assert message in refused(command, overrides)


def test_an_integer_record_name_is_text():
    out = lat.check_ecg_vae(composed("ecg-vae", ["data.record=101", "data.lead=MLII"]))
    assert (out["data"]["record"], out["data"]["lead"]) == ("101", "MLII")


# ---------------------------------------------------------------------------- the builders

def test_solver_spec_takes_what_a_partial_node_lacks_from_the_yaml():
    spec = solve.SolverSpec.from_cfg({"method": "euler"}, {"name": "direct"})
    euler = yaml_node("solver/euler.yaml")
    assert (spec.method, spec.gradient, spec.step_size) == ("euler", "direct",
                                                            euler["step_size"])
    spec = solve.SolverSpec.from_cfg({"method": "dopri5", "rtol": 1e-3}, {"name": "adjoint"})
    speed, adjoint = yaml_node("solver/common/speed.yaml"), yaml_node("gradient/adjoint.yaml")
    assert (spec.rtol, spec.atol) == (1e-3, yaml_node("solver/dopri5.yaml")["atol"])
    assert (spec.fast, spec.compile) == (speed["fast"], speed["compile"])
    assert (spec.adjoint_rtol, spec.seminorm) == (adjoint["rtol"], adjoint["seminorm"])
    # the same from the constructor, which scripts and tests use
    assert solve.SolverSpec("dopri5", "adjoint", rtol=1e-3) == spec
    with pytest.raises(ConfigError, match="unknown solver method 'rk45'"):
        solve.SolverSpec.from_cfg({"method": "rk45"}, {"name": "direct"})
    with pytest.raises(ConfigError, match="unknown solver method 'rk45'"):
        solve.SolverSpec("rk45", "direct")
    with pytest.raises(ConfigError, match="unknown config key 'gradient.rtol'"):
        solve.SolverSpec.from_cfg({"method": "euler"}, {"name": "direct", "rtol": 1e-3})


def test_solver_spec_reads_the_composed_nodes():
    cfg = composed("train", ["gradient=adjoint", "gradient.rtol=1e-4", "gradient.seminorm=true"])
    spec = solve.SolverSpec.from_cfg(cfg.solver, cfg.gradient)
    assert (spec.rtol, spec.atol, spec.adjoint_rtol, spec.seminorm) == (1e-5, 1e-6, 1e-4, True)


def test_a_partial_system_node_takes_its_missing_keys_from_the_yaml():
    s = systems.check({"name": "lotka", "y0": [1.0, 2.0]})
    assert (s["a"], s["b"], s["c"], s["d"], s["data_size"]) == (1.5, 1.0, 3.0, 1.0, 200)
    assert systems.SPIRAL_A == [[-0.1, 2.0], [-2.0, -0.1]]
    with pytest.raises(ConfigError, match="system.a must be a positive number, got 0"):
        systems.build({"name": "lotka", "a": 0})


def test_data_and_device_nodes_are_checked_by_their_schemas():
    from odecli.dynamics import data

    assert data.check_data({"observe_fraction": 0.4}) == (0.4, 0.0)
    with pytest.raises(ConfigError, match="unknown config key 'data.noise'"):
        data.check_data({"noise": 0.1})
    with pytest.raises(ConfigError, match="unknown device 'tpu'; choose one of: cpu, cuda"):
        device.setup({"name": "tpu"})
    with pytest.raises(ConfigError, match="device.threads must be a positive integer"):
        device.setup({"name": "cpu", "dtype": "float32", "threads": 0})
