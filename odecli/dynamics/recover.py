"""Back from a learned field to equations: sparse regression (SINDy) of a `train` run's field.

The field is sampled at the states the data holds (the run's observations of a simulated
system; the observed rows of a data file's training trajectories, in the file's units), so
the regression sees the network only where it was trained. PySINDy builds the polynomial
library and runs sequentially thresholded least squares (STLSQ) on it. Each library column
and each equation's rate is scaled to unit RMS over the samples first, so the threshold is
a share: a term whose typical size over the data is below `threshold` times its equation's
typical rate is dropped, in any units. With known physics (`model.known`) only the
network's part, the missing term, is regressed. Where the truth is known (built-in systems,
`system=equations`) each coefficient is compared with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from odecli.dynamics.recover_defaults import (  # noqa: F401 - recover.DEFAULT_* for callers
    DEFAULT_DEGREE,
    DEFAULT_THRESHOLD,
    DEGREES,
)
from odecli.errors import ConfigError, OdecliError

MAX_ITER = 50              # STLSQ's rounds of thresholding and refitting
MAX_TERMS = 2000           # library columns (variables and degree bound it)
INSTALL = "pip install odecli[recover]"


def check_options(degree: int, threshold: float, prefix: str = "") -> None:
    """The range rules of the degree and the threshold (one line each), named as the caller
    spells them: `odecli recover` passes prefix "--", the Python API none."""
    lo, hi = DEGREES
    if isinstance(degree, bool) or not isinstance(degree, int) or not lo <= degree <= hi:
        raise ConfigError(f"{prefix}degree must be an integer from {lo} to {hi}, got "
                          f"{degree!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            math.isfinite(threshold) and 0 <= threshold < 1):
        raise ConfigError(f"{prefix}threshold must be a number in [0, 1) (a share of each "
                          f"equation's RMS rate over the data), got {threshold!r}")


def pysindy() -> Any:
    """The PySINDy module, or one line saying how to install it."""
    try:
        import pysindy as ps
    except ImportError:
        raise OdecliError(f"odecli recover needs PySINDy: {INSTALL}") from None
    return ps


# ------------------------------------------------------------------------------ the fit

@dataclass
class Fit:
    """A sparse polynomial fit: rates ≈ theta(y) @ coef.T."""

    terms: list[str]          # library column names, e.g. "1", "x", "x y", "x^2"
    powers: np.ndarray        # (k, dim) exponents of each column
    coef: np.ndarray          # (dim, k), exact zeros for dropped terms
    r2: list[float]           # per equation, against the sampled rates

    def equation(self, i: int) -> str:
        return written([(float(c), t) for c, t in zip(self.coef[i], self.terms, strict=True)
                        if c != 0])

    def coefficients(self, i: int) -> dict[str, float]:
        return {t: float(c) for c, t in zip(self.coef[i], self.terms, strict=True) if c != 0}


def written(terms: Sequence[tuple[float, str]], digits: int = 4) -> str:
    """A right-hand side as text: [(1.5, "x"), (-1.0, "x y")] -> "1.5 x - 1 x y"."""
    out = ""
    for c, name in terms:
        num = f"{abs(c):.{digits}g}" + ("" if name == "1" else f" {name}")
        out += (f"-{num}" if c < 0 else num) if not out else f" {'-' if c < 0 else '+'} {num}"
    return out or "0"


def fit(y: np.ndarray, rates: np.ndarray, names: Sequence[str], degree: int,
        threshold: float) -> Fit:
    """STLSQ on a polynomial library of the states y (n, dim) against rates (n, dim), with
    columns and equations scaled to unit RMS (so `threshold` is a share, in any units)."""
    ps = pysindy()
    terms = math.comb(y.shape[1] + degree, degree)  # monomials of degree <= `degree`
    if terms > MAX_TERMS:
        raise ConfigError(f"a degree-{degree} library of {y.shape[1]} variables has "
                          f"{terms} terms (at most {MAX_TERMS}); lower the degree")
    lib = ps.PolynomialLibrary(degree=degree).fit(y)
    theta = np.asarray(lib.transform(y), dtype=np.float64)
    col = np.sqrt((theta**2).mean(0))
    col[col == 0] = 1.0
    rate = np.sqrt((rates**2).mean(0))
    rate[rate == 0] = 1.0
    opt = ps.STLSQ(threshold=threshold, alpha=0.0, max_iter=MAX_ITER)
    opt.fit(theta / col, rates / rate)
    coef = np.asarray(opt.coef_, dtype=np.float64).reshape(y.shape[1], -1)
    coef = coef * rate[:, None] / col[None, :]
    powers = np.asarray(lib.powers_)
    return Fit(list(lib.get_feature_names(list(names))), powers, coef,
               _r2(theta, rates, coef))


def with_coef(result: Fit, coef: np.ndarray, y: np.ndarray, rates: np.ndarray) -> Fit:
    """The same terms with other coefficients (a refit), R^2 against the same rates."""
    theta = np.prod(y[:, None, :] ** result.powers[None], axis=-1)
    return Fit(result.terms, result.powers, np.asarray(coef, dtype=np.float64),
               _r2(theta, rates, coef))


def _r2(theta: np.ndarray, rates: np.ndarray, coef: np.ndarray) -> list[float]:
    res = ((rates - theta @ coef.T) ** 2).sum(0)
    tot = ((rates - rates.mean(0)) ** 2).sum(0)
    return [float(1 - r / s) if s > 0 else float("nan") for r, s in zip(res, tot, strict=True)]


# --------------------------------------------------------------------------- the truth

def _symbols(variables: Sequence[str]) -> list[Any]:
    import sympy as sp

    return [sp.Symbol(v, real=True) for v in variables]  # as odecli.dynamics.equations


def true_equations(true_field: Any, variables: Sequence[str]) -> list[Any] | None:
    """The true right-hand sides as SymPy expressions, where the system has any."""
    import sympy as sp

    from odecli.dynamics import systems

    syms = _symbols(variables)
    if isinstance(true_field, systems.LotkaVolterraField):
        x, p = syms
        f = true_field
        return [sp.Float(f.a) * x - sp.Float(f.b) * x * p,
                sp.Float(f.d) * x * p - sp.Float(f.c) * p]
    if isinstance(true_field, systems.LinearField):  # y**power @ A, row-vector convention
        a = true_field.A.tolist()
        return [sum(sp.Float(a[i][j]) * s**true_field.power for i, s in enumerate(syms))
                for j in range(len(syms))]
    exprs = getattr(true_field, "exprs", None)
    if exprs is not None and hasattr(true_field, "values"):
        return substituted(true_field)
    return None


def substituted(eq_field: Any) -> list[Any]:
    """An EquationField's expressions with its parameters' current values put in."""
    import sympy as sp

    values = {sp.Symbol(k, real=True): sp.Float(v) for k, v in eq_field.values().items()}
    return [sp.expand(e.subs(values)) for e in eq_field.exprs]


def polynomial(expr: Any, variables: Sequence[str]) -> dict[tuple[int, ...], float] | None:
    """Monomial exponents -> coefficient, or None when expr is no polynomial of the states
    (t, functions, negative powers)."""
    import sympy as sp

    syms = _symbols(variables)
    expr = sp.expand(expr)
    if expr.free_symbols - set(syms) or not expr.is_polynomial(*syms):
        return None
    poly = sp.Poly(expr, *syms)
    return {tuple(int(k) for k in m): float(c) for m, c in poly.terms() if float(c) != 0}


def compare(result: Fit, truth: list[dict[tuple[int, ...], float]],
            variables: Sequence[str]) -> dict[str, Any]:
    """Each true coefficient against the recovered one, spurious and missed terms, and true
    terms the library cannot hold."""
    index = {tuple(int(k) for k in p): j for j, p in enumerate(result.powers)}
    rows: dict[str, dict[str, Any]] = {}
    spurious, missed, outside = [], [], []
    worst_rel, worst_spur = 0.0, 0.0
    for i, v in enumerate(variables):
        eq: dict[str, Any] = {}
        for mono, true in truth[i].items():
            if mono not in index:
                outside.append({"equation": v, "term": term_name(mono, variables),
                                "true": true})
                continue
            rec = float(result.coef[i, index[mono]])
            err = abs(rec - true)
            eq[result.terms[index[mono]]] = {"true": true, "recovered": rec,
                                             "abs_error": err, "rel_error": err / abs(true)}
            worst_rel = max(worst_rel, err / abs(true))
            if rec == 0:
                missed.append({"equation": v, "term": result.terms[index[mono]],
                               "true": true})
        for j, term in enumerate(result.terms):
            c = float(result.coef[i, j])
            if c != 0 and tuple(int(k) for k in result.powers[j]) not in truth[i]:
                spurious.append({"equation": v, "term": term, "coefficient": c})
                worst_spur = max(worst_spur, abs(c))
        rows[v] = eq
    return {"coefficients": rows, "spurious": spurious, "missed": missed,
            "outside_library": outside, "max_rel_error": worst_rel,
            "max_spurious": worst_spur,
            "structure_recovered": not spurious and not missed and not outside}


def term_name(mono: tuple[int, ...], variables: Sequence[str]) -> str:
    parts = [v if k == 1 else f"{v}^{k}" for v, k in zip(variables, mono, strict=True) if k]
    return " ".join(parts) or "1"
