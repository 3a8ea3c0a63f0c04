"""The CNF: a field f(t, z), the augmented dynamics (state, log-density, regularisers) and
log-likelihood / sampling on top of odecli.numerics.solve.

Data x sits at t=0 and the base N(0, I) at t=T:  dz/dt = f(t, z),  d(logdet)/dt = tr(df/dz),
so log p(x) = log N(z(T)) + logdet(T) (Chen et al. 2018, section 4; FFJORD). Sampling solves
from T back to 0.

Why the field carries its own Jacobian: in 2-D the exact trace costs only the two columns of
df/dz, which the MLP can push through its layers forward (a (batch, width, 2) tensor beside
each hidden layer) in one pass, instead of two reverse-mode passes with `create_graph`.
Training then differentiates an ordinary graph (no double backward). Hutchinson's estimator
(Gaussian or Rademacher noise, fixed for a whole solve as in FFJORD) uses one vector-Jacobian
product and works for any field.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from odecli.numerics.solve import CountingField, SolverSpec, solve

ACTIVATIONS = ("tanh", "softplus", "elu", "swish")
TRACES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")


def _act(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation and its derivative at x."""
    if name == "tanh":
        y = torch.tanh(x)
        return y, 1 - y * y
    if name == "softplus":
        return nn.functional.softplus(x), torch.sigmoid(x)
    if name == "elu":
        y = nn.functional.elu(x)
        return y, torch.where(x > 0, torch.ones_like(x), y + 1)
    s = torch.sigmoid(x)  # swish / SiLU
    return x * s, s + x * s * (1 - s)


