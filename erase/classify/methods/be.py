"""BE: boundary expanding (Chen et al., CVPR 2023). Add a "shadow" output class, train the forget
samples into it (forget set only), then drop the shadow neuron: their probability mass lands elsewhere."""
from __future__ import annotations

import torch
from torch import nn

from .base import Unlearned, clone, sgd


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model)
    old = m.fc
    c = old.out_features
    torch.manual_seed(int(seed))
    wide = nn.Linear(old.in_features, c + 1).to(old.weight.device)
    with torch.no_grad():
        wide.weight[:c].copy_(old.weight)
        wide.bias[:c].copy_(old.bias)
    m.fc = wide
    shadow = torch.full((len(split.forget_idx),), c, dtype=torch.int64)
    sgd(m, split, split.forget_idx, shadow, cfg, seed, device)
    narrow = nn.Linear(old.in_features, c).to(old.weight.device)
    with torch.no_grad():
        narrow.weight.copy_(wide.weight[:c])
        narrow.bias.copy_(wide.bias[:c])
    m.fc = narrow
    for p in m.parameters():
        p.requires_grad_(False)
    return Unlearned(m.eval())
