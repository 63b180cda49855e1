"""BS: boundary shrinking (Chen et al., CVPR 2023). Each forget sample is relabelled with its nearest
wrong class, found on the original model by one FGSM step (L-inf, ``eps`` in [0, 1] pixel units):
the arg-max of the perturbed input's logits with the true class excluded. Then fine-tune on the forget
set with those labels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Unlearned, clone, sgd


def nearest_wrong_labels(model, split, eps: float, device="cpu", batch_size: int = 256) -> torch.Tensor:
    data = split.data
    eps_n = eps / data.pixel_std()  # the step in normalised units
    model.to(device).eval()
    out = []
    for s in range(0, len(split.forget_idx), batch_size):
        idx = split.forget_idx[s:s + batch_size]
        y = data.train_y[idx].to(device)
        x = data.train_batch(idx, device).requires_grad_(True)
        loss = F.cross_entropy(model(x), y)
        (gx,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            z = model(x + eps_n * gx.sign())
            z[torch.arange(len(y)), y] = float("-inf")
            out.append(z.argmax(1).cpu())
    return torch.cat(out)


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    labels = nearest_wrong_labels(clone(model), split, float(cfg.get("eps", 0.1)), device)
    m = clone(model)
    sgd(m, split, split.forget_idx, labels, cfg, seed, device)
    return Unlearned(m)
