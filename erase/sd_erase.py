"""SalUn for Stable Diffusion, end to end: data -> saliency mask -> masked erasure -> exported pipeline.

One readable job (in the spirit of torchtune's recipes): ``erase(EraseOptions(...))``.
1. Forget/retain images: drawn by the base model from the recipe's prompts (cached, resumable), or
   a local image folder, or a ``datasets`` dataset. Encoded once by the VAE.
2. Mask: gradient of the guided noise-prediction loss on the forget images under their concept
   prompts, summed over the forget set at the base weights; top ``keep`` fraction, global.
3. Training: ``||e(x_t|c_forget) - stopgrad e(x_t|c_misaligned)||^2 + alpha * denoising MSE(retain)``,
   same t and noise for both predictions, Adam; only masked weights move (bit-identical elsewhere).
   Checkpoints every N steps in the work folder; ``resume=True`` continues from the last one.
4. Export: a diffusers pipeline folder with a model card, the recipe and the mask (and a LoRA).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data as D
from .checkpoints import (
    TrainingDiverged,
    checkpoint_history,
    fresh_accelerator,
    latest_checkpoint,
    load_checkpoint,
    mask_digest,
    save_checkpoint,
)
from .data import EpochSampler
from .errors import UserError
from .losses import denoising_loss, guided_forgetting_loss, misaligned_loss
from .mask import Mask, compute_mask, fingerprint, select_parameters
from .masked_optim import MaskedParameters
from .recipes import Recipe


@dataclass
class EraseOptions:
    recipe: Recipe
    out: Path
    model: str | None = None
    mask_path: Path | None = None  # a precomputed mask (salun mask); else computed here
    use_mask: bool = True  # False: every selected weight trains (the ablation)
    steps: int | None = None
    seed: int = 0
    work_dir: Path | None = None
    resume: bool = False
    checkpoint_every: int = 50
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    xformers: bool | None = None  # None: use xformers when installed and on CUDA, else torch SDPA
    resolution: int | None = None
    overwrite: bool = False
    lora_rank: int | None = None
    allow_other_base: bool = False
    forget_data: Path | None = None
    retain_data: Path | None = None
    device: str | None = None
    progress: bool = True
    audit: bool = False  # quick toy-judge audit of the result, written into the model card
    extra_card: dict = field(default_factory=dict)


# ---------------------------------------------------------------- data
def _latents(pipe, recipe: Recipe, opts: EraseOptions, work: Path, kind: str):
    """(mean, std, captions) of the forget or retain images, drawn or loaded, then VAE-encoded."""
    prompts = recipe.forget_prompts if kind == "forget" else recipe.retain_prompts
    folder = opts.forget_data if kind == "forget" else opts.retain_data
    spec = recipe.forget_dataset if kind == "forget" else recipe.retain_dataset
    n = recipe.n_forget if kind == "forget" else recipe.n_retain
    res = opts.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    if folder is not None:
        caption = prompts[0] if len(prompts) == 1 else None
        imgs = D.load_image_folder(folder, caption=caption)
    elif spec is not None:
        imgs = D.load_hub_dataset(spec)
    else:
        stamp = {"model": fingerprint(dict(pipe.unet.named_parameters())), "prompts": prompts, "n": n,
                 "seed": opts.seed + (0 if kind == "forget" else 10**6), "steps": recipe.gen_steps,
                 "guidance": recipe.gen_guidance, "resolution": res}
        out = D.generated_folder(work / "data", kind, stamp)
        imgs = D.generate_image_folder(pipe, prompts, n, out, seed=stamp["seed"], steps=recipe.gen_steps,
                                       guidance=recipe.gen_guidance, height=res, width=res, stamp=stamp)
    mean, std = D.encode_images(pipe.vae, imgs, res, desc=f"encoding {kind}")
    return mean, std, imgs.captions


class TextBank:
    """Text-encoder outputs for every prompt used, computed once (the text encoder stays frozen)."""

    def __init__(self, pipe, prompts, device):
        unique = sorted(set(prompts) | {""})
        tok = pipe.tokenizer(unique, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        with torch.no_grad():
            emb = pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]
        self.index = {p: i for i, p in enumerate(unique)}
        self.emb = emb.to(device)

    def __call__(self, prompts) -> torch.Tensor:
        return self.emb[[self.index[p] for p in prompts]]


# ---------------------------------------------------------------- the job
def _eps(unet):
    return lambda zt, t, cond: unet(zt, t, encoder_hidden_states=cond).sample


def _noise_batch(mean, std, idx, scale, sched, gen, device, dtype):
    z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
    return z0.to(device, dtype), noise.to(device, dtype), t.to(device)


def mask_for(pipe, recipe: Recipe, mean, std, captions, bank: TextBank, seed: int, accelerator=None,
             progress: bool = True, scope: str = "global") -> Mask:
    """SalUn's saliency mask for SD: guided noise-prediction MSE of the forget images under their prompts."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    unet, dev = pipe.unet, pipe.unet.device
    gen = torch.Generator().manual_seed(seed + 7)
    bs = recipe.batch_size
    order = list(range(len(captions)))
    batches = [order[i:i + bs] for i in range(0, len(order), bs)]

    def loss_fn(idx):
        z0, noise, t = _noise_batch(mean, std, idx, pipe.vae.config.scaling_factor, sched, gen, dev, unet.dtype)
        cond = bank([captions[i] for i in idx])
        ctx = accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)
        with ctx:
            return guided_forgetting_loss(_eps(unet), sched, z0, cond, bank([""] * len(idx)), t, noise,
                                          recipe.guidance_w)

    meta = {"base_model": str(pipe.config.get("_name_or_path", "")), "loss": "guided noise MSE",
            "guidance_w": recipe.guidance_w, "prompts": sorted(set(captions)), "n_forget": len(captions)}
    return compute_mask(unet, loss_fn, batches, selection=recipe.selection, keep=recipe.keep, scope=scope,
                        meta=meta, progress=progress, total=len(batches))


