"""The erasure job for text-to-image families (SD 1.x/2.x, SDXL), end to end:
check everything -> data -> saliency mask -> method -> checkpoint/resume -> exported pipeline.

One readable job (in the spirit of torchtune's recipes): ``erase(EraseOptions(...))``. It never asks
which family or method it holds: the family (``family.py``) loads, encodes prompts and calls the
denoiser; the method (``methods/``) turns each step's batches into losses.
1. Forget/retain images: drawn by the base model from the recipe's prompts (cached, resumable), or
   a local image folder, or a ``datasets`` dataset. Encoded once by the VAE.
2. Mask: gradient of the guided noise-prediction loss on the forget images under their concept
   prompts, summed over the forget set at the base weights; top ``keep`` fraction, global.
3. Training: the method's loss (SalUn and RL: ``||e(x_t|c_forget) - stopgrad e(x_t|c_misaligned)||^2 +
   alpha * denoising MSE(retain)``, same t and noise for both predictions), Adam; with a mask only masked
   weights move (bit-identical elsewhere). The denoising target follows the scheduler's prediction_type.
   Checkpoints every N steps in the work folder; ``resume=True`` continues from the last one.
4. Export: a diffusers pipeline folder with a model card, the recipe and the mask (and a LoRA).
"""
from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..core import distributed as dist
from ..core.atomic import atomic_dirs
from ..core.checkpoints import TrainingDiverged, fresh_accelerator, mask_digest  # noqa: F401 - re-exports TrainingDiverged
from ..core.errors import UserError
from ..core.mask import Mask, content_digest, fingerprint, select_parameters
from ..core.masked_optim import MaskedParameters
from ..core.workdir import check_work_dir, job_folders
from ..toy.vocabulary import warn_unknown_words
from . import loop
from .concepts import check_no_replay, combine, entry, parts, read_history, with_replay
from .latents import TextBank, all_drawn, image_latents, no_images, noise_batch
from .methods import METHODS, Batch, Context
from .options import EraseOptions, check_options  # noqa: F401 - re-exported
from .prepare import (check_mixed_precision, check_prediction_type, check_resolution, denoiser, family_of_pipe,
                      given_pipeline, native_resolution, target_key)
from .saliency import make_mask, mask_for, mask_key, per_concept_mask  # noqa: F401 - make_mask re-exported
from .sd.data import EpochSampler
from .sd.recipes import Recipe


# ---------------------------------------------------------------- the job
def _training_key(recipe: Recipe, opts: EraseOptions, data: str, resolution: int, target: list = ()) -> str:
    """Every setting that shapes training (not the step count): a resume under other settings is refused."""
    what = [recipe.lr, recipe.alpha, recipe.batch_size, opts.seed, recipe.forget_prompts, recipe.misaligned_prompts,
            recipe.retain_prompts, data, resolution, opts.mixed_precision, opts.use_mask,
            None if opts.use_mask else recipe.selection, *target]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]


def _total_steps(recipe: Recipe, opts: EraseOptions, n_forget: int) -> int:
    if opts.steps is not None:
        return opts.steps
    return recipe.steps or math.ceil(recipe.epochs * n_forget / recipe.batch_size)


