"""Retrain: exact unlearning, a fresh model trained from scratch on the retain set (the gold standard)."""
from __future__ import annotations

import torch

from ..models import fresh_like
from ..train import train_original
from .base import Unlearned


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    torch.manual_seed(int(seed))
    fresh = fresh_like(model)
    train_original(fresh, split.data, split.retain_idx, epochs=cfg["epochs"], lr=cfg["lr"],
                   batch_size=cfg.get("batch_size", 64), seed=seed, device=device,
                   weight_decay=cfg.get("weight_decay", 5e-4))
    return Unlearned(fresh)
