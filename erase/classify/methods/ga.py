"""GA: gradient ascent on the forget set's cross-entropy (Thudi et al.)."""
from __future__ import annotations

from .base import Unlearned, clone, sgd


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model)
    sgd(m, split, split.forget_idx, split.data.train_y[split.forget_idx], cfg, seed, device, ascent=True)
    return Unlearned(m)
