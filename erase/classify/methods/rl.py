"""RL: random labelling, unmasked: forget samples get random wrong labels, trained with the retain set.

The same objective as SalUn on every weight (SalUn = this under the saliency mask), so RL vs SalUn
isolates the mask.
"""
from __future__ import annotations

from .base import Unlearned, clone, forget_plus_retain_random_labels, sgd


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model)
    idx, labels = forget_plus_retain_random_labels(split, seed)
    sgd(m, split, idx, labels, cfg, seed, device)
    return Unlearned(m)
