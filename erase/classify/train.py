"""The one SGD loop every method shares (training the original, Retrain, FT, RL, GA, BE, BS, l1, SalUn).

Seeded with its own ``torch.Generator`` (shuffling, augmentation), so a run is reproducible given the
seed and the thread count. SGD with momentum 0.9 and weight decay 5e-4 by default, cosine or constant
learning rate. With ``masked`` (a ``MaskedParameters``) only the salient weights move, bit-identically
elsewhere, momentum and weight decay included.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checkpoints import TrainingDiverged
from ..core.masked_optim import MaskedParameters
from .data import ImageData


def train_sgd(model: nn.Module, data: ImageData, idx: torch.Tensor, labels: torch.Tensor, *, epochs: float, lr: float,
              batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 5e-4, schedule: str = "cosine",
              seed: int = 0, augment: bool = False, device: str = "cpu", ascent: bool = False,
              masked: MaskedParameters | None = None, grad_hook: Callable[[], None] | None = None,
              penalty: Callable[[nn.Module, float], torch.Tensor] | None = None) -> nn.Module:
    """Minimise cross-entropy of ``model(train_x[idx])`` against ``labels`` (aligned with ``idx``).

    ``epochs`` may be fractional (a share of an epoch's steps). ``ascent`` maximises it instead (GA).
    ``penalty(model, progress)`` adds a term (l1-sparse); ``grad_hook()`` runs between backward and step.
    """
    if len(idx) != len(labels):
        raise ValueError("labels must align with idx")
    model.to(device).train()
    if masked is not None:
        params = masked.parameters()
    else:
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if masked is not None:
        masked.attach(opt)
    g = torch.Generator().manual_seed(int(seed))
    n = len(idx)
    per_epoch = max(1, math.ceil(n / batch_size))
    total = max(1, int(round(epochs * per_epoch)))
    labels = labels.to(device)
    step = 0
    while step < total:
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            if step >= total:
                break
            b = perm[s:s + batch_size]
            x = data.train_batch(idx[b], device, augment=augment, generator=g)
            loss = F.cross_entropy(model(x), labels[b])
            if ascent:
                loss = -loss
            if penalty is not None:
                loss = loss + penalty(model, step / total)
            if not torch.isfinite(loss.detach()):
                raise TrainingDiverged(f"training diverged at step {step + 1} of {total}: the loss is "
                                       f"{float(loss.detach()):g} (learning rate {lr:g}); lower --lr. Nothing was written")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_hook is not None:
                grad_hook()
            if masked is not None:
                masked.step(opt)
            else:
                opt.step()
            step += 1
            if schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    check_finite(model, f"after {total} steps at learning rate {lr:g}")
    return model


def check_finite(model: nn.Module, when: str) -> None:
    """Raise ``TrainingDiverged`` if any weight or buffer of ``model`` is NaN or infinite (the CLI: one line, exit 1)."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise TrainingDiverged(f"training diverged: weight {name} is not finite {when}; lower --lr (or "
                                   "--alpha). Nothing was written")


def train_original(model: nn.Module, data: ImageData, idx: torch.Tensor | None = None, *, epochs: float, lr: float,
                   batch_size: int = 64, seed: int = 0, device: str = "cpu", weight_decay: float = 5e-4) -> nn.Module:
    """Ordinary training on ``idx`` (default: the whole training set) with the true labels."""
    if idx is None:
        idx = torch.arange(len(data.train_y))
    return train_sgd(model, data, idx, data.train_y[idx], epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                     augment=data.augment != "none", device=device, weight_decay=weight_decay)
