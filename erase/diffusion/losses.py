"""The losses SalUn uses for diffusion models (SD's UNet2DConditionModel and class-conditional UNets).

``eps`` below is any callable ``eps(z_t, t, cond) -> the denoiser's output``, so that the same losses
serve a text-conditioned UNet (cond = text embeddings) and a class-conditioned one (cond = labels).
What the output is trained to match follows the scheduler's ``prediction_type``, as in diffusers'
training scripts: the noise (``epsilon``, SD 1.x, SD 2.x base), the velocity
``sqrt(a_t) noise - sqrt(1 - a_t) z0`` (``v_prediction``, SD 2.x 768 px; Salimans & Ho, 2022) or the
clean sample (``sample``); for a flow-matching model (SD3, FLUX: ``flow.py``) the velocity ``noise - z0``
(``flow_matching``). The misaligned loss compares two outputs and needs no target.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F

Eps = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


def noisy(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return scheduler.add_noise(z0, noise, t)


def training_target(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the denoiser's output should equal at ``t``, by the scheduler's ``prediction_type``."""
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, noise, t)
    if kind == "sample":
        return z0
    if kind == "flow_matching":  # SD3, FLUX (``flow.FlowMatchTraining``): the velocity from the data to the noise
        return noise - z0
    raise ValueError(f"unknown prediction_type {kind!r} (epsilon, v_prediction, sample or flow_matching)")


def denoising_loss(eps: Eps, scheduler, z0, cond, t, noise) -> torch.Tensor:
    """The ordinary diffusion loss: predict the noise (or velocity, or sample) of ``z0`` at ``t`` under ``cond``."""
    target = training_target(scheduler, z0, noise, t)
    return F.mse_loss(eps(noisy(scheduler, z0, noise, t), t, cond).float(), target.float())


def guided_forgetting_loss(eps: Eps, scheduler, z0, cond, uncond, t, noise, w: float) -> torch.Tensor:
    """The mask's forgetting loss: noise-prediction MSE under classifier-free guidance.

    ``pred = (1 + w) eps(z_t | c) - w eps(z_t | null)``, the form the SalUn paper and reference use
    (w = 7.5 for SD, w = 2 for the CIFAR DDPM; diffusers' ``guidance_scale`` equals 1 + w). The guided
    output is compared with the training target of the model's ``prediction_type``.
    """
    zt = noisy(scheduler, z0, noise, t)
    pred = (1 + w) * eps(zt, t, cond) - w * eps(zt, t, uncond)
    return F.mse_loss(pred.float(), training_target(scheduler, z0, noise, t).float())


def guided_forgetting_terms(eps: Eps, scheduler, z0, cond, uncond, t, noise, w: float) -> Iterator[torch.Tensor]:
    """``guided_forgetting_loss``'s gradient in two backward passes, one forward pass's activations alive at a
    time: yields the loss with the gradient through ``eps(z_t | c)`` only, then (once that is backpropagated)
    the same loss with the gradient through ``eps(z_t | null)`` only. The unconditional output is computed
    first without a graph (a third forward pass): both passes need it. Their two gradients add up to the one
    loss's gradient (to float rounding: the weights' sums are added in another order)."""
    zt = noisy(scheduler, z0, noise, t)
    target = training_target(scheduler, z0, noise, t).float()
    if w == 0:  # no guidance (a guidance-distilled family): the plain loss, one pass
        yield F.mse_loss(eps(zt, t, cond).float(), target)
        return
    with torch.no_grad():
        e_u = eps(zt, t, uncond)
    e_c = eps(zt, t, cond)
    yield F.mse_loss(((1 + w) * e_c - w * e_u).float(), target)
    e_c = e_c.detach()
    e_u = eps(zt, t, uncond)
    yield F.mse_loss(((1 + w) * e_c - w * e_u).float(), target)


def each_under(ctx: Callable, terms: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The terms, each computed under a fresh ``ctx()`` (autocast) that is left before the caller backpropagates
    it: a generator's ``with`` would stay entered while it waits at ``yield``."""
    while True:
        with ctx():
            term = next(terms, None)
        if term is None:
            return
        yield term


def misaligned_loss(eps: Eps, scheduler, z0, cond_forget, cond_misaligned, t, noise) -> torch.Tensor:
    """SalUn's "random label" loss for diffusion: at the same z_t, pull the prediction under the forget
    concept toward the (frozen) prediction under a misaligned prompt or class."""
    zt = noisy(scheduler, z0, noise, t)
    with torch.no_grad():
        target = eps(zt, t, cond_misaligned).detach()
    return F.mse_loss(eps(zt, t, cond_forget).float(), target.float())