def make_mask(recipe: Recipe, out: Path, model: str | None = None, seed: int = 0, forget_data: Path | None = None,
              work_dir: Path | None = None, overwrite: bool = False, scope: str = "global",
              device: str | None = None) -> Mask:
    """``salun mask``: compute and save the saliency mask alone (reusable by ``salun erase --mask``)."""
    from .pipeline import load_pipeline

    from .export import check_output
    from .pipeline import default_model

    out = Path(out)
    check_output(out, model or default_model(), overwrite)  # never inside the source model's folder
    pipe = load_pipeline(model, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    opts = EraseOptions(recipe=recipe, out=out, model=model, seed=seed, forget_data=forget_data)
    work = Path(work_dir) if work_dir else out.parent / f".{out.stem}.work"
    mean, std, caps = _latents(pipe, recipe, opts, work, "forget")
    bank = TextBank(pipe, caps, pipe.device)
    mask = mask_for(pipe, recipe, mean, std, caps, bank, seed, scope=scope)
    mask.save(out)
    return mask


def _mask_key(recipe: Recipe, seed: int, captions) -> str:
    """What shaped a mask: a cached mask is reused only if all of this is the same."""
    import hashlib

    what = [recipe.selection, recipe.keep, recipe.guidance_w, recipe.batch_size, seed, sorted(captions), len(captions)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def _total_steps(recipe: Recipe, opts: EraseOptions, n_forget: int) -> int:
    steps = opts.steps or recipe.steps or math.ceil(recipe.epochs * n_forget / recipe.batch_size)
    if steps < 1:
        raise UserError("the number of steps must be at least 1")
    return steps


def erase(opts: EraseOptions) -> dict:
    """Run the whole job; returns a summary (mask statistics, losses, timings, output paths)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from .export import check_output, export_lora, export_pipeline
    from .pipeline import default_model, load_pipeline

    recipe = opts.recipe
    check_output(opts.out, opts.model or default_model(), opts.overwrite)
    toy_shape = recipe.extra.get("toy", {}).get("shape")
    if opts.audit and toy_shape is None:
        raise UserError("the quick --audit uses the toy judge and works on toy concepts; audit other models with "
                        "`salun audit nudity` or `salun audit concept`")
    t_start = time.time()
    accelerator = fresh_accelerator(opts.mixed_precision, cpu=opts.device == "cpu")
    pipe = load_pipeline(opts.model, device=accelerator.device)
    unet = pipe.unet
    use_xformers = opts.xformers
    if use_xformers is None:
        import importlib.util

        use_xformers = accelerator.device.type == "cuda" and importlib.util.find_spec("xformers") is not None
    if use_xformers:
        unet.enable_xformers_memory_efficient_attention()
    work = Path(opts.work_dir) if opts.work_dir else Path(opts.out).parent / f".{Path(opts.out).name}.work"
    work.mkdir(parents=True, exist_ok=True)
    if not opts.resume and accelerator.is_main_process:
        for old in work.glob("checkpoint-*"):
            shutil.rmtree(old)
    accelerator.wait_for_everyone()

    # 1. data (the main process draws; the others wait and read the cache)
    with accelerator.main_process_first():
        f_mean, f_std, f_caps = _latents(pipe, recipe, opts, work, "forget")
        r_mean = r_std = r_caps = None
        if recipe.alpha > 0:
            r_mean, r_std, r_caps = _latents(pipe, recipe, opts, work, "retain")
    misaligned = [recipe.misaligned_for(c) for c in f_caps]
    bank = TextBank(pipe, f_caps + misaligned + (r_caps or []), accelerator.device)

    # 2. mask
    # A copy of the base UNet only when an adapter (the weight change) is to be exported.
    base_state = {n: p.detach().clone() for n, p in unet.named_parameters()} if opts.lora_rank else None
    if not opts.use_mask:
        mask = None
    elif opts.mask_path is not None:
        mask = Mask.load(opts.mask_path)
        mask.check_model(unet, strict_fingerprint=not opts.allow_other_base)
    else:
        cached = work / "mask.safetensors"
        key = _mask_key(recipe, opts.seed, f_caps)
        # The main process computes (or reuses a cached mask made from the same recipe, data and seed);
        # the other processes then load that same file, so every rank trains under one mask.
        with accelerator.main_process_first():
            mask = Mask.load(cached) if cached.exists() else None
            if mask is not None and (mask.meta.get("recipe_key") != key or
                                     mask.meta.get("fingerprint") != fingerprint(
                                         select_parameters(unet, recipe.selection))):
                mask = None
            if mask is None:
                if not accelerator.is_main_process:
                    raise RuntimeError("the main process did not write the mask")
                mask = mask_for(pipe, recipe, f_mean, f_std, f_caps, bank, opts.seed, accelerator, opts.progress)
                mask.meta["recipe_key"] = key
                mask.save(cached)
    selection = None if mask is not None else select_parameters(unet, recipe.selection)
    trainable = MaskedParameters(unet, mask, selection)
    digest = mask_digest(mask)

    # 3. masked training
    if opts.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.Adam(trainable.parameters(), lr=recipe.lr)
    trainable.attach(optimizer)
    unet_p, optimizer = accelerator.prepare(unet, optimizer)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    scale = pipe.vae.config.scaling_factor
    steps = _total_steps(recipe, opts, len(f_caps))
    rank_seed = opts.seed + 1000 * accelerator.process_index  # each process draws its own batches
    samplers = {"forget": EpochSampler(len(f_caps), recipe.batch_size, rank_seed + 1)}
    if r_caps:
        samplers["retain"] = EpochSampler(len(r_caps), recipe.batch_size, rank_seed + 2)
    gen = torch.Generator().manual_seed(rank_seed + 3)
    start = 0
    ckpt = latest_checkpoint(work) if opts.resume else None
    if ckpt is not None:
        start = load_checkpoint(ckpt, trainable, optimizer, samplers, gen, digest)
        print(f"resuming from {ckpt} (step {start} of {steps})")
    eps = _eps(unet_p)
    dev, dtype = accelerator.device, unet.dtype
    history, last_good = checkpoint_history(ckpt), ckpt
    bar = tqdm(range(start, steps), desc="erasing", disable=not opts.progress or not accelerator.is_main_process,
               dynamic_ncols=True, initial=start, total=steps)
    t_train = time.time()
    for step in bar:
        idx = samplers["forget"].next()
        z0, noise, t = _noise_batch(f_mean, f_std, idx, scale, sched, gen, dev, dtype)
        with accelerator.autocast():
            l_forget = misaligned_loss(eps, sched, z0, bank([f_caps[i] for i in idx]),
                                       bank([misaligned[i] for i in idx]), t, noise)
            loss = l_forget
            l_retain = torch.zeros(())
            if r_caps:
                ridx = samplers["retain"].next()
                rz0, rnoise, rt = _noise_batch(r_mean, r_std, ridx, scale, sched, gen, dev, dtype)
                l_retain = denoising_loss(eps, sched, rz0, bank([r_caps[i] for i in ridx]), rt, rnoise)
                loss = loss + recipe.alpha * l_retain
        if not torch.isfinite(loss):
            where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
            raise TrainingDiverged(f"loss became {loss.item()} at step {step}: stopping; {where}. "
                                   "Try a lower --lr or --mixed-precision no.")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        trainable.step(optimizer)
        history.append({"step": step + 1, "loss": loss.item(), "forget": l_forget.item(), "retain": l_retain.item()})
        bar.set_postfix(forget=f"{l_forget.item():.4f}", retain=f"{l_retain.item():.4f}")
        if opts.checkpoint_every and (step + 1) % opts.checkpoint_every == 0 and step + 1 < steps \
                and accelerator.is_main_process:
            last_good = save_checkpoint(work, step + 1, trainable, optimizer, samplers, gen, digest, history)
    train_seconds = time.time() - t_train
    unet = accelerator.unwrap_model(unet_p).eval()

    # 4. export
    summary = {"steps": steps, "train_seconds": round(train_seconds, 2),
               "trainable_weights": trainable.n_trainable(),
               "mask": {k: v for k, v in mask.stats().items() if k != "per_tensor_fraction"} if mask else None,
               "final_loss": history[-1] if history else None, "n_forget": len(f_caps),
               "n_retain": len(r_caps or [])}
    if opts.audit and accelerator.is_main_process:
        from .toy import TOY_JUDGE
        from .toy.quality import erasure_rates

        # pipe.unet is the trained UNet: audit it before export so the figures go into the card.
        quick = erasure_rates(pipe, TOY_JUDGE, toy_shape, per_colour=8, retain_per_pair=2)
        summary["audit"] = {"judge": "toy judge", "UA": 1 - quick["forget_rate"], **quick}
        opts.extra_card = {**opts.extra_card, "audit": summary["audit"]}
    if accelerator.is_main_process:
        from .card import erased_card

        rec = {"recipe": recipe.to_dict(), "options": {k: str(v) if isinstance(v, Path) else v
                                                       for k, v in asdict(opts).items() if k != "recipe"},
               "summary": summary}
        card = erased_card(str(opts.model or "pipelines/toy-sd"), recipe, summary, opts, opts.extra_card)
        export_pipeline(pipe, unet, Path(opts.out), overwrite=opts.overwrite, mask=mask, recipe=rec, card=card,
                        extra_files={"training_log.jsonl": "\n".join(json.dumps(h) for h in history) + "\n"})
        if opts.lora_rank:
            base_unet = type(unet).from_config(unet.config)
            base_unet.load_state_dict(base_state)
            lora_out = Path(str(opts.out) + "-lora")
            summary["lora"] = export_lora(StableDiffusionPipeline, base_unet, unet, lora_out, opts.lora_rank,
                                          overwrite=opts.overwrite)
            summary["lora"]["path"] = str(lora_out)
            summary["lora"]["not_represented"] = len(summary["lora"]["not_represented"])
    summary["seconds"] = round(time.time() - t_start, 2)
    summary["out"] = str(opts.out)
    return summary
