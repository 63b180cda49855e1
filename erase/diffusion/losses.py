"""The losses SalUn uses for diffusion models (SD's UNet2DConditionModel and class-conditional UNets).

``eps`` below is any callable ``eps(z_t, t, cond) -> predicted noise``, so that the same losses
serve a text-conditioned UNet (cond = text embeddings) and a class-conditioned one (cond = labels).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Eps = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


def noisy(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return scheduler.add_noise(z0, noise, t)


def denoising_loss(eps: Eps, scheduler, z0, cond, t, noise) -> torch.Tensor:
    """The ordinary diffusion loss: predict the noise added to ``z0`` at ``t`` under ``cond``."""
    return F.mse_loss(eps(noisy(scheduler, z0, noise, t), t, cond).float(), noise.float())


def guided_forgetting_loss(eps: Eps, scheduler, z0, cond, uncond, t, noise, w: float) -> torch.Tensor:
    """The mask's forgetting loss: noise-prediction MSE under classifier-free guidance.

    ``pred = (1 + w) eps(z_t | c) - w eps(z_t | null)``, the form the SalUn paper and reference use
    (w = 7.5 for SD, w = 2 for the CIFAR DDPM; diffusers' ``guidance_scale`` equals 1 + w).
    """
    zt = noisy(scheduler, z0, noise, t)
    pred = (1 + w) * eps(zt, t, cond) - w * eps(zt, t, uncond)
    return F.mse_loss(pred.float(), noise.float())


def misaligned_loss(eps: Eps, scheduler, z0, cond_forget, cond_misaligned, t, noise) -> torch.Tensor:
    """SalUn's "random label" loss for diffusion: at the same z_t, pull the prediction under the forget
    concept toward the (frozen) prediction under a misaligned prompt or class."""
    zt = noisy(scheduler, z0, noise, t)
    with torch.no_grad():
        target = eps(zt, t, cond_misaligned).detach()
    return F.mse_loss(eps(zt, t, cond_forget).float(), target.float())