def erase(opts: EraseOptions, pipe=None) -> dict:
    """Run the whole job; returns a summary (mask statistics, losses, timings, output paths).

    ``pipe``: the pipeline ``opts.model`` names, already loaded (the Python API's): it is trained in place
    instead of loading the model again."""
    from ..core.atomic import check_output
    from .pipeline import default_model, load_pipeline

    check_options(opts)
    source = opts.model or default_model()
    out = Path(opts.out)
    lora_out = Path(str(out) + "-lora") if opts.lora_rank else None
    check_output(out, source, opts.overwrite)
    if lora_out is not None:
        check_output(lora_out, source, opts.overwrite, replaceable=LORA_FILES)
    check_work_dir(opts.work_dir, out, source, [lora_out] if lora_out else [])
    toys = [p.get("toy") or {} for p in parts(opts.recipe)]
    if opts.audit and not all(t.get("shape") or t.get("attribute") and len(toys) == 1 for t in toys):
        raise UserError("the quick --audit uses the toy judge and works on toy concepts (several: toy shapes); "
                        "audit other models with `salun audit nudity` or `salun audit concept`")
    if not opts.replay:
        check_no_replay(source)
    earlier = read_history(source, strict=opts.replay)  # --no-replay: a broken history is left out, warned
    if earlier:  # erasing one more concept: the earlier ones stay out of the retain set, the card keeps them
        recipe = combine([opts.recipe], earlier)
        if opts.replay and opts.forget_data is None and recipe.forget_dataset is None:
            recipe = with_replay(recipe, earlier)  # and they are trained on again, so that they stay erased
        elif opts.replay:
            print("salun: warning: the earlier erased concepts are not replayed when the forget images come from "
                  "--forget-data or a dataset (they have no images there); this run may bring them back",
                  file=sys.stderr)
        opts = replace(opts, recipe=recipe, extra_card={**opts.extra_card, "history": earlier})
    r = opts.recipe
    warn_unknown_words(str(source), [*r.forget_prompts, *r.misaligned_prompts, *r.retain_prompts],
                       f"the {r.name} recipe")
    t_start = time.time()
    accelerator = fresh_accelerator(opts.mixed_precision, cpu=opts.device is not None and
                                    torch.device(opts.device).type == "cpu", device=opts.device)
    check_mixed_precision(accelerator, opts.mixed_precision)
    if opts.xformers and accelerator.device.type != "cuda":  # the package is there (check_options): not the GPU
        raise UserError(f"--xformers works on CUDA only, and this run is on {accelerator.device.type}")
    pipe = load_pipeline(opts.model, device=accelerator.device) if pipe is None else \
        given_pipeline(pipe, accelerator.device, opts.progress)
    res = check_resolution(pipe, opts.resolution)
    check_prediction_type(pipe)
    mask = None
    if opts.mask_path is not None:  # a given mask is checked before any drawing
        mask = Mask.load(opts.mask_path)
        mask.check_model(pipe.unet, strict_fingerprint=not opts.allow_other_base)
    if opts.lora_rank:  # before any image is drawn: a rank no changed layer can use only pads the adapter
        from ..core.export import check_lora_rank

        check_lora_rank(opts.lora_rank, {n: m for n, m in mask.masks.items() if m.any()} if mask is not None else
                        select_parameters(pipe.unet, METHODS[opts.method].selection or opts.recipe.selection))
    outputs = [out] + ([lora_out] if lora_out else [])
    with job_folders(outputs, opts.work_dir, source, opts.resume, opts.restart, accelerator.is_main_process) as wd:
        accelerator.wait_for_everyone()
        summary = _run(opts, pipe, accelerator, wd.path, res, mask, lora_out)
    dist.barrier()  # the other processes return once the main one has exported
    summary["seconds"] = round(time.time() - t_start, 2)
    summary["processes"] = dist.world()
    summary["out"] = str(out)
    return summary


