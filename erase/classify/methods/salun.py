"""SalUn (Fan et al., ICLR 2024) and SalUn-soft.

SalUn: the saliency mask from the shared engine (``erase.core.mask.compute_mask``): the gradient of the
forget set's cross-entropy at the original weights, ranked globally, top ``keep`` (0.5) kept. Then
random labelling (forget samples with random wrong labels, plus the retain set) under
``MaskedParameters`` with SGD (momentum 0.9, weight decay 5e-4): the weights outside the mask stay
bit-identical to the original, momentum and weight decay included. (BatchNorm running statistics are
buffers, not weights: they update as in the reference.)

SalUn-soft: no hard mask. Each weight's gradient is scaled by a soft-thresholded saliency,
``min(1, |s| / gamma)``, where ``s`` is the same saliency and ``gamma`` the hard mask's threshold:
weights the hard mask keeps get their full update, the others one proportional to their saliency.
Every weight may move (weight decay included).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...core.mask import accumulate_gradients, compute_mask, global_threshold, select_parameters
from ...core.masked_optim import MaskedParameters
from .base import Unlearned, clone, forget_plus_retain_random_labels, sgd


def _forget_loss(model, split, device, batch_size=256):
    data = split.data
    batches = [split.forget_idx[s:s + batch_size] for s in range(0, len(split.forget_idx), batch_size)]

    def loss_fn(b):
        return F.cross_entropy(model(data.train_batch(b, device)), data.train_y[b].to(device))

    return loss_fn, batches


def saliency_mask(model, split, keep: float = 0.5, device="cpu"):
    """The SalUn mask of ``model`` for ``split``'s forget set (``erase.core.mask.Mask``)."""
    model.to(device).eval()
    loss_fn, batches = _forget_loss(model, split, device)
    return compute_mask(model, loss_fn, batches, selection="all", keep=keep, scope="global", progress=False,
                        meta={"task": "classification", **{k: v for k, v in split.describe().items()
                                                            if k not in ("format",)}})


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model)
    mask = saliency_mask(m, split, float(cfg.get("keep", 0.5)), device)
    masked = MaskedParameters(m, mask)
    idx, labels = forget_plus_retain_random_labels(split, seed)
    sgd(m, split, idx, labels, cfg, seed, device, masked=masked)
    return Unlearned(m, mask=mask, info={"keep": mask.kept / mask.total})


def unlearn_soft(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model).to(device).eval()
    loss_fn, batches = _forget_loss(m, split, device)
    params = select_parameters(m, "all")
    scores, _ = accumulate_gradients(m, params, loss_fn, batches, progress=False)
    gamma, _, _ = global_threshold(scores.values(), float(cfg.get("keep", 0.5)))
    gamma = max(gamma, 1e-30)
    gates = {n: (s.abs() / gamma).clamp(max=1.0) for n, s in scores.items()}
    del scores

    @torch.no_grad()
    def hook():
        for n, p in params.items():
            if p.grad is not None:
                p.grad.mul_(gates[n])

    idx, labels = forget_plus_retain_random_labels(split, seed)
    sgd(m, split, idx, labels, cfg, seed, device, grad_hook=hook)
    return Unlearned(m, info={"mean_gate": float(torch.cat([g.reshape(-1) for g in gates.values()]).mean())})
