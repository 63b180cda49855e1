"""RL ("random label") for diffusion: SalUn's loss on every selected weight, no mask (Fan et al., 2024,
the unmasked ablation the paper reports as RL).

At the same ``z_t`` and ``t``, the output under the forget prompt is pulled toward the frozen output
under a misaligned prompt (or class); ``alpha`` times the ordinary denoising loss on retain images keeps
the rest of the model.

``--forget-t-max T`` (0, every step of the schedule, by default) draws the forget batch's timesteps below ``T``
only (the ``--distill`` term, at the same ``z_t``, shares them): ANT's
observation (Li et al., 2025) that the early, high-noise steps form an image's structure, which an erasure need
not touch. ``--distill B`` (0, the paper's loss, by default) adds ``B ||e(z_t | c_p) - e0(z_t | c_p)||^2``: at the forget
batch's own ``z_t``, the outputs under the recipe's preserve prompts ``c_p`` (one drawn per image) are held to
a frozen copy of the base's. It needs no images, and it ties every prompt but the erased one to what the base
did exactly where the forget term moves the weights.
"""
from __future__ import annotations

from .base import Batch, Context, Option, Term, TrainedMethod, total_of


class RandomLabel(TrainedMethod):
    name = "rl"
    title = "RL (random label, every selected weight)"
    uses_mask = False
    accepts_mask = False
    salun_loss = True
    options = {
        "distill": Option(0.0, float, "SalUn/RL: weight of holding the outputs under the recipe's preserve prompts "
                                      "to the frozen base's, at the forget batch's noisy latents (0: the paper's "
                                      "loss)", low=0),
        "forget-t-max": Option(0, int, "SalUn/RL: the forget batches' timesteps are drawn below this one only, "
                                       "leaving the early, structure-forming steps alone (0: every step of the "
                                       "model's schedule, the paper's)", low=0),
    }
    distill = 0.0
    frozen = None

    def needs_frozen_for(self, options: dict) -> bool:
        return options.get("distill", 0.0) > 0

    def uses_preserve(self, options: dict) -> bool:
        return options.get("distill", 0.0) > 0

    def forget_timesteps(self, options: dict, n_train: int) -> tuple[int, int]:
        t_max = options.get("forget-t-max", 0)
        if not t_max:
            return 0, n_train
        if t_max > n_train:
            from ...core.errors import UserError

            raise UserError(f"--forget-t-max {t_max}: this model's noise schedule has {n_train} timesteps; give at "
                            f"most {n_train}")
        return 0, t_max

    def bind(self, ctx: Context) -> "RandomLabel":
        bound = type(self)()
        bound.distill = ctx.options.get("distill", 0.0)
        bound.frozen = ctx.frozen
        return bound

    def terms(self, eps, scheduler, forget: Batch, retain: Batch | None, alpha: float) -> list[Term]:
        """The forget term, ``alpha`` times the retain term and ``distill`` times the preserve term: each its own
        forward pass, so the loop backpropagates them one at a time."""
        import torch
        import torch.nn.functional as F

        from ..losses import denoising_loss, misaligned_loss, noisy

        out = [Term("forget", 1.0, lambda: misaligned_loss(eps, scheduler, forget.z0, forget.cond, forget.misaligned,
                                                           forget.t, forget.noise))]
        if retain is not None:
            out.append(Term("retain", alpha, lambda: denoising_loss(eps, scheduler, retain.z0, retain.cond, retain.t,
                                                                    retain.noise)))
        if self.distill > 0:
            def preserve() -> torch.Tensor:
                zt = noisy(scheduler, forget.z0, forget.noise, forget.t)
                with torch.no_grad():
                    target = self.frozen(zt, forget.t, forget.preserve)
                return F.mse_loss(eps(zt, forget.t, forget.preserve).float(), target.float())
            out.append(Term("preserve", self.distill, preserve))
        return out

    def losses(self, eps, scheduler, forget: Batch, retain: Batch | None, alpha: float) -> dict:
        return total_of(self.terms(eps, scheduler, forget, retain, alpha))
