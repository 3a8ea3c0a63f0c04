"""odecli's solver methods and what each one supports: the one table the rest reads.

torchdiffeq's solver table (numerics/backend.py checks it holds every name here), the config
schema (`solver.method`), the step-size rules, the fast loop (numerics/rk.py) and the
checkpointed gradient (numerics/aca.py) all take their lists from `TABLE`, so a method is
added, or a capability changed, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

ADAPTIVE_RK_KIND = "adaptive Runge-Kutta"
FIXED_RK_KIND = "fixed-step Runge-Kutta"
ADAMS_KIND = "Adams multistep"
SCIPY_KIND = "scipy"


@dataclass(frozen=True)
class Method:
    """One solver method and its kind, from which every capability follows."""

    name: str
    kind: str

    @property
    def adaptive(self) -> bool:
        """Step sizes chosen from an error estimate (rtol and atol apply)."""
        return self.kind in (ADAPTIVE_RK_KIND, SCIPY_KIND)

    @property
    def fast_loop(self) -> bool:
        """odecli's own step loop (numerics/rk.py) has this method's tableau."""
        return self.kind == ADAPTIVE_RK_KIND

    @property
    def replayable(self) -> bool:
        """gradient=checkpoint can replay its steps (numerics/aca.py)."""
        return self.kind in (ADAPTIVE_RK_KIND, FIXED_RK_KIND)


# In torchdiffeq 0.2.5's table order (error messages and listings show them in this order).
TABLE: tuple[Method, ...] = (
    Method("dopri8", ADAPTIVE_RK_KIND), Method("dopri5", ADAPTIVE_RK_KIND),
    Method("bosh3", ADAPTIVE_RK_KIND), Method("fehlberg2", ADAPTIVE_RK_KIND),
    Method("adaptive_heun", ADAPTIVE_RK_KIND),
    Method("euler", FIXED_RK_KIND), Method("midpoint", FIXED_RK_KIND),
    Method("heun2", FIXED_RK_KIND), Method("heun3", FIXED_RK_KIND), Method("rk4", FIXED_RK_KIND),
    Method("explicit_adams", ADAMS_KIND), Method("implicit_adams", ADAMS_KIND),
    Method("fixed_adams", ADAMS_KIND),
    Method("scipy_solver", SCIPY_KIND),
)
BY_NAME = {m.name: m for m in TABLE}

METHODS: tuple[str, ...] = tuple(m.name for m in TABLE)
ADAPTIVE: tuple[str, ...] = tuple(m.name for m in TABLE if m.adaptive)
FIXED_GRID: tuple[str, ...] = tuple(m.name for m in TABLE if not m.adaptive)
FAST_LOOP: tuple[str, ...] = tuple(m.name for m in TABLE if m.fast_loop)
REPLAYABLE: tuple[str, ...] = tuple(m.name for m in TABLE if m.replayable)
FIXED_RK: tuple[str, ...] = tuple(m.name for m in TABLE if m.kind == FIXED_RK_KIND)

# How a gradient is taken through a solve (numerics/solve.py dispatches on these).
GRADIENTS: tuple[str, ...] = ("checkpoint", "adjoint", "direct")
