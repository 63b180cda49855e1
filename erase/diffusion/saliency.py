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
from .family import check_timestep_density, recipe_for
from .loading import native_size
from .latents import Encoded, TextBank, all_drawn, image_latents, latent_scaling, noise_batch
from .losses import denoising_loss, each_under, guided_forgetting_terms
from .options import EraseOptions, check_common
from .prepare import (accelerator_for, denoiser, family_of_pipe, load_for_job,
                      native_resolution, selected_parameters, target_key, training_scheduler)
from .recipes import Recipe


def mask_for(pipe, recipe: Recipe, mean, std, captions, bank: TextBank, seed: int, accelerator=None,
             progress: bool = True, scope: str = "global", resolution: int | None = None,
             retain: Encoded | None = None) -> Mask:
    """SalUn's saliency mask: guided denoising MSE of the forget images under their prompts. With the recipe's
    ``mask_contrast`` > 0, ``retain`` (the retain images) gives the plain denoising loss's saliency, which
    ranks the weights the retained images need lower (``erase.core.mask.contrast_scores``)."""
    family = family_of_pipe(pipe)
    sched = training_scheduler(family, pipe, recipe.timestep_density)
    unet = family.denoiser_of(pipe)
    dev = unet.device
    scale = latent_scaling(pipe)
    eps = denoiser(family, unet)
    bs = recipe.batch_size
    # a guidance-distilled family (FLUX) samples with no classifier-free guidance: its mask's loss is the plain one
    w = 0.0 if getattr(family, "guidance_distilled", False) else recipe.guidance_w

    def ctx():
        return accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)

    def in_batches(n):
        order = list(range(n))
        return [order[i:i + bs] for i in range(0, n, bs)]

    gen = torch.Generator().manual_seed(seed + 7)

    def loss_fn(idx):
        z0, noise, t = noise_batch(mean, std, idx, scale, sched, gen, dev, unet.dtype)
        cond = bank([captions[i] for i in idx])
        return each_under(ctx, guided_forgetting_terms(eps, sched, z0, cond, bank.null(len(idx)), t, noise, w))

    contrast = recipe.mask_contrast
    if contrast > 0 and retain is None:
        raise UserError(f"--mask-contrast {contrast:g} needs the retain images: give retain prompts or data")
    retain_gen = torch.Generator().manual_seed(seed + 8)  # its own stream: the forget batches see the paper's noise

    def retain_fn(idx):
        z0, noise, t = noise_batch(retain.mean, retain.std, idx, scale, sched, retain_gen, dev, unet.dtype)
        with ctx():
            return denoising_loss(eps, sched, z0, bank([retain.captions[i] for i in idx]), t, noise)

    kind = sched.config.prediction_type
    meta = {"base_model": str(pipe.config.get("_name_or_path", "")),
            "loss": ("guided " if w else "") + ("noise MSE" if kind == "epsilon" else f"{kind} MSE"),
            "family": family.name, "prediction_type": sched.config.prediction_type,
            "guidance_w": w, "prompts": sorted(set(captions)), "n_forget": len(captions),
            "resolution": resolution or native_resolution(pipe)}
    if recipe.timestep_density != "uniform":
        meta["timestep_density"] = recipe.timestep_density
    if contrast > 0:
        meta.update({"retain_prompts": sorted(set(retain.captions)), "n_retain": len(retain.captions)})
    forget_batches = in_batches(len(captions))
    retain_batches = in_batches(len(retain.captions)) if contrast > 0 else []
    common = dict(selection=recipe.selection, keep=recipe.keep, scope=scope, meta=meta,
                  presets=family.selection_presets(), contrast=contrast)
    if dist.world() == 1:
        return compute_mask(unet, loss_fn, forget_batches, progress=progress, total=len(forget_batches),
                            spare=(retain_fn, retain_batches, len(retain_batches)) if contrast > 0 else None,
                            **common)
    # Under several processes each takes every N-th batch; the noise of every batch is still drawn in
    # order (cheap), so each batch sees the noise it sees in one process, and the sums are added up.
    def sharded(fn, batches, draw):
        mine = set(dist.share(range(len(batches))))

        def my_loss(item):
            k, idx = item
            if k in mine:
                return fn(idx)
            draw(idx)
            return None
        return my_loss, list(enumerate(batches)), len(batches)

    meta["processes"] = dist.world()
    spare = None
    if contrast > 0:
        spare = sharded(retain_fn, retain_batches, lambda idx: noise_batch(retain.mean, retain.std, idx, scale, sched,
                                                                           retain_gen, "cpu", torch.float32))
    mine_fn, items, total = sharded(loss_fn, forget_batches,
                                    lambda idx: noise_batch(mean, std, idx, scale, sched, gen, "cpu", torch.float32))
    return compute_mask(unet, mine_fn, items, progress=progress and dist.is_main(), total=total,
                        reduce=dist.sum_gradients, spare=spare, **common)


