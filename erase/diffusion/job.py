"""The erasure job for text-to-image families (SD 1.x/2.x, SDXL, SD3), end to end, as one lifecycle (the
class-conditional DDPM's stages subclass it: ``ddpm/stages.py``):
``setup`` (attention, data, mask, method, optimizer) -> ``train`` -> ``cleanup`` -> ``export``.

One readable job (in the spirit of torchtune's recipes): ``erase(EraseOptions(...))`` checks everything,
loads the model and runs an ``EraseJob`` in the work folder. The job never asks which family or method it
holds: the family (``family.py``) loads, encodes prompts and calls the denoiser; the method (``methods/``)
turns each step's batches into losses, or edits the weights in closed form.
1. Forget/retain images (``latents.py``): drawn by the base model from the recipe's prompts (cached,
   resumable), or a local image folder, or a ``datasets`` dataset. Encoded once by the VAE.
2. Mask (``saliency.py``): gradient of the guided noise-prediction loss on the forget images under their
   concept prompts, summed over the forget set at the base weights; top ``keep`` fraction, global.
3. Training (``loop.py``): the method's loss (SalUn and RL: ``||e(x_t|c_forget) - stopgrad e(x_t|c_misaligned)||^2
   + alpha * denoising MSE(retain)``, same t and noise for both predictions), Adam; with a mask only masked
   weights move (bit-identical elsewhere). The denoising target follows the scheduler's prediction_type.
   Checkpoints every N steps in the work folder; ``resume=True`` continues from the last one.
4. Export: a diffusers pipeline folder with a model card, the recipe and the mask (and a LoRA).
"""
from __future__ import annotations

import copy
import gc
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TypedDict

import torch

from ..core import distributed as dist
from ..core.atomic import atomic_dirs
from ..core.checkpoints import TrainingDiverged, mask_digest  # noqa: F401 - re-exports TrainingDiverged
from ..core.errors import UserError
from ..core.mask import Mask, compute_mask, content_digest, intersection
from ..core.lr_schedule import is_constant, lr_factor
from ..core.masked_optim import MaskedAdam, MaskedParameters, unwrapped
from ..core.workdir import check_work_dir, job_folders
from ..toy.vocabulary import warn_unknown_words
from . import loop
from .combine import combine, own_steps, parts
from .family import check_timestep_density, family_of, recipe_for
from .loading import native_size
from .concepts import check_no_replay, entry, read_history, with_replay
from .latents import TextBank, all_drawn, image_latents, latent_scaling, no_images, noise_batch
from .neighbours import choose as choose_neighbours
from .methods import Batch, Context
from .options import EraseOptions, check_options, check_warmup, method_settings  # noqa: F401 - EraseOptions re-exported
from .prepare import (accelerator_for, check_compute_dtype, denoiser, family_of_pipe,
                      load_for_job, native_resolution, selected_parameters, target_key, training_scheduler)
from .parking import parking
from .saliency import cached_mask, make_mask, reusable  # noqa: F401 - make_mask re-exported
from ..core.sampling import EpochSampler
from .recipes import Recipe

LORA_FILES = ("lora_report.json", "pytorch_lora_weights.safetensors")


class Summary(TypedDict, total=False):
    """What a run reports (``erase`` returns it; recipe.json and the model card keep it), for every method."""
    method: str
    method_options: dict  # the method's own settings, when it has any
    family: str
    pipeline_class: str
    prediction_type: str
    steps: int
    train_seconds: float  # training, or the closed-form edit
    mask_seconds: float
    trainable_weights: int  # weights that could change (a mask's kept ones, or the edited layers')
    mask: dict | None  # the mask's statistics, scope and (several concepts) per-concept figures
    final_loss: dict | None
    n_forget: int
    n_retain: int
    resolution: int
    model_resolution: int
    data: dict  # where the forget and retain images came from
    audit: dict  # --audit: the toy judge's quick figures
    lora: dict  # --lora-rank: the adapter's report
    seconds: float  # the whole run
    processes: int
    out: str


