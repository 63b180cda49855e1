"""What every toy-world training loop shares: seeding, the learning-rate schedule, the VAE's latents and the
EMA of the weights sampling uses (the UNet builds in ``build.py``, the SD3 transformer's in ``build_sd3.py``,
the DDPM's in ``erase/diffusion/ddpm/train.py``)."""
from __future__ import annotations

import copy
import math

import torch


def seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))


@torch.no_grad()
def encode_latents(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(x), 512):
        d = vae.encode(x[i:i + 512]).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


class EMA:
    """Exponential moving average of a module's parameters (sampling uses the average)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm up: early weights are not worth keeping
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach(), 1 - d)
