"""odecli's scikit-learn estimators against MLP and histogram gradient boosting.

Digits and breast cancer (accuracy), diabetes (R^2): each model in a Pipeline with
StandardScaler, one stratified 75/25 split (seed 0), test score, fit time, parameters;
then the inference dial of the digits ODENetClassifier (dopri5 at several rtol: accuracy
and function evaluations per prediction). One thread for torch and BLAS (shared machine).

    python benchmarks/sklearn_compare.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from odecli.sklearn import ODENetClassifier, ODENetRegressor


def mlp_params(m: MLPClassifier | MLPRegressor) -> int:
    return int(sum(w.size for w in m.coefs_) + sum(b.size for b in m.intercepts_))


def params(est: object) -> int | str:
    if isinstance(est, (MLPClassifier, MLPRegressor)):
        return mlp_params(est)
    if isinstance(est, (ODENetClassifier, ODENetRegressor)):
        return est.n_params_
    return "trees"


def models(task: str, quick: bool) -> dict[str, object]:
    it = 20 if quick else None
    if task == "classify":
        return {"ODENetClassifier": ODENetClassifier(random_state=0, **({"max_iter": it}
                                                                        if it else {})),
                "MLPClassifier": MLPClassifier(max_iter=500, random_state=0),
                "HistGradientBoostingClassifier": HistGradientBoostingClassifier(
                    random_state=0)}
    return {"ODENetRegressor": ODENetRegressor(random_state=0, **({"max_iter": it}
                                                                  if it else {})),
            "MLPRegressor": MLPRegressor(max_iter=2000, random_state=0),
            "HistGradientBoostingRegressor": HistGradientBoostingRegressor(random_state=0)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="few epochs (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}")
    print("| dataset | model | test score | fit s | parameters |\n|---|---|---|---|---|")
    digits_ode = None
    for name, loader, task in (("digits", load_digits, "classify"),
                               ("breast cancer", load_breast_cancer, "classify"),
                               ("diabetes", load_diabetes, "regress")):
        X, y = loader(return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(
            X, y, test_size=0.25, random_state=0, stratify=y if task == "classify" else None)
        for label, est in models(task, args.quick).items():
            pipe = make_pipeline(StandardScaler(), est)
            start = time.perf_counter()
            pipe.fit(Xtr, ytr)
            fit_s = time.perf_counter() - start
            score = pipe.score(Xte, yte)
            metric = "accuracy" if task == "classify" else "R^2"
            print(f"| {name} | {label} | {metric} {score:.4f} | {fit_s:.1f} | "
                  f"{params(pipe[-1])} |", flush=True)
            if name == "digits" and label == "ODENetClassifier":
                digits_ode = (pipe, Xte, yte)
    assert digits_ode is not None
    pipe, Xte, yte = digits_ode
    est = pipe[-1]
    print("\n| inference solver | test accuracy | NFE per prediction | predict ms |\n"
          "|---|---|---|---|")
    settings = [("rk4, 4 steps (training)", {}), ("euler, 1 step", {
        "inference_solver": "euler", "inference_steps": 1})]
    settings += [(f"dopri5, rtol {r:g}", {"inference_solver": "dopri5", "inference_rtol": r,
                                          "inference_atol": r})
                 for r in (1e-1, 1e-2, 1e-3, 1e-5, 1e-7)]
    for label, change in settings:
        est.set_params(**{"inference_solver": None, "inference_rtol": None,
                          "inference_atol": None, "inference_steps": None, **change})
        start = time.perf_counter()
        acc = pipe.score(Xte, yte)
        ms = 1000 * (time.perf_counter() - start)
        print(f"| {label} | {acc:.4f} | {est.last_nfe_} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