# ---------------------------------------------------------------- keys
def _training_key(recipe: Recipe, opts: EraseOptions, data: str, resolution: int, target: list = (),
                  steps: int | None = None) -> str:
    """Every setting that shapes training (not the step count): a resume under other settings is refused."""
    what = [recipe.lr, recipe.alpha, recipe.batch_size, opts.seed, recipe.forget_prompts, recipe.misaligned_prompts,
            recipe.retain_prompts, data, resolution, opts.mixed_precision, opts.use_mask,
            None if opts.use_mask else recipe.selection, *target]
    if opts.weights_dtype != "fp32":  # (fp32 runs keep their keys: their checkpoints still resume)
        what.append(["weights", opts.weights_dtype])
    if opts.use_8bit_adam:  # (likewise: 32-bit runs keep their keys)
        what.append(["adam", 8])
    if recipe.timestep_density != "uniform":  # (likewise: uniform runs keep their keys)
        what.append(["timesteps", recipe.timestep_density])
    if not is_constant(recipe.lr_schedule, recipe.lr_warmup_steps):  # a schedule's rates depend on the step count
        what.append(["lr", recipe.lr_schedule, recipe.lr_warmup_steps, steps])
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]


def _method_key(method, settings: dict, preserve: list[str]) -> list:
    """SalUn's and RL's keys are unchanged for the paper's loss (their checkpoints still resume); their own
    options, once set (``--distill``, with the prompts it keeps), and other methods' settings join the key."""
    if method.salun_loss:
        changed = any(v != method.options[k].default for k, v in settings.items())
        return [settings, preserve] if changed else []
    return [method.name, settings]


def _total_steps(recipe: Recipe, opts: EraseOptions, n_forget: int) -> int:
    """``--steps``, else the recipe's steps or epochs over the forget images really drawn."""
    return opts.steps if opts.steps is not None else own_steps(recipe, n_forget)


# ---------------------------------------------------------------- the front door
def erase(opts: EraseOptions, pipe=None) -> Summary:
    """Run the whole job; returns its ``Summary`` (mask statistics, losses, timings, output paths).

    ``pipe``: the pipeline ``opts.model`` names, already loaded (the Python API's): it is trained in place
    instead of loading the model again."""
    from .pipeline import default_model

    method = check_options(opts)  # the method settled, once
    source = opts.model or default_model()
    out = Path(opts.out)
    lora_out = Path(str(out) + "-lora") if opts.lora_rank else None
    _check_outputs(opts, source, out, lora_out)
    opts = _with_history(opts, source)
    r = opts.recipe
    preserve = method.uses_preserve(method_settings(opts, method))
    if preserve:  # checked again: the earlier erasures may have taken some away
        r.check_preserve()
    words = [*r.forget_prompts, *r.misaligned_prompts, *r.retain_prompts, *(r.preserve_prompts if preserve else [])]
    warn_unknown_words(str(source), native_size(str(source)), words, f"the {r.name} recipe")
    family = family_of_pipe(pipe) if pipe is not None else family_of(source)  # (a folder's model_index.json)
    check_method = getattr(family, "check_method", None)
    if check_method is not None:  # a method the family cannot serve, refused before the model is loaded
        check_method(method)
    check_timestep_density(family, r.timestep_density)
    opts = replace(opts, recipe=recipe_for(family, opts.recipe))
    t_start = time.time()
    if opts.weights_dtype == "bf16" and opts.mixed_precision == "no":  # bf16 weights compute in bf16
        opts = replace(opts, mixed_precision="bf16")
    accelerator = accelerator_for(opts.mixed_precision, opts.device)
    if opts.weights_dtype == "bf16":
        check_compute_dtype(accelerator.device, torch.bfloat16, "--weights-dtype bf16")
    if opts.use_8bit_adam:
        from ..core.eight_bit import check_device

        check_device(accelerator.device)
    if opts.xformers and accelerator.device.type != "cuda":  # the package is there (check_options): not the GPU
        raise UserError(f"--xformers works on CUDA only, and this run is on {accelerator.device.type}")
    pipe, res = load_for_job(opts.model, accelerator, opts.resolution, pipe, opts.progress)
    mask = _given_mask(opts, pipe, method)
    outputs = [out] + ([lora_out] if lora_out else [])
    with job_folders(outputs, opts.work_dir, source, opts.resume, opts.restart, accelerator.is_main_process) as wd:
        accelerator.wait_for_everyone()
        job = EraseJob(opts, method, pipe, accelerator, wd.path, res, mask, lora_out)
        del mask  # the job's own reference only: it keeps the mask as bits once training has its indices
        summary = job.run()
    dist.barrier()  # the other processes return once the main one has exported
    summary["seconds"] = round(time.time() - t_start, 2)
    summary["processes"] = dist.world()
    summary["out"] = str(out)
    return summary


