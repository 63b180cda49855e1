"""The flow-matching training schedule (rectified flow: SD3, FLUX), in the shape the erase job's losses read.

A flow-matching model is trained at ``x_t = (1 - s) x0 + s noise`` to predict the velocity ``noise - x0``
(Esser et al., 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"; Lipman et al.,
2023). The job draws an integer timestep ``t`` in ``[0, num_train_timesteps)`` for every family; here it means
the noise level ``s = t / num_train_timesteps``, and the transformer is called with ``t`` itself, as diffusers'
samplers call it with ``s * num_train_timesteps``.

Which timesteps an erasure trains at (``--timestep-density``, a recipe setting):
- ``uniform`` (the default): every integer timestep equally often, as the SalUn paper draws them for a DDPM;
- ``logit-normal``: SD3's training density (Esser et al., 2024, section 3.1: ``s = sigmoid(u)``, ``u ~ N(0, 1)``,
  which puts the training at the middle noise levels), through the scheduler's ``shift`` as diffusers'
  ``train_dreambooth_sd3.py`` applies it (``sigma = shift s / (1 + (shift - 1) s)``; 3.0 for SD3 medium, 1.0 for
  the toy SD3; a scheduler with dynamic shifting, as FLUX's, trains unshifted). The timestep is then
  ``floor(sigma * num_train_timesteps)``, so the transformer sees the noise level it is trained at.
A window ``[lo, hi)`` (``--forget-t-max``) truncates the density to it: the draw is the inverse of the density's
distribution function at a uniform point of the window's share, one uniform number per timestep.
"""
from __future__ import annotations

import torch

from ..defaults import TIMESTEP_DENSITIES

FLOW_MATCHING = "flow_matching"  # the training target's name, beside diffusers' epsilon / v_prediction / sample
DENSITIES = TIMESTEP_DENSITIES  # --timestep-density


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

    def __init__(self, num_train_timesteps: int = 1000, density: str = "uniform", shift: float = 1.0):
        if density not in DENSITIES:
            raise ValueError(f"unknown timestep density {density!r}: {', '.join(DENSITIES)}")
        self.config = _Config(prediction_type=FLOW_MATCHING, num_train_timesteps=int(num_train_timesteps))
        self.density, self.shift = density, float(shift)

    def _to_sigma(self, s: torch.Tensor) -> torch.Tensor:
        return self.shift * s / (1 + (self.shift - 1) * s)

    def _from_sigma(self, sigma: float) -> float:
        return sigma / (self.shift - (self.shift - 1) * sigma)

    def draw(self, n: int, gen: torch.Generator, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """``n`` integer timesteps in ``[lo, hi)`` from the density (``uniform``: ``torch.randint``'s draws, as
        every family's; ``logit-normal``: SD3's, shifted, truncated to the window)."""
        hi = self.config.num_train_timesteps if hi is None else hi
        if self.density == "uniform":
            return torch.randint(lo, hi, (n,), generator=gen)
        big_n = self.config.num_train_timesteps
        # the window's bounds as points of the logit-normal's distribution function Phi(logit(s))
        edge = torch.tensor([self._from_sigma(lo / big_n), self._from_sigma(hi / big_n)], dtype=torch.float64)
        cdf = torch.special.ndtr(torch.logit(edge))  # logit(0) = -inf, logit(1) = inf: 0 and 1
        u = cdf[0] + (cdf[1] - cdf[0]) * torch.rand(n, generator=gen, dtype=torch.float64)
        sigma = self._to_sigma(torch.sigmoid(torch.special.ndtri(u)))
        return (sigma * big_n).floor().long().clamp(lo, hi - 1)

    def sigma(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The noise level of each timestep, shaped to broadcast over ``like``."""
        s = t.to(device=like.device, dtype=torch.float32) / self.config.num_train_timesteps
        return s.view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.sigma(t, z0)
        return ((1 - s) * z0.float() + s * noise.float()).to(z0.dtype)
