"""The latent-ODE VAE's layers for many members at once: each member's weights stacked along a
leading member dimension (`hydra/launcher=ensemble`, odecli.latent.ensemble).

`restack()` builds the stacked weights from the members' own parameters with a
differentiable `torch.stack`, once per training step or evaluation, so each member's
optimiser gets the gradient of its own loss; the arithmetic is the solo layers' (nn.Linear,
nn.GRUCell, nn.RNNCell), batched over members with `baddbmm`, equal to float rounding.
Inputs are (M, N, features); outputs (M, N, out).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

Layers = list[tuple[torch.Tensor, torch.Tensor]]


def stack_linear(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    """Members' Linear layers as (weight (M, in, out), bias (M, 1, out))."""
    w = torch.stack([lin.weight for lin in linears]).transpose(1, 2)
    b = torch.stack([lin.bias for lin in linears]).unsqueeze(1)
    return w, b


def _run(layers: Layers, acts: Sequence[Callable[[torch.Tensor], torch.Tensor]],
         y: torch.Tensor) -> torch.Tensor:
    h = y
    for i, (w, b) in enumerate(layers):
        h = torch.baddbmm(b, h, w)
        if i < len(acts):
            h = acts[i](h)
    return h


class StackedMLP:
    """Members' `nn.Sequential` of Linear layers and activations (odecli.latent.model._mlp)."""

    def __init__(self, nets: Sequence[nn.Sequential]) -> None:
        self.nets = list(nets)
        self.acts = [m for m in self.nets[0] if not isinstance(m, nn.Linear)]
        self.layers: Layers = []

    def restack(self) -> None:
        n = len([m for m in self.nets[0] if isinstance(m, nn.Linear)])
        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in self.nets]
        self.layers = [stack_linear([ls[i] for ls in linears]) for i in range(n)]

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return _run(self.layers, self.acts, y)

    def select(self, rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network of the members `rows` alone (the solver steps only unfinished ones)."""
        layers = [(w.index_select(0, rows), b.index_select(0, rows)) for w, b in self.layers]
        return functools.partial(_run, layers, self.acts)


class Negated:
    """-f(y): an autonomous field solved backward in time, as the fast loop does it
    (numerics/rk.py: decreasing times are the negated problem over increasing ones)."""

    def __init__(self, field: StackedMLP) -> None:
        self.field = field

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return -self.field(y)

    def select(self, rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        sub = self.field.select(rows)
        return lambda y: -sub(y)


class StackedCell:
    """Members' nn.GRUCell or nn.RNNCell (tanh), with the input projection of every time step
    made at once (`project`) and the recurrence one `baddbmm` per step (`step`)."""

    def __init__(self, cells: Sequence[nn.Module]) -> None:
        self.cells = list(cells)
        self.gru = isinstance(self.cells[0], nn.GRUCell)
        if not self.gru and getattr(self.cells[0], "nonlinearity", "tanh") != "tanh":
            raise ValueError("stacked RNN cells are tanh cells")
        self.w_ih = self.b_ih = self.w_hh = self.b_hh = torch.empty(0)

    def restack(self) -> None:
        c = self.cells
        self.w_ih = torch.stack([x.weight_ih for x in c]).transpose(1, 2)
        self.b_ih = torch.stack([x.bias_ih for x in c]).unsqueeze(1)
        self.w_hh = torch.stack([x.weight_hh for x in c]).transpose(1, 2)
        self.b_hh = torch.stack([x.bias_hh for x in c]).unsqueeze(1)

    def project(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (M, B, T, n_in) -> their input gates (M, B, T, gates)."""
        m, b, t, n_in = inputs.shape
        gi = torch.baddbmm(self.b_ih, inputs.reshape(m, b * t, n_in), self.w_ih)
        return gi.view(m, b, t, -1)

    def step(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from the input gates gi (M, B, gates) and the hidden state h (M, B, H),
        as ATen's gru_cell / rnn_tanh_cell compute it."""
        gh = torch.baddbmm(self.b_hh, h, self.w_hh)
        if not self.gru:
            return torch.tanh(gi + gh)
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return (h - new) * update + new