def _check_outputs(opts: EraseOptions, source, out: Path, lora_out: Path | None) -> None:
    """The outputs and work folder may be written (never inside the source), and a quick --audit can judge."""
    from ..core.atomic import check_output

    check_output(out, source, opts.overwrite)
    if lora_out is not None:
        check_output(lora_out, source, opts.overwrite, replaceable=LORA_FILES)
    check_work_dir(opts.work_dir, out, source, [lora_out] if lora_out else [])
    toys = [p.get("toy") or {} for p in parts(opts.recipe)]
    if opts.audit and not all(t.get("shape") or t.get("attribute") and len(toys) == 1 for t in toys):
        raise UserError("the quick --audit uses the toy judge and works on toy concepts (several: toy shapes); "
                        "audit other models with `salun audit nudity` or `salun audit concept`")


def _with_history(opts: EraseOptions, source) -> EraseOptions:
    """Erasing one more concept: the earlier ones stay out of the retain set, the card keeps them, and (replay)
    they are trained on again, so that they stay erased."""
    if not opts.replay:
        check_no_replay(source)
    earlier = read_history(source, strict=opts.replay)  # --no-replay: a broken history is left out, warned
    if not earlier:
        return opts
    recipe = combine([opts.recipe], earlier)
    if opts.replay and opts.forget_data is None and recipe.forget_dataset is None:
        recipe = with_replay(recipe, earlier)
    elif opts.replay:
        print("salun: warning: the earlier erased concepts are not replayed when the forget images come from "
              "--forget-data or a dataset (they have no images there); this run may bring them back",
              file=sys.stderr)
    return replace(opts, recipe=recipe, extra_card={**opts.extra_card, "history": earlier})


def _given_mask(opts: EraseOptions, pipe, method) -> Mask | None:
    """A ``--mask`` checked against the model, and ``--lora-rank`` against what will change, before any drawing."""
    mask = None
    if opts.mask_path is not None:
        mask = Mask.load(opts.mask_path)
        mask.check_model(family_of_pipe(pipe).denoiser_of(pipe), strict_fingerprint=not opts.allow_other_base)
    if opts.lora_rank:  # a rank no changed layer can use only pads the adapter
        from ..core.export import check_lora_rank

        check_lora_rank(opts.lora_rank, {n: m for n, m in mask.masks.items() if m.any()} if mask is not None else
                        selected_parameters(pipe, method.selection or opts.recipe.selection))
    return mask


