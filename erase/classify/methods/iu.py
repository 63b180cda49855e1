"""IU: influence unlearning (Koh & Liang; Izzo et al.), with a *diagonal* empirical Fisher as the Hessian.

One Newton-like step away from the forget set: ``theta += alpha * (g_f - g_r) / (F + damping * mean(F))``,
where ``g_f`` / ``g_r`` are the mean cross-entropy gradients on the forget / retain sets and ``F`` is the
mean squared per-sample gradient on (up to ``fisher_samples``) retain samples. The reference (Jia et al.)
uses a WoodFisher inverse-Hessian-vector product; the diagonal approximation is cheaper and cruder.
``alpha`` is the tuned step size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from .base import Unlearned, clone


def _mean_grad(model, data, idx, device, batch_size=256) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    for s in range(0, len(idx), batch_size):
        b = idx[s:s + batch_size]
        loss = F.cross_entropy(model(data.train_batch(b, device)), data.train_y[b].to(device), reduction="sum")
        loss.backward()
    out = {n: p.grad.detach() / len(idx) for n, p in params.items()}
    for p in params.values():
        p.grad = None
        p.requires_grad_(False)
    return out


def _diag_fisher(model, data, idx, device, chunk=64) -> dict[str, torch.Tensor]:
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss_one(p, x, y):
        return F.cross_entropy(functional_call(model, (p, buffers), (x.unsqueeze(0),)), y.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in range(0, len(idx), chunk):
        b = idx[s:s + chunk]
        gs = per_sample(params, data.train_batch(b, device), data.train_y[b].to(device))
        for n, g in gs.items():
            acc[n] += g.pow(2).sum(0)
    return {n: a / len(idx) for n, a in acc.items()}


def unlearn(model, split, cfg, seed, device="cpu") -> Unlearned:
    m = clone(model).to(device).eval()
    data = split.data
    g_f = _mean_grad(m, data, split.forget_idx, device)
    g_r = _mean_grad(m, data, split.retain_idx, device)
    g = torch.Generator().manual_seed(int(seed))
    n_fisher = min(int(cfg.get("fisher_samples", 1024)), len(split.retain_idx))
    sub = split.retain_idx[torch.randperm(len(split.retain_idx), generator=g)[:n_fisher]]
    fisher = _diag_fisher(m, data, sub, device)
    mean_f = torch.cat([f.reshape(-1) for f in fisher.values()]).mean()
    lam = float(cfg.get("damping", 0.1)) * mean_f
    alpha = float(cfg["alpha"])
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.add_(alpha * (g_f[n] - g_r[n]) / (fisher[n] + lam))
    return Unlearned(m, info={"alpha": alpha, "fisher_samples": n_fisher})
