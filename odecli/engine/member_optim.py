"""Every ensemble member's optimiser step, batched where torch's own update allows.

Why: a member's optimiser steps its few small parameters one tensor at a time (torch's
default on the CPU), and 32 members' steps were ~20% of a batched training step on
ode_demo. Members with the same optimiser type and settings (a seed sweep: all of them)
take one foreach update over all their parameters instead. Each update is torch's own
(torch/optim/adam.py `_single_tensor_adam`, rmsprop.py `_single_tensor_rmsprop`) op for
op, so parameters and state are bit-for-bit those of each member's own `step()`
(tests/test_ensemble.py), and each member's state is updated in place, so its checkpoint
is as after its own step. Anything else (SGD, momentum, centred RMSprop, amsgrad, tensor
learning rates, several parameter groups) steps one by one with `opt.step()`.
"""

from __future__ import annotations

from typing import Any

import torch

Key = tuple[Any, ...]


def _plain(opt: torch.optim.Optimizer) -> bool:
    """Whether opt is one group of a batched kind with the defaults its update assumes."""
    if len(opt.param_groups) != 1:
        return False
    g = opt.param_groups[0]
    if torch.is_tensor(g["lr"]) or g.get("maximize") or g.get("capturable") \
            or g.get("differentiable") or g.get("fused"):
        return False
    if type(opt) in (torch.optim.Adam, torch.optim.AdamW):
        return not g["amsgrad"]
    if type(opt) is torch.optim.RMSprop:
        return g["momentum"] == 0 and not g["centered"]
    return False


def _adam_lists(opt: torch.optim.Optimizer) -> tuple[Key, list[tuple[torch.Tensor, ...]]]:
    g = opt.param_groups[0]
    lists: tuple[list[torch.Tensor], ...] = ([], [], [], [], [], [])
    opt._init_group(g, *lists)  # type: ignore[attr-defined]  # (creates missing state)
    params, grads, exp_avgs, exp_avg_sqs, _, steps = lists
    # Every parameter of a member has taken as many steps: one bias correction for all.
    step = float(steps[0]) if steps else 0.0
    key = ("adam", type(opt) is torch.optim.AdamW, float(g["lr"]), *g["betas"], g["eps"],
           g["weight_decay"], step)
    return key, list(zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True))


def _rmsprop_lists(opt: torch.optim.Optimizer) -> tuple[Key, list[tuple[torch.Tensor, ...]]]:
    g = opt.param_groups[0]
    lists: tuple[list[torch.Tensor], ...] = ([], [], [], [], [], [])
    opt._init_group(g, *lists)  # type: ignore[attr-defined]  # (creates missing state)
    params, grads, square_avgs, _, _, steps = lists
    key = ("rmsprop", float(g["lr"]), g["alpha"], g["eps"], g["weight_decay"])
    return key, list(zip(params, grads, square_avgs, steps, strict=True))


def optimizer_steps(optimizers: list[torch.optim.Optimizer]) -> None:
    """Step every member's optimiser: one foreach update per group of equal settings."""
    groups: dict[Key, list[tuple[torch.Tensor, ...]]] = {}
    for opt in optimizers:
        if not _plain(opt):
            opt.step()
            continue
        lists = _rmsprop_lists if type(opt) is torch.optim.RMSprop else _adam_lists
        key, tensors = lists(opt)
        opt._opt_called = True  # type: ignore[attr-defined]  # (the scheduler checks)
        if tensors:
            groups.setdefault(key, []).extend(tensors)
    with torch.no_grad():
        for key, tensors in groups.items():
            columns = [list(t) for t in zip(*tensors, strict=True)]
            if key[0] == "adam":
                _adam(*columns, *key[1:])
            else:
                _rmsprop(*columns, *key[1:])


def _adam(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
          exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], decoupled: bool,
          lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
          step: float) -> None:
    """torch.optim.Adam's update op for op, the bias corrections computed once for all the
    parameters (they share the step count) instead of read from each parameter's step."""
    torch._foreach_add_(steps, 1.0)
    if weight_decay != 0:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    done = step + 1
    bias_correction1 = 1 - beta1**done
    bias_correction2 = 1 - beta2**done
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2**0.5)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, (lr / bias_correction1) * -1)


def _rmsprop(params: list[torch.Tensor], grads: list[torch.Tensor],
             square_avgs: list[torch.Tensor], steps: list[torch.Tensor], lr: float,
             alpha: float, eps: float, weight_decay: float) -> None:
    """torch.optim.RMSprop's update (no momentum, not centred) op for op."""
    torch._foreach_add_(steps, 1.0)
    if weight_decay != 0:
        grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, grads, grads, 1 - alpha)
    avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, eps)
    torch._foreach_addcdiv_(params, grads, avg, -lr)
