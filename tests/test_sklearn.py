"""odecli's scikit-learn estimators: scikit-learn's own estimator checks, reproducibility,
pickling, the inference dial, Pipeline and GridSearchCV."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, make_regression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from odecli.sklearn import ODENetClassifier, ODENetRegressor

torch.set_num_threads(1)

# Small fits: scikit-learn's checks fit each estimator dozens of times.
FAST = {"max_iter": 40, "learning_rate": 0.01, "width": 8, "hidden": 16, "steps": 2}


@parametrize_with_checks([ODENetClassifier(**FAST), ODENetRegressor(**FAST)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_a_fit_is_reproducible_with_random_state_and_survives_pickling(iris):
    X, y = iris
    a = ODENetClassifier(**FAST, random_state=3).fit(X, y)
    b = ODENetClassifier(**FAST, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.predict_proba(X), c.predict_proba(X))
    assert a.score(X, y) > 0.9
    assert a.n_params_ == (4 * 8 + 8) + (9 * 16 + 16) + (16 * 8 + 8) + (8 * 3 + 3)


def test_the_inference_dial_trades_evaluations_for_accuracy(iris):
    X, y = iris
    clf = ODENetClassifier(**FAST, random_state=0).fit(X, y)
    clf.predict(X)
    assert clf.last_nfe_ == 2 * 4  # rk4: 4 evaluations per step, 2 steps
    nfe, probs = {}, {}
    for rtol in (1e-1, 1e-6):
        clf.set_params(inference_solver="dopri5", inference_rtol=rtol, inference_atol=rtol)
        probs[rtol] = clf.predict_proba(X)
        nfe[rtol] = clf.last_nfe_
    assert nfe[1e-1] < nfe[1e-6]
    clf.set_params(inference_solver="rk4", inference_steps=64)
    np.testing.assert_allclose(clf.predict_proba(X), probs[1e-6], atol=1e-5)


@pytest.mark.parametrize("gradient", ["direct", "adjoint", "checkpoint"])
def test_every_gradient_mode_of_the_cli_trains(gradient):
    X, y = make_regression(n_samples=60, n_features=3, noise=0.1, random_state=0)
    reg = ODENetRegressor(max_iter=30, learning_rate=0.01, width=8, hidden=8,
                          solver="dopri5", rtol=1e-3, atol=1e-4, gradient=gradient,
                          random_state=0).fit(X, y)
    assert reg.score(X, y) > 0.8


def test_bad_solver_settings_are_value_errors_with_odecli_messages(iris):
    X, y = iris
    with pytest.raises(ValueError, match="unknown solver method 'rk5'"):
        ODENetClassifier(solver="rk5").fit(X, y)
    with pytest.raises(ValueError, match="unknown gradient mode"):
        ODENetClassifier(gradient="backprop").fit(X, y)


def test_pipeline_and_grid_search(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), ODENetClassifier(**FAST, random_state=0))
    grid = GridSearchCV(pipe, {"odenetclassifier__width": [4, 8]}, cv=3).fit(X, y)
    assert grid.best_params_["odenetclassifier__width"] in (4, 8)
    assert grid.best_score_ > 0.85