# ---------------------------------------------------------------- the lifecycle
class EraseJob:
    """One erasure in a prepared work folder. Its attributes are the run's state: each stage reads what the
    one before it set. ``run`` = ``setup`` -> ``train`` -> ``cleanup`` (always) -> ``export``, once every process
    is past its cleanup."""

    def __init__(self, opts: EraseOptions, method, pipe, accelerator, work: Path, res: int, mask: Mask | None,
                 lora_out: Path | None):
        self.opts, self.recipe, self.pipe, self.accelerator = opts, opts.recipe, pipe, accelerator
        self.work, self.res, self.mask, self.lora_out = work, res, mask, lora_out
        self.family = family_of_pipe(pipe)
        self.method = method
        self.settings = method_settings(opts, method)
        if self.recipe.preserve_prompts and not method.uses_preserve(self.settings):
            # recipe.json and the card record the prompts a run used: none, without --distill
            self.recipe = replace(self.recipe, preserve_prompts=[])
        self.unet = self.family.denoiser_of(pipe)  # the denoiser the job trains (a UNet; SD3's transformer)
        self.stepper = self.optimizer = self.trainable = self.parked = None
        self.mask_seconds = 0.0
        self.neighbours: dict | None = None  # what --keep-misaligned / --keep-neighbours added to the retain prompts
        self.alpha = self.recipe.alpha  # the retain term's weight
        self.grad_clip: float | None = None  # the paper's SD recipe clips no gradient

    def run(self) -> Summary:
        try:
            self.setup()
            self.train()
        finally:
            self.cleanup()
        # every process has read its parked components back out of the work folder (and may still fail doing
        # so) before the main one exports and then removes that folder
        dist.barrier()
        return self.export()

    # -- setup
    def setup(self) -> None:
        """Attention backend; then the images, their conditions, the mask and the optimizer (a closed-form
        method needs only the prompts' conditions)."""
        self._attention()
        if self.method.closed_form:
            r = self.recipe
            misaligned = [r.misaligned_for(c) for c in r.forget_prompts]
            self.bank = TextBank(self.family, self.pipe, r.forget_prompts + misaligned + r.retain_prompts,
                                 self.accelerator.device, self.res)
            self.scheduler = self._scheduler()
            return
        # the forget term's timestep window, refused before any image is drawn if the schedule lacks it
        n_train = self.pipe.scheduler.config.num_train_timesteps
        self.forget_t = self.method.forget_timesteps(self.settings, n_train)
        self._data()
        if self.method.salun_loss:  # from here on SalUn's job calls the denoiser alone, until the export
            self.parked = parking(self.pipe, self.family.denoiser_component, self.work, self.accelerator.device)
            self.parked.park()  # (held first: a park that fails half-way is restored by cleanup too)
        if self.opts.weights_dtype == "bf16":  # after the base drew the images (the same as an fp32 run's)
            # torch's own cast: diffusers' `to` warns about float32 modules even when a model keeps none
            torch.nn.Module.to(self.unet, torch.bfloat16)
        self._mask()
        self._optimizer()

    def _attention(self) -> None:
        use = self.opts.xformers
        if use is None:
            import importlib.util

            use = self.accelerator.device.type == "cuda" and importlib.util.find_spec("xformers") is not None
        if use:
            self.unet.enable_xformers_memory_efficient_attention()

    def _lr_at(self):
        """The learning rate of each step under the recipe's schedule (None: constant, the optimizer's own)."""
        r = self.recipe
        if is_constant(r.lr_schedule, r.lr_warmup_steps):
            return None
        steps = self.steps
        return lambda step: r.lr * lr_factor(r.lr_schedule, step, steps, r.lr_warmup_steps)

    def _scheduler(self):
        return training_scheduler(self.family, self.pipe, self.recipe.timestep_density)

    def _data(self) -> None:
        """Forget and retain latents (under several processes each draws its share; all then read them all),
        and the conditions of every prompt they use."""
        opts, method = self.opts, self.method
        # neighbours kept by name widen the retain prompts before any is drawn (the keys and recipe.json follow)
        self.recipe, self.neighbours = choose_neighbours(self.recipe, self.family, self.pipe, self.res)
        r = self.recipe
        with dist.main_first(all_drawn(opts, r)):
            self.forget = (image_latents(self.pipe, r, opts, self.work, "forget", self.res) if method.needs_images
                           else no_images(self.pipe, r, self.res, method))
            self.retain = None
            self.retain_source = ("none (alpha = 0)" if method.uses_retain
                                  else f"none ({method.name} has no retain term)")
            if r.alpha > 0 and method.uses_retain:
                self.retain = image_latents(self.pipe, r, opts, self.work, "retain", self.res)
                self.retain_source = self.retain.source
            # a contrastive mask spares what the retain images need: it draws them even where training does not
            self.mask_retain = self.retain
            if self.retain is None and self._contrast_mask():
                self.mask_retain = image_latents(self.pipe, r, opts, self.work, "retain", self.res)
        f = self.forget
        self.forget_digest = content_digest(f.mean, f.std)
        self.retain_digest = (content_digest(self.mask_retain.mean, self.mask_retain.std) if self.mask_retain
                              else "")
        self.data_digest = self.forget_digest + ("-" + self.retain_digest if self.retain else "")
        self.misaligned = [r.misaligned_for(c) for c in f.captions]
        self.preserve = r.preserve_prompts
        self.bank = TextBank(self.family, self.pipe, f.captions + self.misaligned + self.preserve +
                             (self.mask_retain.captions if self.mask_retain else []), self.accelerator.device, self.res)

    def _contrast_mask(self) -> bool:
        """Whether this run computes a contrastive saliency mask (``--mask-contrast``), which needs retain images."""
        return self.mask is None and self.opts.use_mask and self.recipe.mask_contrast > 0

    def _mask(self) -> None:
        """A given mask decides selection and keep (the record says what was used); else SalUn's, reused from
        the work folder when the same recipe, data and seed made it."""
        t0 = time.time()
        if self.mask is not None:
            self.recipe = replace(self.recipe, selection=self.mask.meta.get("selection", self.recipe.selection),
                                  keep=self.mask.meta.get("keep", self.recipe.keep),
                                  mask_contrast=self.mask.meta.get("mask_contrast", 0.0))
        elif self.opts.use_mask:
            self.mask = cached_mask(self.pipe, self.recipe, self.opts, self.forget, self.forget_digest, self.bank,
                                    self.work, self.res, self.accelerator, self.mask_retain, self.retain_digest)
        self.mask_seconds = time.time() - t0

    def _optimizer(self) -> None:
        """The trainable weights (the mask's, else the method's selection), the method bound to its context,
        Adam over them, the samplers and the generator the loop draws from."""
        opts, r, method, unet = self.opts, self.recipe, self.method, self.unet
        self.scheduler = self._scheduler()
        frozen = None
        if method.needs_frozen_for(self.settings):  # the base's own predictions, before any step (same device, dtype)
            frozen = denoiser(self.family, copy.deepcopy(unet).requires_grad_(False).eval())
        self.stepper = method.bind(Context(self.family, self.pipe, unet, self.bank, self.scheduler, r, self.settings,
                                           frozen))
        views = method.mask_views(self.settings) if self.mask is None else 0
        if views:  # a mask of the method's own loss (ANT's heavy hitters), at the base weights
            self.mask = self._method_mask(views)
        selection = None if self.mask is not None else selected_parameters(self.pipe, method.selection or r.selection)
        self.trainable = MaskedParameters(unet, self.mask, selection)
        self.steps = _total_steps(r, opts, len(self.forget.captions))
        check_warmup(r.lr_warmup_steps, self.steps)  # (again: a run counted in epochs knows its steps only now)
        self.digest = mask_digest(self.mask) + "-" + _training_key(
            r, opts, self.data_digest, self.res,
            target_key(self.pipe) + _method_key(method, self.settings, self.preserve), self.steps)
        if self.mask is not None:  # the trainable view holds what training needs: keep the mask as bits (8x less)
            self.mask = self.mask.packed()
        if opts.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        # in one process the full gradients are gathered and dropped tensor by tensor during backward (a
        # data-parallel launch completes them only after it, and fp16's loss scaler unscales and checks the full
        # gradients before the step)
        self._adam(r.lr, gather=self.accelerator.num_processes == 1
                   and getattr(self.accelerator, "scaler", None) is None)
        self._samplers(len(self.forget.captions), len(self.retain.captions) if self.retain else 0, r.batch_size)

    def _adam(self, lr: float, gather: bool) -> None:
        """The denoiser in training mode and Adam with state for the masked entries of ``self.trainable`` only,
        prepared by the accelerator. ``gather``: the full gradients are gathered and dropped tensor by tensor during
        backward (not when a step must read them whole: clipping, a loss scaler, a data-parallel all-reduce)."""
        self.unet.train()
        optimizer = MaskedAdam(self.trainable, lr=lr, gather=gather,
                               state_bits=8 if getattr(self.opts, "use_8bit_adam", False) else 32)
        try:
            self.trainable.attach(optimizer)
            self.prepared_unet, self.optimizer = self.accelerator.prepare(self.unet, optimizer)
        except BaseException:
            optimizer.close()  # no gradient hook left on the model
            raise

    def _samplers(self, n_forget: int, n_retain: int, batch_size: int) -> None:
        """The loop's batch samplers (a retain one when there are retain images) and its generator; each process
        draws its own batches."""
        rank_seed = self.opts.seed + 1000 * self.accelerator.process_index
        self.samplers = {"forget": EpochSampler(n_forget, batch_size, rank_seed + 1)}
        if n_retain:
            self.samplers["retain"] = EpochSampler(n_retain, batch_size, rank_seed + 2)
        self.gen = torch.Generator().manual_seed(rank_seed + 3)

    def _method_mask(self, views: int) -> Mask:
        """The intersection of ``views`` saliency masks of the bound method's own loss at the base weights, each
        from ``mask_batches`` batches of its own random draws (seeds apart from training's), each keeping the
        recipe's ``keep`` of the selected weights. The main process computes it and keeps it in the work folder,
        keyed by what shaped it: the other processes, and a resumed run, load that one (never a recomputation,
        which other kernels could round differently)."""
        t0 = time.time()
        r, method = self.recipe, self.method
        selection = method.selection or r.selection
        key = hashlib.sha256(json.dumps([method.name, sorted(self.settings.items()), views, method.mask_batches,
                                         r.keep, selection, r.batch_size, self.opts.seed, self.data_digest,
                                         sorted(set(self.forget.captions)), self.res, self.opts.mixed_precision],
                                        default=str).encode()).hexdigest()[:16]
        cached = self.work / "method-mask.safetensors"
        if not reusable(cached, key, selected_parameters(self.pipe, selection), self.accelerator):
            if self.accelerator.is_main_process:
                self._own_mask(views, selection, key).save(cached)
            dist.barrier()
        mask = Mask.load(cached)
        if mask.kept == 0:
            raise UserError(f"{method.name}'s own mask is empty: no weight is salient in all {views} views; lower "
                            "--heavy-hitters or raise --keep")
        self.mask_seconds += time.time() - t0
        return mask

    def _own_mask(self, views: int, selection: str, key: str) -> Mask:
        r, method = self.recipe, self.method
        eps = denoiser(self.family, self.unet)
        masks = []
        for v in range(views):
            samplers = {"forget": EpochSampler(len(self.forget.captions), r.batch_size, self.opts.seed + 101 + v)}
            gen = torch.Generator().manual_seed(self.opts.seed + 201 + v)

            def loss_fn(_):
                forget, retain = self._draw(samplers, gen)
                with self.accelerator.autocast():
                    return self.stepper.losses(eps, self.scheduler, forget, retain, r.alpha)["loss"]

            masks.append(compute_mask(self.unet, loss_fn, range(method.mask_batches),
                                      selection=selection, keep=r.keep,
                                      presets=self.family.selection_presets(), progress=self.opts.progress,
                                      total=method.mask_batches))
        return intersection(masks, {"loss": f"{method.name}'s own", "views": views,
                                    "combined": f"the intersection of {views} saliency masks of {method.name}'s own "
                                                "loss, each from its own random draws",
                                    "batches_per_view": method.mask_batches, "recipe_key": key})

    def _draw(self, samplers: dict, gen: torch.Generator) -> tuple[Batch, Batch | None]:
        """One step's forget batch (with its misaligned prompts' conditions) and retain batch."""
        f, r = self.forget, self.retain
        scale, sched = latent_scaling(self.pipe), self.scheduler
        dev, dtype = self.accelerator.device, self.unet.dtype
        idx = samplers["forget"].next()
        z0, noise, t = noise_batch(f.mean, f.std, idx, scale, sched, gen, dev, dtype, self.forget_t)
        prompts = [f.captions[i] for i in idx]
        forget = Batch(z0, noise, t, self.bank(prompts), self.bank([self.misaligned[i] for i in idx]), prompts)
        if self.preserve:  # one preserve prompt per image (drawn only then: the paper's loss keeps its stream)
            pick = torch.randint(0, len(self.preserve), (len(idx),), generator=gen).tolist()
            forget.preserve = self.bank([self.preserve[i] for i in pick])
        if not r:
            return forget, None
        ridx = samplers["retain"].next()
        return forget, Batch(*noise_batch(r.mean, r.std, ridx, scale, sched, gen, dev, dtype),
                             self.bank([r.captions[i] for i in ridx]))

    # -- train
    def train(self) -> None:
        """The loop over the method's losses (checkpointed, resumable), or the closed-form edit."""
        if self.method.closed_form:
            return self._edit()
        trained = loop.run(loop.Loop(self.trainable, self.optimizer, self.stepper,
                                     denoiser(self.family, self.prepared_unet), self.scheduler, self._draw,
                                     self.samplers, self.gen, self.alpha, self.steps, self.work, self.digest,
                                     self.opts.checkpoint_every, self._hint(), self.grad_clip,
                                     accelerator=self.accelerator, progress=self.opts.progress,
                                     lr_at=self._lr_at()), self.opts.resume)
        self.history, self.train_seconds = trained["history"], trained["seconds"]
        self.unet = self.accelerator.unwrap_model(self.prepared_unet).eval()
        self.n_trainable, self.changed = self.trainable.n_trainable(), list(self.trainable.params)

    def _hint(self) -> str:
        """What to try when training diverges."""
        return "Try a lower --lr" + (" or --mixed-precision no." if self.opts.mixed_precision != "no" else ".")

    def _edit(self) -> None:
        """A method without training (UCE): edit the weights from the prompts' conditions."""
        from ..core.export import first_non_finite

        method, unet = self.method, self.unet
        t0 = time.time()
        with torch.no_grad():
            changed = method.edit(Context(self.family, self.pipe, unet, self.bank, self.scheduler, self.recipe,
                                          self.settings))
        self.train_seconds = time.time() - t0
        edited = set(changed)
        bad = first_non_finite((n, p.detach()) for n, p in unet.named_parameters() if n in edited)
        if bad is not None:  # as the trained path stops on a non-finite weight: never export a model drawing black
            raise TrainingDiverged(f"the {method.name} edit made {bad} NaN or infinite (its settings: "
                                   f"{self.settings}); nothing was written: give settings nearer the defaults")
        self.n_trainable = sum(p.numel() for n, p in unet.named_parameters() if n in edited)
        self.changed, self.history, self.steps = changed, [], 0
        self.unet = unet.eval()

    # -- cleanup
    def cleanup(self) -> None:
        """Undo the method's hooks; free the optimizer state, gradients and gates before the export (a LoRA
        export reads the base weights back from the source files: no second UNet in memory); then, whatever
        happened, bring back the parked components (a pipeline handed over in memory must not keep them on the
        meta device) and put a UNet trained in bf16 back to float32 (exactly: every bf16 value is a float32
        one), so the pipeline in memory draws, audits and erases again as any float32 pipeline does."""
        try:
            if self.stepper is not None:
                self.stepper.close()
            if self.optimizer is not None:
                self.optimizer.zero_grad(set_to_none=True)
                unwrapped(self.optimizer).close()  # its gradient hooks go with it
            self.stepper = self.optimizer = self.trainable = self.prepared_unet = None
            if not self.method.closed_form:
                self.accelerator.free_memory()
                gc.collect()
        finally:
            parked, self.parked = self.parked, None
            try:
                if parked is not None:
                    parked.restore()
            finally:
                if self.unet.dtype != torch.float32:
                    torch.nn.Module.to(self.unet, torch.float32)

    # -- export
    def export(self) -> Summary:
        """The summary; then, by the main process, the quick audit and the exported folders."""
        summary = self._summary()
        if not self.accelerator.is_main_process:
            return summary
        if self.opts.audit:
            summary["audit"] = _quick_audit(self.pipe, self.used)
            self.opts.extra_card = {**self.opts.extra_card, "audit": summary["audit"]}
        _export(self.opts, self.method, self.pipe, self.unet, self.used, self.mask, self.history, summary,
                self.changed, self.lora_out)
        return summary

    def _summary(self) -> Summary:
        """The one summary, for trained and closed-form methods alike; ``self.used`` is the recipe as run."""
        mask = self.mask
        if self.method.closed_form:
            self.used = replace(self.recipe, n_forget=0, n_retain=0, steps=0, epochs=0)
            n_f = n_r = 0
            data = {"forget": f"none: {self.method.name} edits from the prompts alone",
                    "retain": f"none: the {len(self.recipe.retain_prompts)} retain prompts are its preserved concepts"}
        else:
            n_f, n_r = len(self.forget.captions), len(self.retain.captions) if self.retain else 0
            self.used = replace(self.recipe, n_forget=n_f, n_retain=n_r, steps=self.steps,
                                epochs=round(self.steps * self.recipe.batch_size / n_f, 3))
            data = {"forget": self.forget.source, "retain": self.retain_source}
            if self.neighbours:  # what was added, and how many of the drawn retain images each added prompt has
                drawn = (self.mask_retain or self.retain).captions
                added = self.neighbours["misaligned_added"] + self.neighbours["neighbours"]
                data["retain_neighbours"] = {**self.neighbours, "images": {p: drawn.count(p) for p in added},
                                             "images_per_prompt": round(len(drawn) / len(set(drawn)), 2)}
        stats = None
        if mask is not None:
            stats = {**{k: v for k, v in mask.stats().items() if k != "per_tensor_fraction"},
                     "scope": mask.meta.get("scope", "global"),
                     **{k: mask.meta[k] for k in ("combined", "per_concept_kept", "overlap", "mask_contrast", "n_retain",
                                                  "per_view_kept", "timestep_density")
                        if k in mask.meta}}
        return {"method": self.method.name, **({"method_options": self.settings} if self.settings else {}),
                "family": self.family.name, "pipeline_class": type(self.pipe).__name__,
                "prediction_type": self.scheduler.config.prediction_type, "steps": self.steps,
                "train_seconds": round(self.train_seconds, 2), "mask_seconds": round(self.mask_seconds, 2),
                "trainable_weights": self.n_trainable, "mask": stats,
                "final_loss": self.history[-1] if self.history else None, "n_forget": n_f, "n_retain": n_r,
                "resolution": self.res, "model_resolution": native_resolution(self.pipe), "data": data,
                **({"timesteps": {"density": self.scheduler.density, "shift": self.scheduler.shift}}
                   if getattr(self.scheduler, "density", "uniform") != "uniform" else {})}


