"""Optimiser and learning-rate schedule, built the same way for every command."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD}
SCHEDULES = ("constant", "cosine")


def build(params: Iterable[torch.nn.Parameter], opts: Mapping[str, Any]
          ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimiser named by train.optimizer and, with train.schedule=cosine, a cosine decay
    from train.lr to train.lr_min over train.niters."""
    optimizer = OPTIMIZERS[opts["optimizer"]](params, lr=opts["lr"],
                                              weight_decay=opts["weight_decay"])
    scheduler = None
    if opts["schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=opts["niters"], eta_min=opts["lr_min"])
    return optimizer, scheduler


def stretch_schedule(optimizer: torch.optim.Optimizer, scheduler: Any,
                     opts: Mapping[str, Any]) -> None:
    """niters was raised on resume: follow the cosine schedule of the new length from the
    current iteration (closed form; the recursive form would drift)."""
    scheduler.T_max = opts["niters"]
    step, lo = scheduler.last_epoch, opts["lr_min"]
    lr = lo + (opts["lr"] - lo) * (1 + math.cos(math.pi * step / scheduler.T_max)) / 2
    for group in optimizer.param_groups:
        group["lr"] = lr
    scheduler._last_lr = [lr for _ in optimizer.param_groups]
