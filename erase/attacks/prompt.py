"""Adversarial prefix tokens: UnlearnDiff's and P4D's objectives, optimised in embedding space and
projected to real tokens as PEZ does (Wen et al., 2023).

Each attacked item (a prompt and a seed) gets its own prefix of ``n_tokens`` tokens; all items are
optimised together in one batch (Adam is per coordinate, so this is the same as one run per item).
Every step: project each soft token to its nearest real token (cosine), run the prompt through the
model with the projected tokens, and apply the gradient to the soft tokens (straight-through). The
prompt at a budget is the projection after that many steps: real words a user can type.

- ``unlearndiff``: the erased model's denoising error on the item's concept image (drawn by the base
  model for that prompt and seed) under ``prefix + prompt``: the diffusion model is its own classifier.
- ``p4d``: the erased model's noise prediction under ``prefix + prompt`` matches the base model's under
  the plain prompt, at the same noisy concept image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..diffusion.losses import training_target
from .text import candidate_tokens, encode_prompts, encode_with_slots, prefix_text, project, slot_prompts

OBJECTIVES = ("unlearndiff", "p4d")


@dataclass
class PrefixSettings:
    n_tokens: int = 5
    lr: float = 0.03  # the audit's default (see ``AttackSettings.lr``); UnlearnDiff's own is 0.01
    weight_decay: float = 0.1  # PEZ's and UnlearnDiff's AdamW
    seed: int = 0


def _noised(scheduler, z0: torch.Tensor, gen: torch.Generator):
    noise = torch.randn(z0.shape, generator=gen).to(z0)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (z0.shape[0],), generator=gen).to(z0.device)
    return scheduler.add_noise(z0, noise, t), noise, t


def prefix_attack(pipe, prompts: list[str], z0: torch.Tensor, objective: str, budgets: list[int],
                  on_budget: Callable[[int, list[str]], None], settings: PrefixSettings = PrefixSettings(),
                  base_pipe=None) -> None:
    """Optimise one prefix per item (``prompts[i]``, concept latents ``z0[i]``, scaled) for ``max(budgets)``
    steps; at step 0 and at each budget, call ``on_budget(step, adversarial prompts)``.

    ``base_pipe``: the base model, whose predictions under the plain prompts are P4D's target.
    """
    from diffusers import DDPMScheduler

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}")
    if objective == "p4d" and base_pipe is None:
        raise ValueError("P4D needs the base model")
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    tok, te, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
    table = te.get_input_embeddings().weight.detach()
    cands = candidate_tokens(tok)
    gen = torch.Generator().manual_seed(settings.seed)
    n = len(prompts)
    start = cands[torch.randint(0, len(cands), (n, settings.n_tokens), generator=gen)]
    soft = table[start].clone().requires_grad_(True)
    slots = slot_prompts(tok, [("", p) for p in prompts], settings.n_tokens)
    opt = torch.optim.AdamW([soft], lr=settings.lr, weight_decay=settings.weight_decay)
    target_cond = None
    if objective == "p4d":
        with torch.no_grad():
            target_cond = encode_prompts(base_pipe, prompts)
    unet.requires_grad_(False)
    te.requires_grad_(False)
    z0 = z0.to(unet.device, unet.dtype)

    def texts() -> list[str]:
        ids = project(soft, table, cands)
        return [f"{prefix_text(tok, row)} {p}" for row, p in zip(ids, prompts)]

    marks = sorted(set(budgets))
    on_budget(0, texts())
    for step in range(1, marks[-1] + 1):
        hard = table[project(soft, table, cands)]
        x = soft + (hard - soft).detach()  # the projected tokens forward, the gradient to the soft ones
        cond = encode_with_slots(te, slots, x)
        zt, noise, t = _noised(sched, z0, gen)
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        if objective == "unlearndiff":
            target = training_target(sched, z0, noise, t)  # the noise, or the velocity on v-prediction models
        else:
            with torch.no_grad():
                target = base_pipe.unet(zt, t, encoder_hidden_states=target_cond).sample
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in marks:
            on_budget(step, texts())
