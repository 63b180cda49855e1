"""SalUn's saliency mask for text-to-image families: the gradient of the guided denoising loss on the forget
images under their prompts, summed at the base weights (``erase.core.mask`` keeps the top ``keep`` fraction).
One mask from all concepts or one per concept combined by union; ``salun mask`` computes one alone.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch

from ..core import distributed as dist
from ..core.atomic import output_lock
from ..core.errors import UserError
from ..core.mask import Mask, compute_mask, fingerprint
from ..core.workdir import check_work_dir, open_work_dir
from ..toy.vocabulary import warn_unknown_words
from .combine import parts
from .loading import native_size
from .latents import Encoded, TextBank, all_drawn, image_latents, noise_batch
from .losses import guided_forgetting_loss
from .options import EraseOptions, check_common
from .prepare import (accelerator_for, denoiser, family_of_pipe, load_for_job, native_resolution, selected_parameters,
                      target_key)
from .recipes import Recipe


def mask_for(pipe, recipe: Recipe, mean, std, captions, bank: TextBank, seed: int, accelerator=None,
             progress: bool = True, scope: str = "global", resolution: int | None = None) -> Mask:
    """SalUn's saliency mask: guided denoising MSE of the forget images under their prompts."""
    family = family_of_pipe(pipe)
    sched = family.training_scheduler(pipe)
    unet = family.denoiser_of(pipe)
    dev = unet.device
    gen = torch.Generator().manual_seed(seed + 7)
    eps = denoiser(family, unet)
    bs = recipe.batch_size
    order = list(range(len(captions)))
    batches = [order[i:i + bs] for i in range(0, len(order), bs)]

    def loss_fn(idx):
        z0, noise, t = noise_batch(mean, std, idx, pipe.vae.config.scaling_factor, sched, gen, dev, unet.dtype)
        cond = bank([captions[i] for i in idx])
        ctx = accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)
        with ctx:
            return guided_forgetting_loss(eps, sched, z0, cond, bank.null(len(idx)), t, noise, recipe.guidance_w)

    kind = sched.config.prediction_type
    meta = {"base_model": str(pipe.config.get("_name_or_path", "")),
            "loss": "guided noise MSE" if kind == "epsilon" else f"guided {kind} MSE",
            "family": family.name, "prediction_type": sched.config.prediction_type,
            "guidance_w": recipe.guidance_w, "prompts": sorted(set(captions)), "n_forget": len(captions),
            "resolution": resolution or native_resolution(pipe)}
    if dist.world() == 1:
        return compute_mask(unet, loss_fn, batches, selection=recipe.selection, keep=recipe.keep, scope=scope,
                            meta=meta, progress=progress, total=len(batches), presets=family.selection_presets())
    # Under several processes each takes every N-th batch; the noise of every batch is still drawn in
    # order (cheap), so each batch sees the noise it sees in one process, and the sums are added up.
    mine = set(dist.share(range(len(batches))))

    def my_loss(item):
        k, idx = item
        if k in mine:
            return loss_fn(idx)
        noise_batch(mean, std, idx, pipe.vae.config.scaling_factor, sched, gen, "cpu", torch.float32)
        return None

    meta["processes"] = dist.world()
    return compute_mask(unet, my_loss, list(enumerate(batches)), selection=recipe.selection, keep=recipe.keep,
                        scope=scope, meta=meta, progress=progress and dist.is_main(), total=len(batches),
                        reduce=dist.sum_gradients, presets=family.selection_presets())


def per_concept_mask(pipe, recipe: Recipe, mean, std, captions, bank: TextBank, seed: int, accelerator=None,
                     progress: bool = True, resolution: int | None = None) -> Mask:
    """One mask per concept (from its own forget images), combined by union; the metadata says how many
    weights each concept's mask holds and how much each pair of masks overlaps (shared / either)."""
    masks = {}
    for part in parts(recipe):
        own = set(part["forget_prompts"])
        idx = [i for i, c in enumerate(captions) if c in own]
        masks[part["concept"]] = mask_for(pipe, recipe, mean[idx], std[idx], [captions[i] for i in idx], bank, seed,
                                          accelerator, progress, resolution=resolution)
    first = next(iter(masks.values()))
    union = {n: torch.zeros_like(m) for n, m in first.masks.items()}
    for m in masks.values():
        for n in union:
            union[n] |= m.masks[n]
    names = list(masks)
    overlap = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = sum(int((masks[a].masks[n] & masks[b].masks[n]).sum()) for n in union)
            either = sum(int((masks[a].masks[n] | masks[b].masks[n]).sum()) for n in union)
            overlap[f"{a}|{b}"] = round(both / max(1, either), 4)
    meta = {**first.meta, "combined": "union of per-concept masks", "prompts": sorted(set(captions)),
            "n_forget": len(captions), "per_concept_kept": {k: m.kept for k, m in masks.items()},
            "overlap": overlap}
    return Mask(union, meta)


