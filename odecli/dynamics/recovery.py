"""`odecli recover`'s work on one `train` run: sample the learned field where the data is,
regress it (odecli.dynamics.recover), compare with the truth where it is known, and
integrate the recovered system against the data.

Nothing here writes a file except `figure()`; the caller decides where (and whether) the
summary and the figure go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odecli.dynamics import recover, refit, tabular, ude
from odecli.errors import ConfigError, SolverError
from odecli.numerics import solve

FIGURE = "recover.png"
FEW = 5  # samples per library term below which recover.json warns the fit is thin


@dataclass
class Target:
    """What is regressed: states (data units), the learned rates there, the known part."""

    y: np.ndarray
    rates: np.ndarray
    what: str                       # "field" or "missing term"
    sampled: str                    # where the states come from, in words
    known: nn.Module | None = None  # known equations in the data's units (model.known)


def data_states(exp: Any) -> tuple[np.ndarray, str]:
    """The observed states: a simulated system's observations over the training span, or a
    data file's fully observed training rows (file units)."""
    if hasattr(exp, "split"):
        rows = [p.y[~np.isnan(p.y).any(1)] for p in exp.split.train]
        y = np.concatenate(rows) if rows else np.zeros((0, exp.dim))
        where = f"the {len(y)} fully observed rows of the data file's training part"
    else:
        y = exp.obs.y.detach().double().cpu().numpy()
        where = f"the {len(y)} observed states of the training span"
    if len(y) < 2:
        raise ConfigError("the data holds fewer than 2 fully observed states to sample the "
                          "learned field at")
    return np.asarray(y, dtype=np.float64), where


def target(exp: Any) -> Target:
    """The learned rates at the data's states (the network's part alone under
    model.known), in the data's units."""
    f = exp.field
    if getattr(f, "augment_dim", 0):
        raise ConfigError("the run's model has model.augment_dim > 0: its field depends on "
                          "hidden states, so it is no system of the data's variables alone")
    if f.time_dependent:
        raise ConfigError("the run's field depends on t (model.time_dependent, or t in "
                          "model.known.rhs); odecli recover fits autonomous systems only")
    hybrid = isinstance(f, ude.HybridField)
    if hybrid and f.net is None:
        raise ConfigError("the run's model is its known equations alone "
                          "(model.known.network=false): nothing was learned to recover; its "
                          "fitted parameters are in metrics.json (known_params)")
    y, sampled = data_states(exp)
    with torch.no_grad():
        t0 = torch.zeros((), dtype=exp.rt.dtype, device=exp.rt.device)
        yy = torch.as_tensor(y, device=exp.rt.device)
        scaling = getattr(exp, "scaling", None)
        z = (yy if scaling is None else scaling.to_model(yy)).to(exp.rt.dtype)
        rate = (f.learned_part(t0, z) if hybrid else f(t0, z))[:, : y.shape[1]].double()
        if scaling is not None:
            rate = rate * scaling.std.to(rate.device)
    rates = rate.cpu().numpy()
    if not np.isfinite(rates).all():
        raise SolverError("the learned field is not finite at the data's states",
                          "the run diverged; recover a run that trained")
    if not hybrid:
        return Target(y, rates, "field", sampled)
    return Target(y, rates, "missing term", sampled, known=f.known)


# --------------------------------------------------------------- trajectories

