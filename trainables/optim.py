"""A trial's optimiser and learning-rate schedule, from its config.

The optimiser takes the model's parameter groups (:meth:`trainables.models.Classifier.param_groups`:
the backbone at ``lr x backbone_lr_mult`` when fine-tuning, the head at ``lr``); the schedule
steps once per epoch.
"""

from __future__ import annotations

import torch

from trainables.config import TrialConfig
from trainables.models import Classifier


def optimizer(cfg: TrialConfig, model: Classifier) -> torch.optim.Optimizer:
    """Adam (the papers'), AdamW or SGD with momentum, per ``cfg.optimizer``."""
    groups = model.param_groups(cfg.lr, cfg.backbone_lr_mult)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_schedule(
    cfg: TrialConfig, opt: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine over ``cfg.epochs``, steps of ``lr_step`` epochs by ``lr_gamma``, or constant."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