def make_mask(recipe: Recipe, out: Path, model: str | None = None, seed: int = 0, forget_data: Path | None = None,
              work_dir: Path | None = None, overwrite: bool = False, scope: str = "global",
              device: str | None = None, resolution: int | None = None, mixed_precision: str = "no",
              gradient_checkpointing: bool = False) -> Mask:
    """``salun mask``: compute and save the saliency mask alone (reusable by ``salun erase --mask``)."""
    from ..core.atomic import check_output
    from .pipeline import default_model

    out = Path(out)
    source = model or default_model()
    check_common(recipe, resolution, device)
    check_output(out, source, overwrite, kind="file")  # never inside the source model's folder
    check_work_dir(work_dir, out.with_name(out.stem), source)
    warn_unknown_words(str(source), native_size(str(source)), recipe.forget_prompts, f"the {recipe.name} recipe")
    accelerator = accelerator_for(mixed_precision, device)
    main = accelerator.is_main_process  # under several processes: the main one locks and writes
    with output_lock(out) if main else contextlib.nullcontext():
        pipe, res = load_for_job(model, accelerator, resolution)
        wd = open_work_dir(work_dir, out.with_name(out.stem), source, resume=False, restart=False, trains=False,
                           main_process=main)
        dist.barrier()
        try:
            opts = EraseOptions(recipe=recipe, out=out, model=model, seed=seed, forget_data=forget_data)
            with dist.main_first(all_drawn(opts, recipe)):
                mean, std, caps, _ = image_latents(pipe, recipe, opts, wd.path, "forget", res)
            bank = TextBank(family_of_pipe(pipe), pipe, caps, pipe.device, res)
            if gradient_checkpointing:
                family_of_pipe(pipe).denoiser_of(pipe).enable_gradient_checkpointing()
            mask = mask_for(pipe, recipe, mean, std, caps, bank, seed, accelerator, scope=scope, resolution=res,
                            progress=main)
            mask.meta["mixed_precision"] = mixed_precision
            if main:
                mask.save(out)
            dist.barrier()
        except UserError:
            if main:
                wd.abandon()
            raise
        if main:
            wd.finish()
    return mask


def mask_key(recipe: Recipe, seed: int, captions, data: str, resolution: int, mixed_precision: str,
              target: list = (), how: str = "global") -> str:
    """What shaped a mask: a cached mask is reused only if all of this is the same (the images' content
    hash covers other images under the same captions, the resolution and the VAE)."""
    what = [recipe.selection, recipe.keep, recipe.guidance_w, recipe.batch_size, seed, sorted(captions),
            len(captions), data, resolution, mixed_precision, how, *target]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def cached_mask(pipe, recipe: Recipe, opts: EraseOptions, forget: Encoded, forget_digest: str, bank: TextBank,
                work: Path, res: int, accelerator) -> Mask:
    """The job's mask: one made in this work folder from the same recipe, data and seed is reused, else it is
    computed (every process its share of the gradient sums, added up across them) and kept there."""
    cached = work / "mask.safetensors"
    key = mask_key(recipe, opts.seed, forget.captions, forget_digest, res, opts.mixed_precision, target_key(pipe),
                   "per-concept union" if opts.mask_per_concept else "global")
    # Only the main process judges the cache (the others' encodings of the images need not be bit-identical
    # on other devices) and says.
    reuse = False
    if accelerator.is_main_process and cached.exists():
        old = Mask.load(cached)
        reuse = (old.meta.get("recipe_key") == key and
                 old.meta.get("fingerprint") == fingerprint(selected_parameters(pipe, recipe.selection)))
    if dist.broadcast(reuse):
        return Mask.load(cached)
    make = per_concept_mask if opts.mask_per_concept else mask_for
    mask = make(pipe, recipe, forget.mean, forget.std, forget.captions, bank, opts.seed, accelerator, opts.progress,
                resolution=res)
    mask.meta["recipe_key"] = key
    mask.meta["mixed_precision"] = opts.mixed_precision
    if accelerator.is_main_process:
        mask.save(cached)
    dist.barrier()
    return mask
