"""What every method returns, and helpers several share."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ...core.mask import Mask
from ..forget import ForgetSplit
from ..train import train_sgd


@dataclass
class Unlearned:
    model: nn.Module
    mask: Mask | None = None
    info: dict = field(default_factory=dict)


def clone(model: nn.Module) -> nn.Module:
    """A deep copy (keeps ``.spec``), so the original stays untouched."""
    return copy.deepcopy(model)


def random_wrong_labels(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """For each label, a uniformly random *other* class (seeded)."""
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return (y + torch.randint(1, num_classes, y.shape, generator=g)) % num_classes


def sgd(model, split: ForgetSplit, idx, labels, cfg: dict, seed: int, device: str, **kw) -> nn.Module:
    """``train_sgd`` with a method's usual settings: constant lr unless ``cfg['schedule']`` says otherwise."""
    return train_sgd(model, split.data, idx, labels, epochs=cfg["epochs"], lr=cfg["lr"],
                     batch_size=cfg.get("batch_size", 64), momentum=cfg.get("momentum", 0.9),
                     weight_decay=cfg.get("weight_decay", 5e-4), schedule=cfg.get("schedule", "const"), seed=seed,
                     augment=split.data.augment != "none", device=device, **kw)


def forget_plus_retain_random_labels(split: ForgetSplit, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and labels of the RL training set: forget samples with random wrong labels, retain with theirs."""
    y = split.data.train_y
    idx = torch.cat([split.forget_idx, split.retain_idx])
    labels = torch.cat([random_wrong_labels(y[split.forget_idx], split.data.num_classes, seed), y[split.retain_idx]])
    return idx, labels