def per_concept_mask(pipe, recipe: Recipe, mean, std, captions, bank: TextBank, seed: int, accelerator=None,
                     progress: bool = True, resolution: int | None = None, retain: Encoded | None = None) -> Mask:
    """One mask per concept (from its own forget images), combined by union; the metadata says how many
    weights each concept's mask holds and how much each pair of masks overlaps (shared / either)."""
    masks = {}
    for part in parts(recipe):
        own = set(part["forget_prompts"])
        idx = [i for i, c in enumerate(captions) if c in own]
        masks[part["concept"]] = mask_for(pipe, recipe, mean[idx], std[idx], [captions[i] for i in idx], bank, seed,
                                          accelerator, progress, resolution=resolution, retain=retain)
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
        recipe = recipe_for(family_of_pipe(pipe), recipe)
        check_timestep_density(family_of_pipe(pipe), recipe.timestep_density)  # before anything is drawn
        widened = None
        if recipe.mask_contrast > 0:  # the retain images a contrastive mask spares, widened as `salun erase` does
            from .neighbours import choose

            recipe, widened = choose(recipe, family_of_pipe(pipe), pipe, res)
        wd = open_work_dir(work_dir, out.with_name(out.stem), source, resume=False, restart=False, trains=False,
                           main_process=main)
        dist.barrier()
        try:
            opts = EraseOptions(recipe=recipe, out=out, model=model, seed=seed, forget_data=forget_data)
            with dist.main_first(all_drawn(opts, recipe)):
                mean, std, caps, _ = image_latents(pipe, recipe, opts, wd.path, "forget", res)
                retain = (image_latents(pipe, recipe, opts, wd.path, "retain", res) if recipe.mask_contrast > 0
                          else None)
            bank = TextBank(family_of_pipe(pipe), pipe, caps + (retain.captions if retain else []), pipe.device, res)
            if gradient_checkpointing:
                family_of_pipe(pipe).denoiser_of(pipe).enable_gradient_checkpointing()
            mask = mask_for(pipe, recipe, mean, std, caps, bank, seed, accelerator, scope=scope, resolution=res,
                            progress=main, retain=retain)
            mask.meta["mixed_precision"] = mixed_precision
            if widened:  # what neighbours kept by name added (retain_prompts lists each prompt once)
                mask.meta["retain_neighbours"] = widened
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
              target: list = (), how: str = "global", weights_dtype: str = "fp32") -> str:
    """What shaped a mask: a cached mask is reused only if all of this is the same (the images' content
    hash covers other images under the same captions, the resolution and the VAE)."""
    what = [recipe.selection, recipe.keep, recipe.guidance_w, recipe.batch_size, seed, sorted(captions),
            len(captions), data, resolution, mixed_precision, how, *target]
    if recipe.mask_contrast > 0:  # (keys of the paper's masks stay as they were: their caches stay valid)
        what.append(["contrast", recipe.mask_contrast])
    if weights_dtype != "fp32":  # the gradient taken at bf16 weights is another mask (fp32 keys unchanged)
        what.append(["weights", weights_dtype])
    if recipe.timestep_density != "uniform":  # (uniform keys unchanged)
        what.append(["timesteps", recipe.timestep_density])
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def reusable(path: Path, key: str, params: dict, accelerator) -> bool:
    """Whether the mask kept at ``path`` was made under ``key`` (what shaped it) from these very weights. Only
    the main process judges (the others' encodings of the images need not be bit-identical on other devices)
    and says, to every process."""
    reuse = False
    if accelerator.is_main_process and path.exists():
        old = Mask.load(path)
        reuse = old.meta.get("recipe_key") == key and old.meta.get("fingerprint") == fingerprint(params)
    return dist.broadcast(reuse)


def cached_mask(pipe, recipe: Recipe, opts: EraseOptions, forget: Encoded, forget_digest: str, bank: TextBank,
                work: Path, res: int, accelerator, retain: Encoded | None = None, retain_digest: str = "") -> Mask:
    """The job's mask: one made in this work folder from the same recipe, data and seed is reused, else it is
    computed (every process its share of the gradient sums, added up across them) and kept there. ``retain``:
    the retain images, which a contrastive mask (``mask_contrast`` > 0) spares."""
    cached = work / "mask.safetensors"
    data = forget_digest
    if recipe.mask_contrast > 0:  # the retain images' content and their captions (the retain loss's conditions)
        data += "-" + retain_digest + "-" + hashlib.sha256(json.dumps(sorted(retain.captions)).encode()).hexdigest()[:8]
    key = mask_key(recipe, opts.seed, forget.captions, data, res, opts.mixed_precision, target_key(pipe),
                   "per-concept union" if opts.mask_per_concept else "global", opts.weights_dtype)
    if reusable(cached, key, selected_parameters(pipe, recipe.selection), accelerator):
        return Mask.load(cached)
    make = per_concept_mask if opts.mask_per_concept else mask_for
    mask = make(pipe, recipe, forget.mean, forget.std, forget.captions, bank, opts.seed, accelerator, opts.progress,
                resolution=res, retain=retain)
    mask.meta["recipe_key"] = key
    mask.meta["mixed_precision"] = opts.mixed_precision
    if accelerator.is_main_process:
        mask.save(cached)
    dist.barrier()
    return mask