def _run(opts: EraseOptions, pipe, accelerator, work: Path, res: int, mask: Mask | None, lora_out: Path | None):
    """Data -> mask -> masked training -> export, in the prepared work folder."""
    from diffusers import DDPMScheduler

    recipe = opts.recipe
    unet = pipe.unet
    use_xformers = opts.xformers
    if use_xformers is None:
        import importlib.util

        use_xformers = accelerator.device.type == "cuda" and importlib.util.find_spec("xformers") is not None
    if use_xformers:
        unet.enable_xformers_memory_efficient_attention()

    family = family_of_pipe(pipe)
    method = METHODS[opts.method]
    settings = method_settings(opts)
    if method.closed_form:
        return _run_closed_form(opts, pipe, accelerator, res, lora_out, family, method, settings)

    # 1. data (under several processes each draws its share of the images; all then read them all)
    with dist.main_first(all_drawn(opts, recipe)):
        if method.needs_images:
            f_mean, f_std, f_caps, f_source = image_latents(pipe, recipe, opts, work, "forget", res)
        else:
            f_mean, f_std, f_caps, f_source = no_images(pipe, recipe, res, method)
        r_mean = r_std = r_caps = None
        r_source = "none (alpha = 0)" if method.uses_retain else f"none ({method.name} has no retain term)"
        if recipe.alpha > 0 and method.uses_retain:
            r_mean, r_std, r_caps, r_source = image_latents(pipe, recipe, opts, work, "retain", res)
    f_digest = content_digest(f_mean, f_std)
    data_digest = f_digest + ("-" + content_digest(r_mean, r_std) if r_caps else "")
    misaligned = [recipe.misaligned_for(c) for c in f_caps]
    bank = TextBank(family, pipe, f_caps + misaligned + (r_caps or []), accelerator.device, res)

    # 2. mask
    t_mask = time.time()
    if mask is not None:  # given: it decides selection and keep (the record says what was used)
        recipe = replace(recipe, selection=mask.meta.get("selection", recipe.selection),
                         keep=mask.meta.get("keep", recipe.keep))
    elif opts.use_mask:
        cached = work / "mask.safetensors"
        key = mask_key(recipe, opts.seed, f_caps, f_digest, res, opts.mixed_precision, target_key(pipe),
                        "per-concept union" if opts.mask_per_concept else "global")
        # A cached mask made from the same recipe, data and seed is reused. Only the main process judges the
        # cache (the others' encodings of the images need not be bit-identical on other devices) and says.
        reuse = False
        if accelerator.is_main_process and cached.exists():
            old = Mask.load(cached)
            reuse = (old.meta.get("recipe_key") == key and
                     old.meta.get("fingerprint") == fingerprint(select_parameters(unet, recipe.selection)))
        if dist.broadcast(reuse):
            mask = Mask.load(cached)
        else:  # every process computes its share of the gradient sums; the sums are added up across them
            make = per_concept_mask if opts.mask_per_concept else mask_for
            mask = make(pipe, recipe, f_mean, f_std, f_caps, bank, opts.seed, accelerator, opts.progress,
                        resolution=res)
            mask.meta["recipe_key"] = key
            mask.meta["mixed_precision"] = opts.mixed_precision
            if accelerator.is_main_process:
                mask.save(cached)
            dist.barrier()
    mask_seconds = time.time() - t_mask
    selection = None if mask is not None else select_parameters(unet, method.selection or recipe.selection)
    trainable = MaskedParameters(unet, mask, selection)
    digest = mask_digest(mask) + "-" + _training_key(recipe, opts, data_digest, res,
                                                     target_key(pipe) + _method_key(method, settings))
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    frozen = None
    if method.needs_frozen:  # the base's own predictions, before any step (same device and dtype)
        frozen_unet = copy.deepcopy(unet).requires_grad_(False).eval()
        frozen = denoiser(family, frozen_unet)
    stepper = method.bind(Context(family, pipe, unet, bank, sched, recipe, settings, frozen))

    # 3. masked training
    if opts.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.Adam(trainable.parameters(), lr=recipe.lr)
    trainable.attach(optimizer)
    unet_p, optimizer = accelerator.prepare(unet, optimizer)
    scale = pipe.vae.config.scaling_factor
    steps = _total_steps(recipe, opts, len(f_caps))
    rank_seed = opts.seed + 1000 * accelerator.process_index  # each process draws its own batches
    samplers = {"forget": EpochSampler(len(f_caps), recipe.batch_size, rank_seed + 1)}
    if r_caps:
        samplers["retain"] = EpochSampler(len(r_caps), recipe.batch_size, rank_seed + 2)
    gen = torch.Generator().manual_seed(rank_seed + 3)
    dev, dtype = accelerator.device, unet.dtype

    def draw(samplers, gen):
        idx = samplers["forget"].next()
        z0, noise, t = noise_batch(f_mean, f_std, idx, scale, sched, gen, dev, dtype)
        prompts = [f_caps[i] for i in idx]
        forget = Batch(z0, noise, t, bank(prompts), bank([misaligned[i] for i in idx]), prompts)
        if not r_caps:
            return forget, None
        ridx = samplers["retain"].next()
        return forget, Batch(*noise_batch(r_mean, r_std, ridx, scale, sched, gen, dev, dtype),
                             bank([r_caps[i] for i in ridx]))

    hint = "Try a lower --lr" + (" or --mixed-precision no." if opts.mixed_precision != "no" else ".")
    try:
        trained = loop.run(loop.Loop(trainable, optimizer, stepper, denoiser(family, unet_p), sched, draw, samplers, gen,
                                     recipe.alpha, steps, work, digest, opts.checkpoint_every, hint,
                                     accelerator=accelerator, progress=opts.progress), opts.resume)
    finally:
        stepper.close()
    history, train_seconds = trained["history"], trained["seconds"]
    unet = accelerator.unwrap_model(unet_p).eval()
    n_trainable, changed = trainable.n_trainable(), list(trainable.params)
    # Free the optimizer state, gradients and gates before the export (a LoRA export reads the base
    # weights back from the source files: no second UNet in memory).
    optimizer.zero_grad(set_to_none=True)
    del optimizer, unet_p, trainable, stepper
    frozen = frozen_unet = None
    accelerator.free_memory()
    gc.collect()

    # 4. export
    used = replace(recipe, n_forget=len(f_caps), n_retain=len(r_caps or []), steps=steps,
                   epochs=round(steps * recipe.batch_size / len(f_caps), 3))
    summary = {"method": method.name, **({"method_options": settings} if settings else {}), "family": family.name, "pipeline_class": type(pipe).__name__,
               "prediction_type": sched.config.prediction_type,
               "steps": steps, "train_seconds": round(train_seconds, 2), "mask_seconds": round(mask_seconds, 2),
               "trainable_weights": n_trainable,
               "mask": {**{k: v for k, v in mask.stats().items() if k != "per_tensor_fraction"},
                        "scope": mask.meta.get("scope", "global"),
                        **{k: mask.meta[k] for k in ("combined", "per_concept_kept", "overlap") if k in mask.meta}}
               if mask else None,
               "final_loss": history[-1] if history else None, "n_forget": len(f_caps),
               "n_retain": len(r_caps or []), "resolution": res, "model_resolution": native_resolution(pipe),
               "data": {"forget": f_source, "retain": r_source}}
    return _finish(opts, pipe, unet, used, mask, history, summary, changed, lora_out, accelerator)


