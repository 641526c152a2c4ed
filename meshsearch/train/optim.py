"""Optimisers and learning-rate schedules, registered by name in :mod:`meshsearch.registry`."""

from __future__ import annotations

import torch

from meshsearch.registry import OPTIMIZERS, SCHEDULERS

from .config import TrainConfig

# optimisers: (param groups, lr, weight_decay) -> optimizer
OPTIMIZERS.register("adam", lambda groups, lr, weight_decay: torch.optim.Adam(
    groups, lr=lr, weight_decay=weight_decay))
OPTIMIZERS.register("adamw", lambda groups, lr, weight_decay: torch.optim.AdamW(
    groups, lr=lr, weight_decay=weight_decay))
OPTIMIZERS.register("sgd", lambda groups, lr, weight_decay: torch.optim.SGD(
    groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay))


@SCHEDULERS.register_module("multistep")
def multistep(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """The tutorial's: lr x gamma at each milestone epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.milestones), gamma=config.gamma
    )


@SCHEDULERS.register_module("cosine")
def cosine(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Half a cosine from lr down to lr x 0.01 over the planned epochs (milestones unused)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, config.epochs), eta_min=config.lr * 0.01
    )
