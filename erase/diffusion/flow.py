"""The flow-matching training schedule (rectified flow: SD3, FLUX), in the shape the erase job's losses read.

A flow-matching model is trained at ``x_t = (1 - s) x0 + s noise`` to predict the velocity ``noise - x0``
(Esser et al., 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"; Lipman et al.,
2023). The job draws an integer timestep ``t`` in ``[0, num_train_timesteps)`` for every family; here it means
the noise level ``s = t / num_train_timesteps``, and the transformer is called with ``t`` itself, as diffusers'
samplers call it with ``s * num_train_timesteps``. So timesteps are drawn uniformly over the noise levels, as the
paper's SalUn draws them for a DDPM; SD3's own training drew them from a logit-normal density, a choice of
pre-training that an erasure of a few steps does not need to copy.
"""
from __future__ import annotations

import torch

FLOW_MATCHING = "flow_matching"  # the training target's name, beside diffusers' epsilon / v_prediction / sample


class _Config(dict):
    """A scheduler config's reading: ``config.x`` and ``config.get("x")``, as diffusers' configs are read."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class FlowMatchTraining:
    """``add_noise`` and the ``prediction_type`` of a flow-matching model's training (no DDPM ``alphas_cumprod``:
    a method that needs it refuses the family)."""

    def __init__(self, num_train_timesteps: int = 1000):
        self.config = _Config(prediction_type=FLOW_MATCHING, num_train_timesteps=int(num_train_timesteps))

    def sigma(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The noise level of each timestep, shaped to broadcast over ``like``."""
        s = t.to(device=like.device, dtype=torch.float32) / self.config.num_train_timesteps
        return s.view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.sigma(t, z0)
        return ((1 - s) * z0.float() + s * noise.float()).to(z0.dtype)
