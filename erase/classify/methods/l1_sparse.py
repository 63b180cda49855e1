"""l1-sparse (Jia et al., "Model sparsity can simplify machine unlearning"): fine-tune on the retain set
with an l1 penalty ``alpha * (1 - progress) * sum |theta|`` whose weight decays linearly to 0."""
from __future__ import annotations

from .base import Unlearned, clone, sgd


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model)
    alpha = float(cfg["alpha"])

    def penalty(net, progress):
        return alpha * (1.0 - progress) * sum(p.abs().sum() for p in net.parameters())

    sgd(m, split, split.retain_idx, split.data.train_y[split.retain_idx], cfg, seed, device, penalty=penalty)
    return Unlearned(m, info={"alpha": alpha})

