"""The recovered coefficients refitted to the observed trajectories (odecli.dynamics.refit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FAST

from odecli.dynamics import refit, systems
from odecli.errors import SolverError

pytest.importorskip("pysindy")  # the test extra installs it (CI fails on this skip)

# degree-2 library of (x, y) in PySINDy's order: 1, x, y, x^2, x y, y^2
POWERS = np.array([[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]])
TRUE = np.array([[0, 1.5, 0, 0, -1.0, 0], [0, 0, -3.0, 0, 1.0, 0]])  # Lotka-Volterra


def lotka_data(t1: float = 4.0, n: int = 41) -> refit.Trajectory:
    lot = systems.build({"name": "lotka", "t1": t1, "data_size": n})
    y = lot.trajectory().double().numpy()
    return refit.Trajectory(0.0, y[0].copy(), lot.t.double().numpy(), y)


def test_perturbed_coefficients_go_back_to_the_truth_and_zeros_stay_zero():
    data = lotka_data()
    wrong = TRUE * np.array([[1, 1.03, 1, 1, 0.97, 1], [1, 1, 1.02, 1, 1.04, 1]])
    field = refit.PolynomialField(POWERS, wrong)
    res = refit.fit_to_data(field, [data])
    assert res.loss_after < 1e-3 * res.loss_before and res.stopped is None
    assert np.allclose(res.coef, TRUE, atol=2e-4)
    assert (res.coef[TRUE == 0] == 0).all()  # the sparsity pattern is kept
    assert np.allclose(field.coef.numpy(), res.coef)  # the field ends at the refit
    assert res.evaluations <= refit.MAX_EVALS


def test_missing_cells_and_known_equations_are_respected():
    """NaN cells do not count; a known part stays as it is and only the rest moves."""
    data = lotka_data()
    data.y[::3, 1] = np.nan

    class Known(torch.nn.Module):  # a x and -c y, with a trainable parameter left alone
        def __init__(self) -> None:
            super().__init__()
            self.ac = torch.nn.Parameter(torch.tensor([1.5, -3.0], dtype=torch.float64))

        def forward(self, t, y):
            return y * self.ac

    known = Known()
    missing = np.array([[0, 0, 0, 0, -0.95, 0], [0, 0, 0, 0, 1.05, 0]])
    field = refit.PolynomialField(POWERS, missing, known)
    res = refit.fit_to_data(field, [data])
    assert np.allclose(res.coef[:, 4], [-1.0, 1.0], atol=2e-4)
    assert known.ac.tolist() == [1.5, -3.0] and known.ac.requires_grad
    assert not field.values.requires_grad


def test_the_solve_budget_is_a_hard_bound_and_the_best_values_are_kept(monkeypatch):
    monkeypatch.setattr(refit, "MAX_EVALS", 4)
    wrong = TRUE * np.array([[1, 1.03, 1, 1, 0.97, 1], [1, 1, 1.02, 1, 1.04, 1]])
    res = refit.fit_to_data(refit.PolynomialField(POWERS, wrong), [lotka_data()])
    assert res.evaluations == 4 and res.stopped == "the budget of 4 solves was spent"
    assert res.loss_after < res.loss_before  # the line search's first steps already helped


def test_a_trial_step_that_blows_up_is_retried_with_shorter_steps(monkeypatch):
    """The first L-BFGS trial step fails (as a trial system that explodes does); the refit
    goes on from the best values with a shorter step and still converges."""
    data, real, calls = lotka_data(), refit.solve.solve, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the start is scored, then L-BFGS scores it, then the first trial
            raise SolverError("solver failed: underflow in dt")
        return real(*args, **kwargs)

    monkeypatch.setattr(refit.solve, "solve", flaky)
    wrong = TRUE * np.array([[1, 1.03, 1, 1, 0.97, 1], [1, 1, 1.02, 1, 1.04, 1]])
    res = refit.fit_to_data(refit.PolynomialField(POWERS, wrong), [data])
    assert len(calls) > 3 and res.stopped is None and np.allclose(res.coef, TRUE, atol=2e-4)


def test_a_recovered_system_that_blows_up_is_one_line():
    data = lotka_data()
    blows = np.array([[0, 0, 0, 5.0, 0, 0], [0, 0, 0, 0, 0, 5.0]])  # x' = 5 x^2: t* = 0.2
    with pytest.raises(SolverError, match="cannot be solved over the data"):
        refit.fit_to_data(refit.PolynomialField(POWERS, blows), [data])


def test_recover_json_carries_the_refit_and_no_refit_leaves_it_out(cli, tmp_path):
    import odecli

    run = tmp_path / "run"
    odecli.run("train", ["system=lotka", "data.noise_std=0.05", *FAST,
                         "plots.enabled=false"], run_dir=run)
    res = cli("recover", str(run), "--out", str(tmp_path / "a"))
    assert res.exit_code == 0, res.stderr
    assert "refitted to the observed trajectories" in res.stdout
    assert "trajectory error_rel, after the span: recovered" in res.stdout
    s = json.loads((tmp_path / "a" / "recover.json").read_text())
    ref = s["refit"]
    assert ref["loss_after"] <= ref["loss_before"] and ref["evaluations"] >= 1
    assert set(ref["coefficients"]["x"]) == set(s["coefficients"]["x"])  # the same terms
    assert ref["equations"][0].startswith("x' = ")
    assert set(ref["truth"]["coefficients"]["x"]) == {"x", "x y"}
    assert {"refitted_error_rel", "refitted_extrap_error_rel"} <= set(s["trajectory"])
    res = cli("recover", str(run), "--out", "")
    assert res.exit_code == 2 and "--out is empty" in res.stderr
    res = cli("recover", str(run), "--out", str(tmp_path / "b"), "--no-refit")
    assert res.exit_code == 0, res.stderr
    s = json.loads((tmp_path / "b" / "recover.json").read_text())
    assert s["refit"] is None and "refitted_error_rel" not in s["trajectory"]
    assert "refitted" not in res.stdout


def test_a_data_file_run_refits_its_training_parts_and_scores_the_held_out(tmp_path):
    import odecli

    model = odecli.run("train", ["system=hare_lynx", *FAST, "plots.enabled=false"],
                       run_dir=tmp_path / "hl").model
    s = model.recover(degree=1).summary()
    assert s["refit"]["loss_after"] <= s["refit"]["loss_before"]
    assert {"refitted_error_rel", "refitted_heldout_error_rel"} <= set(s["trajectory"])
    assert s["refit"]["equations"][0].startswith("hare' = ")


def test_a_failed_refit_is_recorded_and_the_recovery_still_reported(tmp_path, monkeypatch):
    import odecli
    from odecli.cli.recover import report
    from odecli.dynamics import recovery

    model = odecli.run("train", ["system=lotka", *FAST, "plots.enabled=false"],
                       run_dir=tmp_path / "run").model

    def fails(field, data, quiet=True):
        raise SolverError("the recovered system cannot be solved over the data: x", "")

    monkeypatch.setattr(recovery.refit, "fit_to_data", fails)
    s = model.recover().summary()
    assert s["refit"]["failed"].startswith("the recovered system cannot be solved")
    assert s["equations"] and "refitted_error_rel" not in s["trajectory"]
    assert "not refitted to the data: the recovered system" in report(s, tmp_path / "r.json")
