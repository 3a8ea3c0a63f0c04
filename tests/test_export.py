"""`odecli export`: the unrolled fixed-step solve against odecli's own, the refusals, and real
exports of a `train` and a `classify` run run by onnxruntime / torch.export.load against
odecli's answers on the run's data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import odecli
from odecli.numerics.methods import FIXED_RK
from odecli.numerics.solve import SolverSpec, solve
from odecli.numerics.unrolled import UnrolledSolve

torch.set_num_threads(1)


class Spiral(torch.nn.Module):
    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=y.dtype)
        return (y**3) @ a + 0.1 * torch.sin(t)


@pytest.mark.parametrize("method", FIXED_RK)
def test_an_unrolled_solve_is_odecli_solve_with_the_same_fixed_steps(method):
    y0 = torch.tensor([[1.0, 0.0], [0.5, -0.8]], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    spec = SolverSpec(method, "direct", step_size=0.2 / 3)
    expected = solve(Spiral(), y0, t, spec, grad=False)
    got = UnrolledSolve(Spiral(), method, 3)(y0, t)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-12)
    assert UnrolledSolve(Spiral(), method, 3).nfe(6) == 5 * 3 * {
        "euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}[method]


def test_an_adaptive_solver_is_refused_in_one_line_saying_how_to_choose_steps(cli, tmp_path):
    res = cli("export", str(tmp_path), "--out", str(tmp_path / "m.onnx"), "--solver", "dopri5")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "adaptive solver 'dopri5'" in lines[0] and "--solver rk4 --steps" in lines[0]
    assert "--tolerance" in lines[0]
    assert not (tmp_path / "m.onnx").exists()


def test_a_wrong_suffix_or_format_is_one_line(cli, tmp_path):
    res = cli("export", str(tmp_path), "--out", str(tmp_path / "m.bin"))
    assert res.exit_code == 2 and "--out must end in .onnx or .pt2" in res.stderr
    res = cli("export", str(tmp_path), "--out", str(tmp_path / "m.onnx"), "--format", "pt2")
    assert res.exit_code == 2 and "a --format pt2 file ends in .pt2" in res.stderr


# ------------------------------------------------------------------ real exports (slow)

@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "lotka"
    odecli.run("train", ["system=lotka", "system.data_size=60", "train.niters=20",
                         "gradient=direct", "quiet=true", "plots.enabled=false"], folder)
    return folder


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "digits"
    odecli.run("classify", ["train.niters=3", "model.field=mlp", "model.width=16", "quiet=true",
                            "dial.enabled=false", "plots.enabled=false"], folder)
    return folder


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_a_train_trajectory_exported_to_onnx_equals_odecli_within_1e5(cli, train_run,
                                                                      tmp_path):
    out = tmp_path / "lotka.onnx"
    res = cli("export", str(train_run), "--out", str(out), "--steps", "8",
              "--tolerance", "1e-5")
    assert res.exit_code == 0, res.stderr
    assert "max error" in res.stdout
    meta = json.loads((tmp_path / "export.json").read_text())["lotka.onnx"]
    assert meta["solver"] == "rk4" and meta["steps"] == 8 and meta["format"] == "onnx"
    assert meta["what"] == "trajectory" and meta["command"] == "train"
    assert meta["error"] <= 1e-5 and meta["tolerance"] == 1e-5 and meta["within_tolerance"]
    assert meta["odecli_version"] == odecli.__version__
    assert meta["source_run"] == str(train_run.resolve())
    assert meta["file_vs_torch"] < 1e-5 and meta["batch_of_one_vs_batch"] < 1e-6
    from odecli.export import formats

    assert formats.read_metadata("onnx", out)["error"] == meta["error"]
    # the file, run here by onnxruntime on the run's data, against odecli.load's predict
    model = odecli.load(train_run)
    exp = model.experiment
    y0 = np.concatenate([model.truth[:1], exp.obs.y[::15].double().numpy()]).astype(np.float32)
    t = model.times.astype(np.float32)
    got = _session(out).run(None, {"y0": y0, "t": t})[0]
    want = model.predict(y0, t, solver="dopri5", rtol=1e-7, atol=1e-9)
    assert got.shape == want.shape == (len(t), len(y0), 2)
    assert np.abs(got - want).max() < 1e-5
    # dynamic batch and number of times
    few = _session(out).run(None, {"y0": y0[:1], "t": t[:7]})[0]
    assert few.shape == (7, 1, 2) and np.abs(few - got[:7, :1]).max() < 1e-6


@pytest.mark.slow
def test_the_field_alone_exported_to_pt2_equals_odecli(cli, train_run, tmp_path):
    out = tmp_path / "field.pt2"
    res = cli("export", str(train_run), "--out", str(out), "--what", "field")
    assert res.exit_code == 0, res.stderr
    meta = json.loads((tmp_path / "export.json").read_text())["field.pt2"]
    assert meta["what"] == "field" and meta["solver"] is None and meta["error"] < 1e-5
    model = odecli.load(train_run)
    y = model.experiment.obs.y.detach().numpy()[:17]
    with torch.no_grad():
        got = torch.export.load(str(out)).module()(torch.tensor(1.5), torch.as_tensor(y))
    got = got.numpy()
    assert np.abs(got - model.f(1.5, y)).max() < 1e-5


@pytest.mark.slow
def test_a_classify_run_exported_to_onnx_gives_odecli_probabilities(cli, classify_run,
                                                                   tmp_path):
    out = tmp_path / "digits.onnx"
    res = cli("export", str(classify_run), "--out", str(out), "--steps", "16",
              "--tolerance", "1e-5")
    assert res.exit_code == 0, res.stderr
    meta = json.loads((tmp_path / "export.json").read_text())["digits.onnx"]
    assert meta["what"] == "logits" and meta["steps"] == 16 and meta["error"] <= 1e-5
    model = odecli.load(classify_run)
    exp = model.experiment
    images = exp.data.x[exp.data.test[:128]].astype(np.float32)
    logits = _session(out).run(None, {"images": images})[0]
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 1).numpy()
    want = model.predict_proba(images, solver="dopri5", rtol=1e-6, atol=1e-6)
    assert np.abs(probs - want).max() < 1e-5
    assert (logits.argmax(1) == model.predict(images)).mean() > 0.99


@pytest.mark.slow
def test_an_export_over_the_tolerance_is_refused_or_forced_with_its_error_named(
        cli, train_run, tmp_path):
    out = tmp_path / "coarse.pt2"
    args = ("export", str(train_run), "--out", str(out), "--solver", "euler", "--steps", "1",
            "--tolerance", "1e-9")
    res = cli(*args)
    assert res.exit_code == 2 and "export refused: max error" in res.stderr
    assert "raise --steps" in res.stderr and list(tmp_path.iterdir()) == []
    res = cli(*args, "--force")
    assert res.exit_code == 0, res.stderr
    entries = json.loads((tmp_path / "export.json").read_text())
    (name, meta), = entries.items()
    assert name.startswith("coarse.err") and name.endswith(".pt2") and (tmp_path / name).exists()
    assert not meta["within_tolerance"] and meta["error"] > 1e-9


def test_other_commands_are_not_exported(tmp_path):
    from odecli.errors import ConfigError
    from odecli.export import targets

    with pytest.raises(ConfigError, match="a 'cnf' run is not exported"):
        targets.build("cnf", None, None, "rk4", 4)


@pytest.mark.slow
def test_a_data_file_run_exports_in_the_files_units(cli, tmp_path):
    run = tmp_path / "hare_lynx"
    odecli.run("train", ["system=hare_lynx", "train.niters=5", "quiet=true",
                         "plots.enabled=false"], run)
    out = tmp_path / "out" / "hl.pt2"
    out.parent.mkdir()
    res = cli("export", str(run), "--out", str(out), "--steps", "8", "--force")
    assert res.exit_code == 0, res.stderr
    model = odecli.load(run)
    (t, _), = model.trajectories.values()
    y0 = np.array([[30.0, 4.0], [20.0, 10.0]])
    with torch.no_grad():
        got = torch.export.load(str(out)).module()(torch.tensor(y0, dtype=torch.float32),
                                                   torch.tensor(t[:9], dtype=torch.float32))
    want = model.predict(y0, t[:9], solver="dopri5", rtol=1e-7, atol=1e-9)
    assert np.abs(got.numpy() - want).max() < 1e-6 * np.abs(want).max() * 10