def integrate(fld: nn.Module, y0: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """A field from y0 over the increasing times t, float64 (None if it blows up)."""
    try:
        with torch.no_grad():
            out = solve.solve(fld, torch.as_tensor(y0, dtype=torch.float64).unsqueeze(0),
                              torch.as_tensor(t, dtype=torch.float64),
                              refit.SOLVER, grad=False)
    except SolverError:
        return None
    path = out[:, 0].cpu().numpy()
    return path if np.isfinite(path).all() else None


def rollout_parts(fld: nn.Module, parts: list[tabular.Part]) -> list[np.ndarray | None]:
    """A field from each part's start, at the part's times (file units)."""
    out: list[np.ndarray | None] = []
    for p in parts:
        grid = np.unique(np.concatenate([[p.start_t], p.t]))
        path = integrate(fld, p.start_y, grid) if len(grid) > 1 else p.start_y[None]
        out.append(None if path is None else path[np.searchsorted(grid, p.t)])
    return out


def dense(part: tabular.Part, n: int = 300) -> tabular.Part:
    """The part's span on an even grid of n points from its start (the figure's curves)."""
    t = np.linspace(part.start_t, part.t[-1], n)
    return tabular.Part(part.name, t, np.zeros((n, len(part.start_y))), part.start_t,
                        part.start_y, True)


def _part_error(preds: list[np.ndarray | None], parts: list[tabular.Part],
                scale: float) -> float | None:
    if not parts:
        return None
    if any(p is None for p in preds):
        return math.inf
    return tabular.errors(preds, parts, scale)["rel"]  # type: ignore[arg-type]


# --------------------------------------------------------------- the whole recovery

class Recovery:
    """A run's recovered equations, their comparison with the truth and with the data."""

    def __init__(self, exp: Any, degree: int = recover.DEFAULT_DEGREE,
                 threshold: float = recover.DEFAULT_THRESHOLD, refit_to_data: bool = True,
                 quiet: bool = True) -> None:
        recover.check_options(degree, threshold)
        recover.pysindy()
        self.exp, self.degree, self.threshold = exp, degree, threshold
        self.variables = [str(v) for v in exp.variables]
        self.target = target(exp)
        self.fit = recover.fit(self.target.y, self.target.rates, self.variables, degree,
                               threshold)
        self.field = refit.PolynomialField(self.fit.powers, self.fit.coef, self.target.known)
        # SINDy's values refitted to the observed trajectories (refit.py says why)
        self.refit: refit.Result | None = None
        self.refitted: recover.Fit | None = None
        self.refitted_field: refit.PolynomialField | None = None
        self.refit_failed: str | None = None
        if refit_to_data and self.fit.coef.any():
            fld = refit.PolynomialField(self.fit.powers, self.fit.coef, self.target.known)
            try:
                self.refit = refit.fit_to_data(fld, self._observed(), quiet)
            except SolverError as e:  # SINDy's system itself fails over the data
                self.refit_failed = str(e)
            else:
                self.refitted = recover.with_coef(self.fit, self.refit.coef, self.target.y,
                                                  self.target.rates)
                self.refitted_field = fld
        self.truth = self._truth()
        known_truth = self.truth is not None and all(p is not None for p in self.truth)
        self.comparison = (recover.compare(self.fit, self.truth, self.variables)
                           if known_truth else None)
        self.refit_comparison = (recover.compare(self.refitted, self.truth, self.variables)
                                 if known_truth and self.refitted is not None else None)
        self.paths = self._trajectories()

    def _observed(self) -> list[refit.Trajectory]:
        """What the refit matches: each training trajectory's observations, from the start
        the network's rollouts use (data units)."""
        exp = self.exp
        if self.file_run:
            return [refit.Trajectory(p.start_t, p.start_y, p.t, p.y) for p in exp.split.train]
        return [refit.Trajectory(float(exp.t_full[0]),
                                 exp.truth[0].detach().double().cpu().numpy(),
                                 exp.obs.t.detach().double().cpu().numpy(),
                                 exp.obs.y.detach().double().cpu().numpy())]

    @property
    def file_run(self) -> bool:
        return hasattr(self.exp, "split")

    def _truth(self) -> list[Any] | None:
        """The true polynomial of what was regressed, per equation (None: unknown; an entry
        None: that equation is no polynomial of the states)."""
        if self.file_run:
            return None
        exprs = recover.true_equations(self.exp.system.field, self.variables)
        if exprs is None:
            return None
        if self.target.known is not None:
            known = recover.substituted(self.target.known)
            exprs = [e - k for e, k in zip(exprs, known, strict=True)]
        return [recover.polynomial(e, self.variables) for e in exprs]

    def true_text(self) -> list[str] | None:
        if self.truth is None:
            return None
        names = self.variables
        out = []
        for v, poly in zip(names, self.truth, strict=True):
            if poly is None:
                out.append(f"{v}' = (no polynomial of {', '.join(names)})")
                continue
            order = sorted(poly, key=lambda m: (sum(m), [-k for k in m]))  # as PySINDy's
            terms = [(poly[m], recover.term_name(m, names)) for m in order]
            out.append(f"{v}' = {recover.written(terms)}")
        return out

    def _trajectories(self) -> dict[str, Any]:
        """The recovered system (and the network) from the data's starts."""
        exp = self.exp
        if self.file_run:
            parts = list(exp.split.train) + list(exp.split.test)
            rec = rollout_parts(self.field, parts)
            net, _ = exp.rollout_parts(parts)
            n = len(exp.split.train)
            fine = [dense(q) for q in parts]  # the figure's curves, between the rows
            out = {"parts": parts, "recovered": rec, "network": net, "n_train": n,
                   "dense": fine, "dense_recovered": rollout_parts(self.field, fine),
                   "dense_network": exp.rollout_parts(fine)[0],
                   "error_rel": _part_error(rec[:n], parts[:n], exp.scale),
                   "heldout_error_rel": _part_error(rec[n:], parts[n:], exp.scale),
                   "network_error_rel": _part_error(list(net[:n]), parts[:n], exp.scale),
                   "network_heldout_error_rel": _part_error(list(net[n:]), parts[n:],
                                                            exp.scale)}
            if self.refitted_field is not None:
                ref = rollout_parts(self.refitted_field, parts)
                out.update(refitted=ref,
                           dense_refitted=rollout_parts(self.refitted_field, fine),
                           refitted_error_rel=_part_error(ref[:n], parts[:n], exp.scale),
                           refitted_heldout_error_rel=_part_error(ref[n:], parts[n:],
                                                                  exp.scale))
            return out
        t = exp.t_full.detach().double().cpu().numpy()
        truth = exp.truth.detach().double().cpu().numpy()
        rec = integrate(self.field, truth[0], t)
        net = exp.predict()[0].detach().double().cpu().numpy()
        n = exp.n_train

        def errors(path: np.ndarray | None) -> tuple[float, float]:
            if path is None:
                return math.inf, math.inf
            e = ((path - truth) ** 2).sum(-1)
            extra = float(np.sqrt(e[n:].mean())) / exp.scale if len(e) > n else math.nan
            return float(np.sqrt(e[:n].mean())) / exp.scale, extra

        (er, ex), (ner, nex) = errors(rec), errors(net)
        out = {"t": t, "truth": truth, "recovered": rec, "network": net, "n_train": n,
               "obs_t": exp.obs.t.detach().double().cpu().numpy(),
               "obs_y": exp.obs.y.detach().double().cpu().numpy(),
               "error_rel": er, "extrap_error_rel": ex, "network_error_rel": ner,
               "network_extrap_error_rel": nex}
        if self.refitted_field is not None:
            ref = integrate(self.refitted_field, truth[0], t)
            fer, fex = errors(ref)
            out.update(refitted=ref, refitted_error_rel=fer, refitted_extrap_error_rel=fex)
        return out

    # -- reporting ---------------------------------------------------------------------
    def equations(self, fit: recover.Fit | None = None, label: str = "recovered"
                  ) -> list[str]:
        """One line per variable: the recovered right-hand side (known part first); `fit`:
        another set of coefficients for the same terms (the refitted ones)."""
        fit = self.fit if fit is None else fit
        out = []
        known = (None if self.target.known is None
                 else [str(e) for e in recover.substituted(self.target.known)])
        for i, v in enumerate(self.variables):
            rhs = fit.equation(i)
            if known is not None:
                rhs = f"[known: {known[i]}] + [{label}: {rhs}]"
            out.append(f"{v}' = {rhs}")
        return out

    def summary(self) -> dict[str, Any]:
        """recover.json's content (plain JSON values)."""
        exp, p = self.exp, self.paths
        traj_keys = [k for k in p if k.endswith("error_rel")]
        out: dict[str, Any] = {
            "run": str(getattr(exp, "run_dir", "")),
            "system": str(exp.name),
            "variables": self.variables,
            "regressed": self.target.what,
            "sampled": self.target.sampled,
            "samples": int(len(self.target.y)),
            "library": {"kind": "polynomial", "degree": self.degree, "terms": self.fit.terms},
            "optimizer": {"name": "STLSQ (PySINDy)", "threshold": self.threshold,
                          "threshold_means": "share of each equation's RMS rate over the "
                                             "samples below which a term is dropped"},
            "equations": self.equations(),
            "coefficients": {v: self.fit.coefficients(i)
                             for i, v in enumerate(self.variables)},
            "r2": dict(zip(self.variables, self.fit.r2, strict=True)),
            "r2_min": float(min(self.fit.r2)),
            "trajectory": {"diverged": _diverged(p["recovered"]),
                           **{k: _finite(p[k]) for k in traj_keys}},
            "refit": self._refit_summary(),
            "figure": FIGURE,
        }
        if len(self.target.y) < FEW * len(self.fit.terms):
            out["note"] = (f"only {len(self.target.y)} samples for {len(self.fit.terms)} "
                           "terms: the fit is barely determined (a lower degree, or more "
                           "data)")
        if self.target.known is not None:
            out["known_equations"] = self.target.known.describe()
            out["known_params"] = self.target.known.values()
        out["truth"] = None if self.truth is None else {"equations": self.true_text()}
        if self.comparison is not None:
            out["truth"].update(self.comparison)
        elif self.truth is not None:
            out["truth"]["note"] = ("the true right-hand side is no polynomial of the "
                                    "states: no coefficient to compare")
        return out

    def _refit_summary(self) -> dict[str, Any] | None:
        if self.refit_failed is not None:
            return {"method": refit.METHOD, "failed": self.refit_failed}
        if self.refit is None or self.refitted is None:
            return None
        r, fit = self.refit, self.refitted
        out: dict[str, Any] = {
            "method": refit.METHOD,
            "equations": self.equations(fit, "refitted"),
            "coefficients": {v: fit.coefficients(i) for i, v in enumerate(self.variables)},
            "r2": dict(zip(self.variables, fit.r2, strict=True)),
            "loss_before": r.loss_before, "loss_after": r.loss_after,
            "evaluations": r.evaluations, "seconds": round(r.seconds, 2),
            "diverged": _diverged(self.paths.get("refitted")),
        }
        if r.stopped:
            out["stopped"] = r.stopped
        if self.refit_comparison is not None:
            out["truth"] = self.refit_comparison
        return out

    def figure(self, path: Path) -> None:
        from odecli.dynamics import plots

        what = " (known part + missing term)" if self.target.known is not None else ""
        p, title = self.paths, f"{self.exp.name}: recovered equations{what} against the data"
        if self.file_run:
            plots.recovered_parts(path, self.variables, p["parts"], p["dense"],
                                  p["dense_recovered"], p["dense_network"], p["n_train"], title,
                                  getattr(self.exp, "citation", None),
                                  y_refit=p.get("dense_refitted"))
        else:
            plots.recovered(path, self.variables, p["t"], p["truth"], p["recovered"],
                            p["network"], p["obs_t"], p["obs_y"], p["n_train"], title,
                            y_refit=p.get("refitted"))


def _diverged(paths: Any) -> bool:
    return paths is None or (isinstance(paths, list) and any(x is None for x in paths))


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
