"""system=equations: right-hand sides typed as text, parsed safely, solved like any system."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, read_metrics, run_dirs
from test_training import make, trainer

from odecli.dynamics import equations, systems
from odecli.errors import ConfigError

LOTKA_RHS = ["a*x - b*x*y", "d*x*y - c*y"]
LOTKA_PARAMS = {"a": 1.5, "b": 1.0, "c": 3.0, "d": 1.0}
# the issue's own example, as typed on a command line
LOTKA_OVERRIDES = ['system.rhs=["a*x - b*x*y", "d*x*y - c*y"]',
                   "system.params={a: 1.5, b: 1, c: 3, d: 1}"]

# Each of these must be refused without running anything; the message names the token.
HOSTILE = [
    ("__import__('os').system('touch MARKER')", "__import__"),
    ("open('MARKER', 'w')", "open"),
    ("x.__class__", "x.__class__"),
    ("(lambda: 1)()", "lambda"),
    ("exec('1')", "exec"),
    ("eval('x')", "eval"),
    ("globals()", "globals"),
    ("x[0]", "x[0]"),
    ("__builtins__", "__builtins__"),
    ("sin.__self__", "sin.__self__"),
    ("[x for x in ()]", "[x for x in ()]"),
    ("x if y else 0", "x if y else 0"),
    ("sin(x, key=1)", "key=1"),
    ("'text'", "'text'"),
    ("x^2", "^"),
    ("9**9**9", "9**9**9"),
    ("10**400", "10**400"),
    ("1e999", "1e999"),
    ("x y", "cannot read"),
]


@pytest.mark.parametrize("text,token", HOSTILE)
def test_hostile_text_is_refused_naming_the_token(text: str, token: str):
    with pytest.raises(ConfigError) as info:
        equations.parse(text, ["x", "y", "t"], "system.rhs[0]")
    message = str(info.value)
    assert "\n" not in message and message.startswith("system.rhs[0]")
    assert token in message


@pytest.mark.parametrize("text", [t for t, _ in HOSTILE[:3]])
def test_the_cli_refuses_hostile_equations_and_runs_nothing(cli, outputs: Path, tmp_path: Path,
                                                            monkeypatch, text: str):
    monkeypatch.chdir(tmp_path)
    res = cli("train", "system=equations", f'system.rhs=["{text}", "x"]', *FAST)
    assert res.exit_code == 2
    assert res.stderr.startswith("error: system.rhs[0]") and res.stderr.count("\n") == 1
    assert not (tmp_path / "MARKER").exists()
    assert not outputs.exists()


def test_bounds_keep_parsing_short():
    allowed = ["x", "t"]
    with pytest.raises(ConfigError, match="longer than"):
        equations.parse("x+" * equations.MAX_TEXT + "x", allowed, "k")
    with pytest.raises(ConfigError, match="too long: more than"):
        equations.parse("+".join(["x"] * 400), allowed, "k")
    with pytest.raises(ConfigError, match="nested"):
        equations.parse("(" * 60 + "x" + ")" * 60 + "+" + "-" * 150 + "x", allowed, "k")
    with pytest.raises(ConfigError, match="cannot read|nested"):
        equations.parse("(" * 900 + "x" + ")" * 900, allowed, "k")
    with pytest.raises(ConfigError, match="constant out of range"):
        equations.parse("(1e200*1e200)", allowed, "k")
    with pytest.raises(ConfigError, match="is empty"):
        equations.parse("  ", allowed, "k")


@pytest.mark.parametrize("names,message", [
    (["x", "x"], "given twice"), (["t", "y"], "reserved"), (["sin"], "reserved"),
    (["__x"], "plain identifier"), (["2x"], "plain identifier"), (["for"], "plain identifier"),
])
def test_bad_variable_names_are_refused(names, message):
    with pytest.raises(ConfigError, match=message):
        equations.build_field(["0"] * len(names), names, {}, "system.rhs")


def test_parsed_expressions_compute_what_they_say():
    f = equations.build_field(["-k*sin(theta) + exp(-t) * abs(w) / 2", "sqrt(w**2) - max(w, 1)",
                               "pi*e - 3"], ["theta", "w", "z"], {"k": 2.0}, "r")
    assert f.time_dependent and f.param_names == ["k"]
    y = torch.tensor([[0.3, -1.5, 9.0]], dtype=torch.float64)
    out = f(torch.tensor(0.5, dtype=torch.float64), y)[0]
    th, w = 0.3, -1.5
    expected = [-2 * math.sin(th) + math.exp(-0.5) * abs(w) / 2, abs(w) - max(w, 1),
                math.pi * math.e - 3]
    assert out.tolist() == pytest.approx(expected, rel=1e-12)


def test_equations_with_lotka_volterra_match_system_lotka_to_1e_10():
    lv = systems.build({"name": "lotka"})
    for node in ({"name": "equations", "rhs": LOTKA_RHS, "params": LOTKA_PARAMS},
                 {"name": "equations"}):  # the defaults are Lotka-Volterra with numbers inline
        eq = systems.build(node)
        t = eq.full_t()
        assert torch.equal(t, lv.full_t()) and torch.equal(eq.y0, lv.y0)
        a, b = eq.trajectory(t), lv.trajectory(t)
        assert a.dtype == torch.float64
        assert float((a - b).abs().max()) <= 1e-10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_equations_with_lotka_volterra_fit_like_system_lotka(tmp_path: Path, dtype: str):
    runs = {}
    for name in ("equations", "lotka"):
        # configs/system/lotka.yaml also sets the model's output scale
        extra = [*LOTKA_OVERRIDES, "model.output_scale=rms"] if name == "equations" else []
        cfg = make(f"system={name}", *extra, "train.niters=6", "train.test_freq=3",
                   f"device.dtype={dtype}")
        (tmp_path / name).mkdir()
        runs[name] = trainer(cfg, tmp_path / name).run()
    for key in ("final_loss", "error_rel", "extrap_error_rel", "nfe_forward_per_iter"):
        assert runs["equations"][key] == pytest.approx(runs["lotka"][key], rel=1e-9), key


def _reference(name: str, y: np.ndarray, p: dict) -> np.ndarray:
    x = y.T
    if name == "lorenz":
        return np.stack([p["s"] * (x[1] - x[0]), x[0] * (p["r"] - x[2]) - x[1],
                         x[0] * x[1] - p["b"] * x[2]], -1)
    if name == "fitzhugh_nagumo":
        return np.stack([x[0] - x[0] ** 3 / 3 - x[1] + p["I"],
                         p["eps"] * (x[0] + p["a"] - p["b"] * x[1])], -1)
    if name == "pendulum":
        return np.stack([x[1], -p["k"] * np.sin(x[0]) - p["gamma"] * x[1]], -1)
    return np.stack([-p["beta"] * x[0] * x[1], p["beta"] * x[0] * x[1] - p["gamma"] * x[1],
                     p["gamma"] * x[1]], -1)


@pytest.mark.parametrize("name,dim", [("lorenz", 3), ("fitzhugh_nagumo", 2), ("pendulum", 2),
                                      ("sir", 3)])
def test_presets_are_the_equations_they_name(name: str, dim: int):
    s = systems.check({"name": name})
    system = systems.build(s)
    assert system.dim == dim and len(system.variables) == dim
    y = np.random.default_rng(0).normal(size=(16, dim))
    got = system.field(torch.tensor(0.0, dtype=torch.float64), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(got, _reference(name, y, s["params"]), rtol=1e-12)


@pytest.mark.parametrize("overrides,message", [
    (["system.y0=[1.0]"], "system.rhs has 2 right-hand side(s) but system.y0 1 entries"),
    (["system.variables=[p]"], "system.variables names 1 variables for 2"),
    (['system.rhs=["a*x", "q*y"]'], "unknown name"),
    (['system.rhs=["log(x - 1)", "y"]'], "is not finite at system.y0"),
    # x' = x**3 from 1 reaches infinity at t = 0.5: the simulation, not training, fails
    (['system.rhs=["x**3", "y"]', "system.params=null"],
     "the true system 'equations' cannot be solved from y0 [1.0, 1.0] over t from 0 to"),
    (["system.params={a: abc}"], "system.params.a must be a number"),
    (['model.known.rhs=["a*x - x*y", "x*y - 3*y"]', "model.known.params={a: 1.5}",
      "model.known.network=false", "model.known.trainable=false"],
     "model.known.network=false leaves nothing to train unless model.known.trainable=true"),
    (['model.known.rhs=["x - x*y", "x*y - 3*y"]', "model.known.params={}",
      "model.known.network=false"], "model.known.params names the parameters to fit"),
])
def test_bad_equation_configs_are_one_line_exit_2(cli, outputs, overrides, message):
    res = cli("train", "system=equations", *overrides, *FAST)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and not outputs.exists()


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint", "direct"])
def test_time_dependent_equations_train_with_every_gradient(tmp_path: Path, gradient: str):
    cfg = make("system=equations", 'system.rhs=["y", "-x + 0.3*cos(t)"]', "system.params=null",
               "model.time_dependent=true", f"gradient={gradient}", "train.niters=3",
               "train.test_freq=3")
    exp_metrics = trainer(cfg, tmp_path).run()  # noqa: F841 (named for the assert below)
    assert exp_metrics["status"] == "ok" and math.isfinite(exp_metrics["error_rel"])


@pytest.mark.parametrize("rhs,y0,figures,absent", [
    ('["-k*x"]', "[1.0]", ["time.png"], ["phase.png", "vector_field.png"]),
    ('["x2", "-x1", "x4", "-x3 - 0.1*x4"]', "[1.0, 0.0, 0.5, 0.0]",
     ["time.png", "phase.png"], ["vector_field.png"]),
])
def test_any_number_of_variables_trains_and_draws(cli, outputs, rhs, y0, figures, absent):
    res = cli("train", "system=equations", f"system.rhs={rhs}", f"system.y0={y0}",
              "system.params={k: 0.5}", *FAST)
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert m["status"] == "ok" and len(m["variables"]) == len(y0.split(","))
    for name in figures:
        assert (run / name).stat().st_size > 1000, name
    for name in absent:
        assert not (run / name).exists(), name


def test_parsing_never_touches_the_file_system(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text, _ in HOSTILE:
        with pytest.raises(ConfigError):
            equations.build_field([text, "x"], None, {}, "system.rhs")
    assert os.listdir(tmp_path) == []