def _quick_audit(pipe, recipe: Recipe) -> dict:
    """``--audit``: the toy judge's figures for the trained UNet (``pipe.unet``), before export, for the card."""
    from ..toy import TOY_JUDGE
    from .toy_quality import attribute_erasure_rates, erasure_rates

    shapes = [p["toy"]["shape"] for p in parts(recipe) if "shape" in (p.get("toy") or {})]
    if len(shapes) > 1:  # several shapes: each one's rates, and the shapes none of them is
        from .toy_quality import multi_erasure_rates

        quick = multi_erasure_rates(pipe, TOY_JUDGE, shapes, per_colour=8, retain_per_pair=2)
        return {"judge": "toy judge", "UA": {s: 1 - quick["per_concept"][s]["forget_rate"] for s in shapes},
                **quick}
    if "shape" in recipe.extra["toy"]:
        quick = erasure_rates(pipe, TOY_JUDGE, recipe.extra["toy"]["shape"], per_colour=8, retain_per_pair=2)
        return {"judge": "toy judge", "UA": 1 - quick["forget_rate"], **quick}
    # the frame attribute: its rate per prompt group, 30 images each, and 60 plain images
    quick = attribute_erasure_rates(pipe, TOY_JUDGE, per_pair=1, retain_per_pair=2)
    return {"judge": "toy judge (shape head and frame detector)", "UA": 1 - quick["explicit_rate"], **quick}