def _finish(opts: EraseOptions, pipe, unet, recipe: Recipe, mask, history, summary, changed, lora_out, accelerator):
    """The quick audit (``--audit``) and the export, by the main process."""
    if not accelerator.is_main_process:
        return summary
    if opts.audit:
        from ..toy import TOY_JUDGE
        from ..toy.quality import attribute_erasure_rates, erasure_rates

        # pipe.unet is the trained UNet: audit it before export so the figures go into the card.
        shapes = [p["toy"]["shape"] for p in parts(recipe) if "shape" in (p.get("toy") or {})]
        if len(shapes) > 1:  # several shapes: each one's rates, and the shapes none of them is
            from ..toy.quality import multi_erasure_rates

            quick = multi_erasure_rates(pipe, TOY_JUDGE, shapes, per_colour=8, retain_per_pair=2)
            summary["audit"] = {"judge": "toy judge", "UA": {s: 1 - quick["per_concept"][s]["forget_rate"]
                                                             for s in shapes}, **quick}
        elif "shape" in recipe.extra["toy"]:
            quick = erasure_rates(pipe, TOY_JUDGE, recipe.extra["toy"]["shape"], per_colour=8, retain_per_pair=2)
            summary["audit"] = {"judge": "toy judge", "UA": 1 - quick["forget_rate"], **quick}
        else:  # the frame attribute: its rate per prompt group, 30 images each, and 60 plain images
            quick = attribute_erasure_rates(pipe, TOY_JUDGE, per_pair=1, retain_per_pair=2)
            summary["audit"] = {"judge": "toy judge (shape head and frame detector)",
                                "UA": 1 - quick["explicit_rate"], **quick}
        opts.extra_card = {**opts.extra_card, "audit": summary["audit"]}
    _export(opts, pipe, unet, recipe, mask, history, summary, changed, lora_out)
    return summary


def method_settings(opts: EraseOptions) -> dict:
    """The method's own options: given on the command line, else the recipe's for this method, else the
    method's default (its paper's)."""
    method = METHODS[opts.method]
    from_recipe = opts.recipe.extra.get("methods", {}).get(method.name, {})
    return {k: opts.method_options.get(k, from_recipe.get(k, o.default)) for k, o in method.options.items()}


def _method_key(method, settings: dict) -> list:
    """SalUn's and RL's keys are unchanged (their checkpoints still resume); other methods add theirs."""
    return [] if method.name in ("salun", "rl") else [method.name, settings]


