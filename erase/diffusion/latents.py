"""The images an erasure learns from, as the denoiser sees them: forget and retain images (drawn by the base
model, or read from a folder or a ``datasets`` dataset) encoded once by the VAE; the conditions of every prompt
used (``TextBank``); and each step's noisy batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ..core.mask import fingerprint
from .combine import parts
from .family import Family
from .options import EraseOptions
from .prepare import family_of_pipe
from . import data as D
from .recipes import Recipe


class Encoded(NamedTuple):
    """A set of images as the VAE encodes them (each latent's mean and std), their captions, and where they
    came from (for the model card and recipe.json)."""
    mean: torch.Tensor
    std: torch.Tensor
    captions: list[str]
    source: str


def image_latents(pipe, recipe: Recipe, opts: EraseOptions, work: Path, kind: str, res: int) -> Encoded:
    """The forget or retain images, drawn or loaded, then VAE-encoded."""
    prompts = recipe.forget_prompts if kind == "forget" else recipe.retain_prompts
    folder = opts.forget_data if kind == "forget" else opts.retain_data
    spec = recipe.forget_dataset if kind == "forget" else recipe.retain_dataset
    n = recipe.n_forget if kind == "forget" else recipe.n_retain
    if folder is not None:
        caption = prompts[0] if len(prompts) == 1 else None
        imgs = D.load_image_folder(folder, caption=caption)
        source = f"the local folder {folder}"
    elif spec is not None:
        imgs = D.load_hub_dataset(spec)
        source = f"the dataset {spec['path']}" + (f" ({spec['name']})" if spec.get("name") else "")
    else:
        # Several concepts: each concept's own images (its prompts, its n_forget), drawn as a run of that
        # concept alone would draw them (the same cache folder), then put together.
        groups = ([(p["forget_prompts"], p["n_forget"]) for p in parts(recipe)] if kind == "forget"
                  else [(prompts, n)])
        fingerprint_ = fingerprint(dict(family_of_pipe(pipe).denoiser_of(pipe).named_parameters()))
        seed = opts.seed + (0 if kind == "forget" else 10**6)
        imgs = D.Captioned([], [])
        for group_prompts, group_n in groups:
            stamp = {"model": fingerprint_, "prompts": group_prompts, "n": group_n, "seed": seed,
                     "steps": recipe.gen_steps, "guidance": recipe.gen_guidance, "resolution": res}
            out = D.generated_folder(work / "data", kind, stamp)
            part = D.generate_image_folder(pipe, group_prompts, group_n, out, seed=seed, steps=recipe.gen_steps,
                                           guidance=recipe.gen_guidance, height=res, width=res, stamp=stamp,
                                           shard=all_drawn(opts, recipe), progress=opts.progress)
            imgs = D.Captioned(imgs.images + part.images, imgs.captions + part.captions)
        n_max = max(g[1] for g in groups)
        source = (f"drawn by the base model ({recipe.gen_steps} steps, guidance {recipe.gen_guidance}, seeds "
                  f"{seed}..{seed + n_max - 1}" + (f", per concept: {len(groups)} concepts" if len(groups) > 1
                                                   else "") + ")")
    mean, std = D.encode_images(pipe.vae, imgs, res, desc=f"encoding {kind}", progress=opts.progress)
    return Encoded(mean, std, imgs.captions, source)


def all_drawn(opts: EraseOptions, recipe: Recipe) -> bool:
    """Every image is drawn by the model: then several processes share the drawing (a folder or a dataset
    is read by the main process first, the others after it)."""
    return (opts.forget_data is None and opts.retain_data is None and recipe.forget_dataset is None
            and recipe.retain_dataset is None)


def no_images(pipe, recipe: Recipe, res: int, method) -> Encoded:
    """For a method that samples its own x_t (ESD): the forget prompts, one per would-be image, and zero
    latents that only give the batches their shape."""
    n = recipe.n_forget
    caps = [recipe.forget_prompts[i % len(recipe.forget_prompts)] for i in range(n)]
    side = res // pipe.vae_scale_factor
    family = family_of_pipe(pipe)
    channels = family.latent_channels(pipe) if hasattr(family, "latent_channels") else \
        family.denoiser_of(pipe).config.in_channels
    zeros = torch.zeros(n, channels, side, side)
    return Encoded(zeros, zeros, caps, f"none: {method.name} samples x_t with the model being trained")


class TextBank:
    """The denoiser's conditions for every prompt used, computed once by the family (text encoders stay
    frozen); ``bank(prompts)`` gives them for a batch, as the dict ``family.denoise`` takes."""

    def __init__(self, family: Family, pipe, prompts, device, resolution: int):
        unique = sorted(set(prompts) | {""})
        self.index = {p: i for i, p in enumerate(unique)}
        self.parts = {k: v.to(device) for k, v in family.encode_prompts(pipe, unique, resolution).items()}
        # classifier-free guidance's null condition, as the family samples with it (SDXL: zeros)
        self._null = family.null_condition(pipe, self([""]))

    def __call__(self, prompts) -> dict[str, torch.Tensor]:
        rows = [self.index[p] for p in prompts]
        return {k: v[rows] for k, v in self.parts.items()}

    def null(self, n: int) -> dict[str, torch.Tensor]:
        return {k: v.expand(n, *v.shape[1:]) for k, v in self._null.items()}


def latent_scaling(pipe) -> tuple[float, float]:
    """``(scaling_factor, shift_factor)`` of the pipeline's VAE: a clean latent is ``(sample - shift) * scaling``
    (SD3's and FLUX's VAEs shift; SD's and SDXL's do not)."""
    cfg = pipe.vae.config
    return cfg.scaling_factor, cfg.get("shift_factor") or 0.0


def noise_batch(mean, std, idx, scaling: tuple[float, float], sched, gen, device, dtype,
                t_range: tuple[int, int] | None = None):
    """Clean latents drawn from the encoded images' distributions (``scaling``: ``latent_scaling``'s), their noise
    and timesteps (``t_range``: the half-open window ``[lo, hi)`` they come from; the whole schedule by default,
    with the same random draws)."""
    scale, shift = scaling
    sample = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
    z0 = (sample - shift if shift else sample) * scale
    noise = torch.randn(z0.shape, generator=gen)
    lo, hi = t_range or (0, sched.config.num_train_timesteps)
    # a flow-matching schedule draws from its --timestep-density (uniform: these very randint draws)
    t = sched.draw(len(idx), gen, lo, hi) if hasattr(sched, "draw") else torch.randint(lo, hi, (len(idx),), generator=gen)
    return z0.to(device, dtype), noise.to(device, dtype), t.to(device)
