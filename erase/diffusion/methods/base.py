"""The erasure-method interface: what one training step of a method computes.

The job draws the batches (clean samples, noise, timesteps and conditions, the same random streams for
every method), and a method turns them into losses. ``uses_mask`` says whether the method trains the
weights of SalUn's saliency mask or every selected weight. A method is one module in this package and
one line in ``METHODS`` (``__init__.py``), as in ``erase/classify/methods/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """Clean samples ``z0`` (latents or pixels), the noise and timesteps drawn for them, their conditions,
    and (forget batches) the conditions of the misaligned prompts or classes."""
    z0: "torch.Tensor"
    noise: "torch.Tensor"
    t: "torch.Tensor"
    cond: dict
    misaligned: dict | None = None


class Method(Protocol):
    name: str
    title: str  # for people and model cards
    uses_mask: bool

    def losses(self, eps: Callable, scheduler, forget: Batch, retain: Batch | None, alpha: float
               ) -> dict[str, "torch.Tensor"]:
        """``{"loss": the total to minimise, "forget": ..., "retain": ...}`` for one step."""
