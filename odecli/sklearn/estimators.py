"""`ODENetClassifier` and `ODENetRegressor`: scikit-learn estimators on an ODESolve layer.

They follow scikit-learn's contract (parameters stored as given and checked in `fit`,
`random_state` for reproducible fits, fitted attributes ending in `_`, pickling) and pass
its `check_estimator` suite (tests/test_sklearn.py), so they drop into `Pipeline`,
`GridSearchCV` and `cross_val_score`. The solve at prediction time is a dial: a looser
`inference_rtol` (or fewer `inference_steps`) costs fewer function evaluations, and
`last_nfe_` says how many the last prediction took.

>>> from sklearn.datasets import load_iris
>>> from odecli.sklearn import ODENetClassifier
>>> X, y = load_iris(return_X_y=True)
>>> clf = ODENetClassifier(max_iter=30, random_state=0).fit(X, y)
>>> clf.predict(X[:3]).shape, clf.predict_proba(X[:3]).shape
((3,), (3, 3))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.nn import functional as F

from odecli.sklearn.network import ODENet, n_params, spec

DTYPE = torch.float64  # predictions independent of how rows are batched (scikit-learn checks)


class _Counter:
    """Function evaluations of the last prediction (a mutable cell, so predicting does not
    change the estimator's own attributes)."""

    def __init__(self) -> None:
        self.nfe = 0


class _ODENetBase(BaseEstimator):
    """What both estimators share: parameters, the training loop, the inference solve."""

    def __init__(self, width: int = 32, hidden: int = 64, solver: str = "rk4",
                 steps: int | None = 4, rtol: float = 1e-3, atol: float = 1e-4,
                 gradient: str = "direct", inference_solver: str | None = None,
                 inference_rtol: float | None = None, inference_atol: float | None = None,
                 inference_steps: int | None = None, max_iter: int = 60,
                 batch_size: int = 64, learning_rate: float = 3e-3, alpha: float = 1e-4,
                 random_state: Any = None) -> None:
        self.width = width
        self.hidden = hidden
        self.solver = solver
        self.steps = steps
        self.rtol = rtol
        self.atol = atol
        self.gradient = gradient
        self.inference_solver = inference_solver
        self.inference_rtol = inference_rtol
        self.inference_atol = inference_atol
        self.inference_steps = inference_steps
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.random_state = random_state

    # -- the solver dial ---------------------------------------------------------------
    def _training_spec(self) -> Any:
        return spec(self.solver, self.rtol, self.atol, self.steps, self.gradient)

    def _inference_spec(self) -> Any:
        def given(value: Any, default: Any) -> Any:
            return default if value is None else value

        return spec(given(self.inference_solver, self.solver),
                    given(self.inference_rtol, self.rtol), given(self.inference_atol, self.atol),
                    given(self.inference_steps, self.steps), self.gradient)

    @property
    def last_nfe_(self) -> int:
        """Field evaluations of the last predict/predict_proba/score call (one solve)."""
        check_is_fitted(self)
        return self.nfe_.nfe

    @property
    def n_params_(self) -> int:
        """Trainable parameters of the fitted network."""
        check_is_fitted(self)
        return n_params(self.network_)

    # -- fitting -----------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("width", "hidden", "max_iter", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("learning_rate",):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha!r}")
        self._training_spec()
        self._inference_spec()

    def _fit(self, X: np.ndarray, target: np.ndarray, n_out: int, classify: bool) -> None:
        self._check_params()
        train_spec = self._training_spec()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ODENet(X.shape[1], int(self.width), int(self.hidden), n_out).to(DTYPE)
        x = _tensor(X)
        y = torch.as_tensor(target) if classify else _tensor(target)
        opt = torch.optim.Adam(net.parameters(), lr=float(self.learning_rate),
                               weight_decay=float(self.alpha))
        epochs, bs, n = int(self.max_iter), int(self.batch_size), len(x)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=epochs * max(1, -(-n // bs)), eta_min=float(self.learning_rate) / 100)
        order = np.random.RandomState(seed)
        net.train()
        for _ in range(epochs):
            perm = torch.as_tensor(order.permutation(n))
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                out = net(x[idx], train_spec)
                loss = F.cross_entropy(out, y[idx]) if classify else F.mse_loss(out, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        self.network_ = net
        self.nfe_ = _Counter()
        self.n_iter_ = epochs
        self.loss_ = float(loss.detach())

    @torch.no_grad()
    def _forward(self, X: Any) -> torch.Tensor:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        net = self.network_
        n0 = net.field.nfe
        out = net(_tensor(X), self._inference_spec())
        self.nfe_.nfe = net.field.nfe - n0
        return out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class ODENetClassifier(ClassifierMixin, _ODENetBase):
    """A classifier: Dense -> ODESolve -> Dense, trained with cross-entropy (Adam, cosine
    schedule, `max_iter` epochs of `batch_size` rows). Parameters: `width` (features the
    ODE evolves), `hidden` (the field's hidden units), `solver` / `steps` / `rtol` /
    `atol` / `gradient` (training solve, as the CLI's solver=... and gradient=...),
    `inference_*` (the prediction solve; default: the training one), `alpha` (L2),
    `random_state`."""

    def fit(self, X: Any, y: Any) -> ODENetClassifier:
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self._fit(X, codes.astype(np.int64), max(len(self.classes_), 2), classify=True)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        logits = self._forward(X)
        return torch.softmax(logits[:, : len(self.classes_)], dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        best = self.predict_proba(X).argmax(1)
        return self.classes_[best]


class ODENetRegressor(RegressorMixin, _ODENetBase):
    """A regressor: Dense -> ODESolve -> Dense, trained with squared error on standardised
    targets (one or several columns); parameters as `ODENetClassifier`'s."""

    def fit(self, X: Any, y: Any) -> ODENetRegressor:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        y2 = y.reshape(len(y), -1).astype(np.float64)
        self.y_mean_ = y2.mean(0)
        self.y_scale_ = np.where(y2.std(0) > 0, y2.std(0), 1.0)
        self._fit(X, (y2 - self.y_mean_) / self.y_scale_, y2.shape[1], classify=False)
        self.y_1d_ = y.ndim == 1
        return self

    def predict(self, X: Any) -> np.ndarray:
        out = self._forward(X).numpy() * self.y_scale_ + self.y_mean_
        return out[:, 0] if self.y_1d_ else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A float64 tensor of a copy (inputs may be read-only memory maps)."""
    return torch.from_numpy(np.array(a, dtype=np.float64, copy=True))