def _run_closed_form(opts: EraseOptions, pipe, accelerator, res: int, lora_out, family, method, settings):
    """A method without training (UCE): encode the prompts, edit the weights, export."""
    from diffusers import DDPMScheduler

    recipe = opts.recipe
    misaligned = [recipe.misaligned_for(c) for c in recipe.forget_prompts]
    bank = TextBank(family, pipe, recipe.forget_prompts + misaligned + recipe.retain_prompts, accelerator.device, res)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    t0 = time.time()
    with torch.no_grad():
        changed = method.edit(Context(family, pipe, pipe.unet, bank, sched, recipe, settings))
    seconds = time.time() - t0
    edited = set(changed)
    from ..core.export import first_non_finite

    bad = first_non_finite((n, p.detach()) for n, p in pipe.unet.named_parameters() if n in edited)
    if bad is not None:  # as the trained path stops on a non-finite weight: never export a model drawing black
        raise TrainingDiverged(f"the {method.name} edit made {bad} NaN or infinite (its settings: {settings}); "
                               "nothing was written: give settings nearer the defaults")
    n_changed = sum(p.numel() for n, p in pipe.unet.named_parameters() if n in edited)
    used = replace(recipe, n_forget=0, n_retain=0, steps=0, epochs=0)
    summary = {"method": method.name, "method_options": settings, "family": family.name,
               "pipeline_class": type(pipe).__name__, "prediction_type": sched.config.prediction_type,
               "steps": 0, "train_seconds": round(seconds, 2), "mask_seconds": 0.0, "trainable_weights": n_changed,
               "mask": None, "final_loss": None, "n_forget": 0, "n_retain": 0, "resolution": res,
               "model_resolution": native_resolution(pipe),
               "data": {"forget": f"none: {method.name} edits from the prompts alone",
                        "retain": f"none: the {len(recipe.retain_prompts)} retain prompts are its preserved concepts"}}
    return _finish(opts, pipe, pipe.unet.eval(), used, None, [], summary, changed, lora_out, accelerator)


LORA_FILES = ("lora_report.json", "pytorch_lora_weights.safetensors")


def _export(opts: EraseOptions, pipe, unet, recipe: Recipe, mask, history, summary, changed, lora_out) -> None:
    """The pipeline folder and, with --lora-rank, its ``-lora`` folder: both or neither."""
    from .sd.card import erased_card
    from ..core.export import base_unet_weights, lora_card, lora_from_delta, write_lora, write_pipeline

    base_name = str(opts.model or "pipelines/toy-sd")
    lora = None
    if lora_out is not None:
        state, report = lora_from_delta(base_unet_weights(pipe, unet), dict(unet.named_parameters()),
                                        opts.lora_rank, names=changed)
        if not state:
            raise UserError("the erased UNet does not differ from the base: no adapter to export (drop --lora-rank)")
        lora = (state, report)
        summary["lora"] = {**report, "not_represented": len(report["not_represented"]), "path": str(lora_out)}
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "recipe"}
    options["extra_card"] = {k: v for k, v in opts.extra_card.items() if k != "history"}  # history: below
    erasures = opts.extra_card.get("history", []) + [entry(recipe.to_dict(), summary, {**options, "model": base_name})]
    rec = {"recipe": recipe.to_dict(), "options": options, "summary": summary, "history": erasures}
    card = erased_card(base_name, recipe, summary, opts, opts.extra_card, family_of_pipe(pipe), METHODS[opts.method])
    targets = [Path(opts.out)] + ([lora_out] if lora_out is not None else [])
    stale_lora = Path(str(opts.out) + "-lora")
    if lora_out is None and opts.overwrite and (stale_lora / "lora_report.json").exists():
        # An earlier run's adapter of this --out would describe a pipeline that is about to be replaced:
        # it goes with the old pipeline (swapped for an empty folder, then removed).
        targets.append(stale_lora)
    with atomic_dirs(targets, overwrite=opts.overwrite, mark="erase") as tmps:
        write_pipeline(pipe, unet, tmps[0], mask=mask, recipe=rec, card=card,
                       extra_files={"training_log.jsonl": "\n".join(json.dumps(h) for h in history) + "\n"})
        if lora is not None:
            write_lora(family_of_pipe(pipe).pipeline_class(), lora[0], lora[1], tmps[1],
                       card=lora_card(base_name, lora[1], str(opts.out)))
    if len(targets) > 1 and lora is None:
        import shutil

        shutil.rmtree(stale_lora, ignore_errors=True)
        print(f"removed {stale_lora}: the adapter of the pipeline this run replaced")
