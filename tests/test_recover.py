"""`odecli recover`: equations back from a learned field (PySINDy), recover.json, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST

from odecli.dynamics import recover, systems

pytest.importorskip("pysindy")  # the test extra installs it (CI fails on this skip)


def lotka_states() -> tuple[np.ndarray, np.ndarray]:
    lot = systems.build({"name": "lotka"})
    y = lot.trajectory().numpy()
    rates = lot.field(torch.tensor(0.0), torch.as_tensor(y)).numpy()
    return y, rates


def test_the_true_field_gives_back_its_own_coefficients():
    y, rates = lotka_states()
    fit = recover.fit(y, rates, ["x", "y"], 2, 0.2)
    truth = [recover.polynomial(e, ["x", "y"]) for e in
             recover.true_equations(systems.build({"name": "lotka"}).field, ["x", "y"])]
    assert truth == [{(1, 0): 1.5, (1, 1): -1.0}, {(0, 1): -3.0, (1, 1): 1.0}]
    cmp = recover.compare(fit, truth, ["x", "y"])
    assert cmp["max_rel_error"] < 1e-8 and cmp["spurious"] == [] and cmp["missed"] == []
    assert cmp["structure_recovered"]
    assert fit.equation(0) == "1.5 x - 1 x y" and fit.equation(1) == "-3 y + 1 x y"
    assert min(fit.r2) > 1 - 1e-12


def test_threshold_is_a_share_so_units_do_not_matter():
    y, rates = lotka_states()
    a = recover.fit(y, rates, ["x", "y"], 3, 0.2)
    b = recover.fit(y * 1000.0, rates * 1000.0 / 60.0, ["x", "y"], 3, 0.2)  # kilo-, per minute
    assert (a.coef != 0).tolist() == (b.coef != 0).tolist()
    assert np.allclose(b.coef[0, list(b.terms).index("x")], 1.5 / 60.0)


def test_spurious_missed_and_outside_terms_are_named():
    fit = recover.Fit(["1", "x", "y"], np.array([[0, 0], [1, 0], [0, 1]]),
                      np.array([[0.2, 1.4, 0.0], [0.0, 0.0, -3.0]]), [0.9, 0.9])
    cmp = recover.compare(fit, [{(1, 0): 1.5, (1, 1): -1.0}, {(0, 1): -3.0}], ["x", "y"])
    assert cmp["spurious"] == [{"equation": "x", "term": "1", "coefficient": 0.2}]
    assert cmp["outside_library"] == [{"equation": "x", "term": "x y", "true": -1.0}]
    assert cmp["coefficients"]["x"]["x"]["rel_error"] == pytest.approx(0.1 / 1.5)
    assert not cmp["structure_recovered"]


def test_a_library_too_large_is_refused_before_it_is_built():
    from odecli.errors import ConfigError

    with pytest.raises(ConfigError, match="has 6545 terms .at most 2000.; lower the degree"):
        recover.fit(np.zeros((3, 32)), np.zeros((3, 32)), [f"x{i}" for i in range(32)], 3,
                    0.2)


def test_a_field_with_no_polynomial_truth_says_so():
    import sympy as sp

    x = sp.Symbol("x", real=True)
    assert recover.polynomial(sp.sin(x), ["x"]) is None
    assert recover.polynomial(x / (1 + x), ["x"]) is None


@pytest.mark.parametrize("degree,threshold,says", [
    (0, 0.2, "--degree must be an integer from 1 to 5"),
    (6, 0.2, "--degree"), (2, 1.0, "--threshold must be a number in [0, 1)"),
    (2, -0.1, "--threshold"), (2, float("nan"), "--threshold")])
def test_out_of_range_options_are_one_line(cli, tmp_path, degree, threshold, says):
    res = cli("recover", str(tmp_path), "--degree", str(degree), "--threshold", str(threshold))
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and says in res.stderr
    assert res.stderr.count("\n") == 1


def fake_run(folder: Path, job: str) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {job}\n")
    return folder


def test_runs_it_cannot_take_are_refused(cli, tmp_path, monkeypatch):
    res = cli("recover", str(fake_run(tmp_path / "c", "cnf")))
    assert res.exit_code == 2 and "is a 'cnf' run; odecli recover takes `odecli train`" in \
        res.stderr
    res = cli("recover", str(fake_run(tmp_path / "t", "train")))
    assert res.exit_code == 2 and "has no checkpoint.pt" in res.stderr
    res = cli("recover", str(tmp_path / "nowhere"))
    assert res.exit_code == 2 and "does not exist" in res.stderr
    monkeypatch.setitem(sys.modules, "pysindy", None)  # as if it were not installed
    res = cli("recover", str(tmp_path / "t"))
    assert res.exit_code == 2 and "pip install odecli[recover]" in res.stderr
    assert list((tmp_path / "t").iterdir()) == [tmp_path / "t" / ".hydra"]  # nothing written


@pytest.fixture(scope="module")
def tiny_lotka(tmp_path_factory) -> Path:
    """A few iterations of noisy lotka: recover.json's shape, not its accuracy."""
    import odecli

    folder = tmp_path_factory.mktemp("recover") / "run"
    odecli.run("train", ["system=lotka", "data.noise_std=0.05", *FAST,
                         "plots.enabled=false"], run_dir=folder)
    return folder


