"""Concept inversion (Pham et al., ICLR 2024): textual inversion through the erased model.

``k`` new token embeddings are learned, everything else frozen, with the ordinary denoising loss on
images of the concept, each captioned with its prompt where the learned tokens replace the concept's
word ("a red <c*>"). Then the learned tokens are put in the attacked prompts and drawn. The tokens
start from a neutral word's embedding (textual inversion's initializer word).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..diffusion.losses import training_target
from .text import encode_with_slots, slot_prompts


@dataclass
class InversionSettings:
    k: int = 1
    lr: float = 5e-3  # textual inversion's order (diffusers' example: 5e-4 scaled by batch x accumulation)
    batch_size: int = 5
    seed: int = 0


def placeholder(concept: str, k: int) -> str:
    """How the learned tokens are written in a reported prompt."""
    return " ".join(f"<{concept}*{i}>" if k > 1 else f"<{concept}*>" for i in range(k))


def concept_inversion(pipe, z0: torch.Tensor, parts: list[tuple[str, str]], init_word: str, budgets: list[int],
                      on_budget: Callable[[int, torch.Tensor], None],
                      settings: InversionSettings = InversionSettings()) -> torch.Tensor:
    """Learn ``settings.k`` embeddings on concept latents ``z0`` (scaled) whose captions are
    ``before <tokens> after`` (``parts[i]``); call ``on_budget(step, embeddings (k, D))`` at step 0 and at
    each budget. Returns the final embeddings."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    tok, te, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
    table = te.get_input_embeddings().weight.detach()
    init_ids = tok(init_word, add_special_tokens=False).input_ids
    init = table[init_ids].mean(0)
    learned = init.repeat(settings.k, 1).clone().requires_grad_(True)
    slots = slot_prompts(tok, parts, settings.k)
    opt = torch.optim.AdamW([learned], lr=settings.lr, weight_decay=0.0)
    unet.requires_grad_(False)
    te.requires_grad_(False)
    gen = torch.Generator().manual_seed(settings.seed)
    z0 = z0.to(unet.device, unet.dtype)
    n = len(parts)
    marks = sorted(set(budgets))
    on_budget(0, learned.detach().clone())
    for step in range(1, marks[-1] + 1):
        idx = torch.randperm(n, generator=gen)[:settings.batch_size]
        sub = type(slots)(slots.ids[idx], slots.positions[idx])
        cond = encode_with_slots(te, sub, learned.unsqueeze(0).expand(len(idx), -1, -1))
        noise = torch.randn(z0[idx].shape, generator=gen).to(z0)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen).to(z0.device)
        pred = unet(sched.add_noise(z0[idx], noise, t), t, encoder_hidden_states=cond).sample
        # the ordinary denoising loss, toward the model's own target (noise, or velocity on SD 2.x v models)
        loss = F.mse_loss(pred.float(), training_target(sched, z0[idx], noise, t).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in marks:
            on_budget(step, learned.detach().clone())
    return learned.detach()
