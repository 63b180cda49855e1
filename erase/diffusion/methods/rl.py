"""RL ("random label") for diffusion: SalUn's loss on every selected weight, no mask (Fan et al., 2024,
the unmasked ablation the paper reports as RL).

At the same ``z_t`` and ``t``, the output under the forget prompt is pulled toward the frozen output
under a misaligned prompt (or class); ``alpha`` times the ordinary denoising loss on retain images keeps
the rest of the model.
"""
from __future__ import annotations

from .base import Batch, TrainedMethod


class RandomLabel(TrainedMethod):
    name = "rl"
    title = "RL (random label, every selected weight)"
    uses_mask = False
    accepts_mask = False
    salun_loss = True

    def losses(self, eps, scheduler, forget: Batch, retain: Batch | None, alpha: float) -> dict:
        import torch

        from ..losses import denoising_loss, misaligned_loss

        l_forget = misaligned_loss(eps, scheduler, forget.z0, forget.cond, forget.misaligned, forget.t, forget.noise)
        l_retain = torch.zeros(())
        loss = l_forget
        if retain is not None:
            l_retain = denoising_loss(eps, scheduler, retain.z0, retain.cond, retain.t, retain.noise)
            loss = loss + alpha * l_retain
        return {"loss": loss, "forget": l_forget, "retain": l_retain}
