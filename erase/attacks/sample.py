"""Draw images from prompt embeddings (a learned token has no text), seeded per image like ``generate``."""
from __future__ import annotations

from typing import Sequence

import torch

from ..diffusion.generate import initial_latents


@torch.no_grad()
def generate_from_embeddings(pipe, cond: torch.Tensor, seeds: Sequence[int], steps: int, guidance: float,
                             batch_size: int = 64) -> torch.Tensor:
    """One image per row of ``cond`` (N, L, D) and seed; images (N, 3, H, W) in [-1, 1]. The negative
    prompt is the empty prompt, as ``generate`` draws."""
    from .text import encode_prompts

    if len(cond) != len(seeds):
        raise ValueError("give one seed per prompt")
    uncond = encode_prompts(pipe, [""])
    out = []
    for i in range(0, len(seeds), batch_size):
        c = cond[i:i + batch_size].to(pipe.device, pipe.text_encoder.dtype)
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        latents = initial_latents(pipe, gens, None, None).to(pipe.device)
        img = pipe(prompt_embeds=c, negative_prompt_embeds=uncond.expand(len(c), -1, -1), num_inference_steps=steps,
                   guidance_scale=guidance, latents=latents, output_type="pt").images
        out.append(img.float().cpu() * 2 - 1)
    return torch.cat(out)