def test_recover_json_and_figure_and_no_overwrite(cli, tiny_lotka, tmp_path):
    out = tmp_path / "rec"
    res = cli("recover", str(tiny_lotka), "--out", str(out))
    assert res.exit_code == 0, res.stderr
    assert "x' = " in res.stdout and "truth:" in res.stdout and "R^2" in res.stdout
    s = json.loads((out / "recover.json").read_text())
    assert s["variables"] == ["x", "y"] and s["regressed"] == "field"
    assert s["library"] == {"kind": "polynomial", "degree": 2,
                            "terms": ["1", "x", "y", "x^2", "x y", "y^2"]}
    assert s["samples"] == 200 and set(s["r2"]) == {"x", "y"}
    assert s["truth"]["equations"] == ["x' = 1.5 x - 1 x y", "y' = -3 y + 1 x y"]
    for v in ("x", "y"):  # every true coefficient compared, every other term spurious
        for term, row in s["truth"]["coefficients"][v].items():
            assert row["abs_error"] == pytest.approx(abs(row["recovered"] - row["true"]))
            assert s["coefficients"][v].get(term, 0.0) == row["recovered"]
    spurious = {(r["equation"], r["term"]) for r in s["truth"]["spurious"]}
    assert spurious == {(v, t) for v in "xy" for t in s["coefficients"][v]
                        if t not in s["truth"]["coefficients"][v]}
    assert (out / "recover.png").stat().st_size > 0
    assert not (tiny_lotka / "recover.json").exists()  # --out elsewhere: the run untouched
    before = (out / "recover.json").read_text()
    res = cli("recover", str(tiny_lotka), "--out", str(out), "--degree", "3")
    assert res.exit_code == 2 and "recover.json exists; give --overwrite" in res.stderr
    assert (out / "recover.json").read_text() == before
    res = cli("recover", str(tiny_lotka), "--out", str(out), "--degree", "3", "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert json.loads((out / "recover.json").read_text())["library"]["degree"] == 3


def test_a_figure_of_someone_elses_is_not_replaced(cli, tiny_lotka, tmp_path):
    (tmp_path / "recover.png").write_bytes(b"mine")
    res = cli("recover", str(tiny_lotka), "--out", str(tmp_path))
    assert res.exit_code == 2 and "recover.png exists" in res.stderr
    assert (tmp_path / "recover.png").read_bytes() == b"mine"
    assert not (tmp_path / "recover.json").exists()


def tiny(overrides: list[str], folder: Path):
    import odecli

    return odecli.run("train", [*overrides, *FAST, "plots.enabled=false"],
                      run_dir=folder).model


def test_a_data_file_run_is_recovered_in_the_files_units_and_names(tmp_path):
    model = tiny(["system=hare_lynx"], tmp_path / "hl")
    r = model.recover(degree=1)
    s = r.summary()
    assert s["variables"] == ["hare", "lynx"] and s["truth"] is None
    assert s["library"]["terms"] == ["1", "hare", "lynx"]
    assert s["equations"][0].startswith("hare' = ")
    assert "fully observed rows of the data file's training part" in s["sampled"]
    assert s["samples"] == 16 and "note" not in s  # 16 rows, 3 terms
    note = model.recover(degree=2).summary()["note"]
    assert "only 16 samples for 6 terms" in note and "--" not in note
    # the Python API names its own arguments, not the command's flags
    from odecli.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^degree must be an integer from 1 to 5, got 0$"):
        model.recover(degree=0)
    with pytest.raises(ConfigError, match=r"^threshold must be a number in \[0, 1\)"):
        model.recover(threshold=1.5)
    # the rates regressed are the field in the file's units (pelts per year)
    rates = model.f(0.0, r.target.y)
    assert np.allclose(r.target.rates, rates)
    assert {"error_rel", "heldout_error_rel", "network_heldout_error_rel"} <= set(
        s["trajectory"])
    r.figure(tmp_path / "recover.png")
    assert (tmp_path / "recover.png").stat().st_size > 0


def test_system_equations_truth_comes_from_its_right_hand_sides(tmp_path):
    model = tiny(["system=equations", 'system.rhs=["a*x - x*y", "x*y - 2*y"]',
                  "system.params={a: 0.5}"], tmp_path / "eq")
    s = model.recover().summary()
    assert s["truth"]["equations"] == ["x' = 0.5 x - 1 x y", "y' = -2 y + 1 x y"]
    assert set(s["truth"]["coefficients"]["y"]) == {"y", "x y"}


def test_known_physics_recovers_the_missing_term_only(tmp_path):
    model = tiny(["system=lotka", 'model.known.rhs=["a*x", "-c*y"]',
                  "model.known.params={a: 1.5, c: 3.0}", "model.known.trainable=false"],
                 tmp_path / "ude")
    r = model.recover()
    s = r.summary()
    assert s["regressed"] == "missing term"
    assert s["truth"]["equations"] == ["x' = -1 x y", "y' = 1 x y"]  # truth - known
    assert s["equations"][0].startswith("x' = [known: 1.5*x] + [recovered: ")
    f = model.experiment.field
    with torch.no_grad():
        net = f.learned_part(torch.tensor(0.0), torch.as_tensor(r.target.y).float())
    assert np.allclose(r.target.rates, net.double().numpy(), atol=1e-6)


def test_a_mechanistic_fit_has_nothing_to_recover(cli, tmp_path):
    tiny(["system=lotka", 'model.known.rhs=["a*x - b*x*y", "d*x*y - c*y"]',
          "model.known.params={a: 1, b: 1, c: 2, d: 1}", "model.known.network=false"],
         tmp_path / "mech")
    res = cli("recover", str(tmp_path / "mech"))
    assert res.exit_code == 2 and "nothing was learned to recover" in res.stderr


@pytest.mark.slow
def test_noisy_lotka_gives_back_its_equations(cli, tmp_path):
    """Issue 26's figure: the default run on noisy lotka (1000 iterations, seed 0) recovers
    every coefficient within 5% and no spurious term (measured 0.57%; seeds 0-9 in
    benchmarks/RESULTS.md, all within 1.9%)."""
    import odecli

    run_dir = tmp_path / "run"
    odecli.run("train", ["system=lotka", "data.noise_std=0.05", "quiet=true",
                         "plots.enabled=false"], run_dir=run_dir)
    res = cli("recover", str(run_dir))
    assert res.exit_code == 0, res.stderr
    truth = json.loads((run_dir / "recover.json").read_text())["truth"]
    assert truth["spurious"] == [] and truth["missed"] == []
    assert truth["max_rel_error"] < 0.05


def test_known_physics_on_a_data_file_regresses_the_network_in_the_files_units(tmp_path):
    model = tiny(["system=hare_lynx", 'model.known.rhs=["a*hare", "-c*lynx"]',
                  "model.known.params={a: 0.5, c: 0.8}"], tmp_path / "hlu")
    r = model.recover(degree=2, threshold=0.0)
    s = r.summary()
    assert s["regressed"] == "missing term" and s["truth"] is None
    exp = model.experiment
    with torch.no_grad():  # the network's part in the model's scaled states, back to pelts
        z = exp.scaling.to_model(torch.as_tensor(r.target.y)).float()
        net = exp.field.learned_part(torch.tensor(0.0), z).double() * exp.scaling.std
    assert np.allclose(r.target.rates, net.numpy(), rtol=1e-5, atol=1e-6)
    # the recovered system is the known part plus the fit: its rate at a row is both
    y = torch.as_tensor(r.target.y[:3])
    with torch.no_grad():
        known = exp.field.known(torch.tensor(0.0), y).double().numpy()
        whole = r.field(torch.tensor(0.0), y).numpy()
    theta = np.prod(r.target.y[:3, None, :] ** r.fit.powers, axis=-1)
    assert np.allclose(whole, known + theta @ r.fit.coef.T)