def _export(opts: EraseOptions, method, pipe, unet, recipe: Recipe, mask, history, summary, changed, lora_out) -> None:
    """The pipeline folder and, with --lora-rank, its ``-lora`` folder: both or neither."""
    from ..core.export import base_unet_weights, lora_card, lora_from_delta, write_lora, write_pipeline
    from .card import erased_card

    base_name = str(opts.model or "pipelines/toy-sd")
    family = family_of_pipe(pipe)
    lora = None
    if lora_out is not None:
        state, report = lora_from_delta(base_unet_weights(pipe, unet, family.denoiser_component),
                                        dict(unet.named_parameters()),
                                        opts.lora_rank, names=changed)
        if not state:
            raise UserError("the erased UNet does not differ from the base: no adapter to export (drop --lora-rank)")
        lora = (state, report)
        summary["lora"] = {**report, "not_represented": len(report["not_represented"]), "path": str(lora_out)}
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "recipe"}
    options["extra_card"] = {k: v for k, v in opts.extra_card.items() if k != "history"}  # history: below
    erasures = opts.extra_card.get("history", []) + [entry(recipe.to_dict(), summary, {**options, "model": base_name})]
    rec = {"recipe": recipe.to_dict(), "options": options, "summary": summary, "history": erasures}
    card = erased_card(base_name, recipe, summary, opts, opts.extra_card, family, method)
    targets = [Path(opts.out)] + ([lora_out] if lora_out is not None else [])
    stale_lora = Path(str(opts.out) + "-lora")
    if lora_out is None and opts.overwrite and (stale_lora / "lora_report.json").exists():
        # An earlier run's adapter of this --out would describe a pipeline that is about to be replaced:
        # it goes with the old pipeline (swapped for an empty folder, then removed).
        targets.append(stale_lora)
    with atomic_dirs(targets, overwrite=opts.overwrite, mark="erase") as tmps:
        write_pipeline(pipe, unet, tmps[0], mask=mask, recipe=rec, card=card,
                       extra_files={"training_log.jsonl": "\n".join(json.dumps(h) for h in history) + "\n"},
                       component=family.denoiser_component)
        if lora is not None:
            write_lora(family.pipeline_class(), lora[0], lora[1], tmps[1],
                       card=lora_card(base_name, lora[1], str(opts.out)), lora_layers=family.lora_layers)
    if len(targets) > 1 and lora is None:
        import shutil

        shutil.rmtree(stale_lora, ignore_errors=True)
        print(f"removed {stale_lora}: the adapter of the pipeline this run replaced")