class Field(nn.Module):
    """MLP field f(t, z) on 2-D states; with `time_input`, t is fed to every layer."""

    def __init__(self, dim: int, width: int, depth: int, activation: str,
                 time_input: bool) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation}")
        self.dim, self.activation, self.time_input = dim, activation, time_input
        extra = 1 if time_input else 0
        sizes = [dim] + [width] * depth + [dim]
        self.layers = nn.ModuleList(nn.Linear(a + extra, b)
                                    for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def _inputs(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if not self.time_input:
            return h
        return torch.cat([h, t.to(h).expand(*h.shape[:-1], 1)], -1)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(self._inputs(t, h))
            if i < len(self.layers) - 1:
                h = _act(self.activation, h)[0]
        return h

    def value_and_jacobian(self, t: torch.Tensor, z: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """f(t, z) and df/dz, shape (batch, dim, dim), by forward-mode propagation."""
        # jt: (d h / d z) transposed, (batch, dim, width), so each layer is one plain matmul
        # of (batch * dim, width) rows; None: the identity.
        h, jt = z, None
        for i, layer in enumerate(self.layers):
            w = layer.weight[:, : h.shape[-1]]
            pre = layer(self._inputs(t, h))
            jt = w.T.expand(z.shape[0], *w.T.shape) if jt is None else jt @ w.T
            if i < len(self.layers) - 1:
                h, d = _act(self.activation, pre)
                jt = d.unsqueeze(-2) * jt
            else:
                h = pre
        assert jt is not None
        return h, jt.transpose(-2, -1)


# The regulariser integrals ride in the state multiplied by REG_SCALE (and are divided by it
# after the solve). They are quadratures of a loss term, so their error must not set the step
# size (unscaled, it cost about 7% more NFE). The solver's mixed norm takes the largest part's
# RMS of err / (atol + rtol |y|); scaled, an integral's part is about REG_SCALE times its
# unscaled error over atol (while atol > rtol * REG_SCALE * |integral|, i.e. any usual
# tolerance), far below the state's, so the steps are those of (z, logdet) alone. Unlike a
# custom `norm` option this keeps the solve on the fast step loop (numerics/rk.py).
REG_SCALE = 1e-6


class CNFDynamics(nn.Module):
    """The augmented field on (z, logdet[, kinetic, jacobian]) for torchdiffeq.

    `regularise`: also integrate RNODE's kinetic energy |f|^2 and Jacobian Frobenius norm
    |df/dz|_F^2 (per sample, times REG_SCALE). `noise`: Hutchinson's vector for the solve in
    progress.
    """

    def __init__(self, field: nn.Module, trace: str = "exact", regularise: bool = False
                 ) -> None:
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"unknown trace {trace}")
        self.field, self.trace, self.regularise = field, trace, regularise
        self.noise: torch.Tensor | None = None

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, ...]:
        z = state[0]
        if self.trace == "exact":
            f, div, frob = self.exact(t, z)
        else:
            f, div, frob = self.hutchinson(t, z)
        if not self.regularise:
            return f, div
        return f, div, REG_SCALE * f.pow(2).sum(-1), REG_SCALE * frob

    def exact(self, t: torch.Tensor, z: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if hasattr(self.field, "value_and_jacobian"):
            f, jac = self.field.value_and_jacobian(t, z)
        else:  # any other field: the Jacobian column by column, by autograd
            f, jac = autograd_jacobian(self.field, t, z)
        div = jac.diagonal(dim1=-2, dim2=-1).sum(-1)
        return f, div, (jac.pow(2).sum((-2, -1)) if self.regularise else None)

    def hutchinson(self, t: torch.Tensor, z: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.noise
        if e is None or e.shape != z.shape:
            raise RuntimeError("trace=hutchinson needs CNFDynamics.noise set for the solve")
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            zz = z if z.requires_grad else z.detach().requires_grad_(True)
            f = self.field(t, zz)
            (vjp,) = torch.autograd.grad(f, zz, e, create_graph=outer)
        if not outer:
            f, vjp = f.detach(), vjp.detach()
        return f, (vjp * e).sum(-1), vjp.pow(2).sum(-1)


def autograd_jacobian(field: nn.Module, t: torch.Tensor, z: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """f(t, z) and df/dz (batch, dim, dim) by one vector-Jacobian product per dimension."""
    outer = torch.is_grad_enabled()
    with torch.enable_grad():
        zz = z if z.requires_grad else z.detach().requires_grad_(True)
        f = field(t, zz)
        rows = []
        for i in range(f.shape[-1]):
            (g,) = torch.autograd.grad(f[:, i].sum(), zz, create_graph=outer,
                                       retain_graph=True)
            rows.append(g)
    jac = torch.stack(rows, -2)
    return (f, jac) if outer else (f.detach(), jac.detach())


def sample_noise(kind: str, like: torch.Tensor) -> torch.Tensor:
    """Hutchinson's vector: zero mean, identity covariance (torch's global generator)."""
    if kind == "gaussian":
        return torch.randn_like(like)
    return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1


def standard_normal_logpdf(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z.pow(2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def log_likelihood(counter: CountingField, dyn: CNFDynamics, x: torch.Tensor, T: float,
                   spec: SolverSpec, grad: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """log p(x) per sample, and (when regularising) the kinetic and Jacobian integrals."""
    n = x.shape[0]
    zero = x.new_zeros(n)
    state: tuple[torch.Tensor, ...] = (x, zero) + ((zero, zero) if dyn.regularise else ())
    t = torch.tensor([0.0, T], dtype=x.dtype, device=x.device)
    out = solve(counter, state, t, spec, grad=grad)
    end = [o[-1] for o in out]
    logp = standard_normal_logpdf(end[0]) + end[1]
    if dyn.regularise:
        return logp, end[2] / REG_SCALE, end[3] / REG_SCALE
    return logp, None, None


def flow_back(counter: CountingField, z: torch.Tensor, times: torch.Tensor,
              spec: SolverSpec) -> torch.Tensor:
    """Base points at t=T carried back along `times` (decreasing to 0): (len(times), n, 2).
    Only the state is integrated: sampling needs no density."""
    state_only = CountingField(counter.func.field)
    state_only.abort = counter.abort
    with torch.no_grad():
        out = solve(state_only, z, times, spec, grad=False)
    counter.nfe += state_only.nfe
    return out
