"""scikit-learn estimators on odecli's ODESolve layer (Dense -> ODESolve -> Dense)."""

from odecli.sklearn.estimators import ODENetClassifier, ODENetRegressor

__all__ = ["ODENetClassifier", "ODENetRegressor"]
