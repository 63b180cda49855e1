"""FT: fine-tune the original on the retain set only (catastrophic forgetting of the forget set)."""
from __future__ import annotations

from .base import Unlearned, clone, sgd


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model)
    sgd(m, split, split.retain_idx, split.data.train_y[split.retain_idx], cfg, seed, device)
    return Unlearned(m)
