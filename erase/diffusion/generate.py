"""Prompts -> images with a diffusers pipeline, seeded per image, and image grids."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm


@torch.no_grad()
def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: int = 25, guidance: float = 5.0,
             batch_size: int = 64, height: int | None = None, width: int | None = None,
             negative_prompt: str | None = None, progress: bool = True) -> torch.Tensor:
    """Generate one image per (prompt, seed); returns float images (N, 3, H, W) in [-1, 1].

    Each image has its own generator, so an image depends only on its prompt and seed, not on the
    batch it was drawn in: audits and before/after grids stay comparable across models.
    """
    if len(prompts) != len(seeds):
        raise ValueError("give one seed per prompt")
    if not prompts:
        raise ValueError("no prompts to generate")
    from ..core import distributed as dist

    device = pipe.device
    out = []
    starts = list(range(0, len(prompts), batch_size))
    shared = dist.sharding()  # an audit run by several processes: each draws every N-th batch
    mine = dist.share(starts) if shared else starts
    bar = tqdm(total=len(prompts), desc="generating", disable=not progress or not dist.is_main(),
               dynamic_ncols=True)
    t0 = time.perf_counter()
    for k, i in enumerate(mine):
        if k == 1 and progress and dist.is_main():
            warn_if_long(time.perf_counter() - t0, len(mine) - 1, "drawing these images")
        p = list(prompts[i:i + batch_size])
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        # Draw the initial latents on the CPU so results do not depend on the device.
        latents = initial_latents(pipe, gens, height, width).to(device)
        neg = [negative_prompt] * len(p) if negative_prompt is not None else None
        img = pipe(prompt=p, negative_prompt=neg, num_inference_steps=steps, guidance_scale=guidance,
                   latents=latents, height=height, width=width, output_type="pt").images
        out.append(img.float().cpu() * 2 - 1)
        bar.update(len(p) * (dist.world() if shared else 1))
    bar.close()
    if shared:  # the batches come back in their one-process order (a batch is drawn as one process draws it)
        out = dist.gather(out)
    return torch.cat(out)


def warn_if_long(first: float, left: int, what: str, limit_s: float = 3600.0) -> None:
    """One warning line when ``left`` more units of ``first`` seconds each would run past ``limit_s``: unbounded
    work (a mistyped count) is said while it can still be stopped, with the expected time."""
    total = first * left
    if total > limit_s:
        print(f"salun: warning: {what} will take about {total / 3600:,.1f} more hours at this pace ({first:.2g} s "
              "per batch); press Ctrl-C and ask for less if that is not what you meant", file=sys.stderr, flush=True)


def initial_latents(pipe, gens, height, width) -> torch.Tensor:
    """One latent of noise per generator, shaped for the family's denoiser (a UNet or a transformer) and laid out
    as its pipeline takes ``latents`` (FLUX: packed)."""
    from .prepare import family_of_pipe

    family = family_of_pipe(pipe)
    denoiser = family.denoiser_of(pipe)
    vs = pipe.vae_scale_factor
    size = denoiser.config.get("sample_size")
    side = size * vs if size else family.native_resolution(pipe)  # FLUX's transformer does not say its size
    h, w = (height or side) // vs, (width or side) // vs
    layout = getattr(family, "pipeline_latents", None)
    if layout is not None:  # packed 2x2 (FLUX): its pipeline rounds the latent side down to even, as here
        h, w = h - h % 2, w - w % 2
    channels = family.latent_channels(pipe) if hasattr(family, "latent_channels") else denoiser.config.in_channels
    z = torch.stack([torch.randn((channels, h, w), generator=g) for g in gens]).to(denoiser.dtype)
    return layout(pipe, z) if layout is not None else z


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Float images in [-1, 1] -> PIL, rounding to uint8 [0, 255] the right way."""
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def grid(images: Sequence[Image.Image], cols: int | None = None, scale: int = 1,
         row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None) -> Image.Image:
    """Tile images into a grid, optionally enlarged (nearest neighbour) and labelled."""
    if not images:
        raise ValueError("no images for the grid")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].width * scale, images[0].height * scale
    left = 8 + 7 * max((len(s) for s in row_labels), default=0) if row_labels else 0
    top = 16 if col_labels else 0
    canvas = Image.new("RGB", (left + cols * w, top + rows * h), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas.paste(im.resize((w, h), Image.NEAREST), (left + c * w, top + r * h))
    for r, label in enumerate(row_labels or []):
        d.text((4, top + r * h + h // 2 - 5), label, fill=(0, 0, 0))
    for c, label in enumerate(col_labels or []):
        d.text((left + c * w + 2, 2), label, fill=(0, 0, 0))
    return canvas


def save_images(images: torch.Tensor, out_dir: str | Path, names: Sequence[str]) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for im, name in zip(to_pil(images), names):
        p = out_dir / name
        im.save(p)
        paths.append(p)
    return paths


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
