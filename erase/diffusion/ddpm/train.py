"""Train a class-conditional DDPM (the toy world's, or CIFAR-10's on a GPU) and save it as a pipeline.

Epsilon prediction on the linear DDPM schedule (Ho et al., 2020), class embedding with a null class
trained by 10% condition dropout (classifier-free guidance, Ho & Salimans, 2022), AdamW with warm-up
and cosine decay, gradient clipping at 1, min-SNR-5 loss weighting, and an EMA of the weights that is
what gets saved. Sampling uses DDIM (the pipeline's saved scheduler; swap in DDPM if you like).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...core.atomic import atomic_dir
from ...core.outputs import guard_output
from ...core.sampling import EpochSampler
from ...defaults import DDPM_UNETS as UNETS, DDPMTrainConfig  # noqa: F401 - torch-free: the CLI's parser reads them
from ...core.errors import UserError
from ...toy.training import EMA, cosine_lr
from . import data as D
from .pipeline import ClassConditionalDDPMPipeline

SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=True)


def make_unet(preset: str, n_classes: int):
    from diffusers import UNet2DModel

    if preset not in UNETS:
        raise UserError(f"unknown UNet preset {preset!r}: use one of {', '.join(UNETS)}")
    return UNet2DModel(in_channels=3, out_channels=3, num_class_embeds=n_classes + 1, **UNETS[preset])


def make_pipeline(unet, class_names: list[str]) -> ClassConditionalDDPMPipeline:
    from diffusers import DDIMScheduler

    return ClassConditionalDDPMPipeline(unet=unet, scheduler=DDIMScheduler(**SCHEDULE), class_names=class_names)


def train_ddpm(cfg: DDPMTrainConfig, data: D.Labelled, device: str = "cpu", progress: bool = True):
    """Train and return the EMA UNet."""
    from diffusers import DDPMScheduler

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n_classes = len(data.class_names)
    unet = make_unet(cfg.unet, n_classes).to(device)
    if unet.config.sample_size != data.images.shape[-1]:
        raise UserError(f"the {cfg.unet} UNet draws {unet.config.sample_size}px images, the data is "
                        f"{data.images.shape[-1]}px")
    sched = DDPMScheduler(**SCHEDULE)
    snr = (sched.alphas_cumprod / (1 - sched.alphas_cumprod)).to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    ema = EMA(unet, cfg.ema_decay)
    batches = EpochSampler(len(data.labels), cfg.batch_size, generator=gen)
    unet.train()
    bar = tqdm(range(cfg.steps), desc="ddpm", dynamic_ncols=True, disable=not progress)
    running = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        idx = batches.next()
        x0 = data.images[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
        labels = data.labels[idx].clone()
        labels[torch.rand(len(idx), generator=gen) < cfg.cond_dropout] = n_classes  # the null class
        x0, noise, t, labels = x0.to(device), noise.to(device), t.to(device), labels.to(device)
        pred = unet(sched.add_noise(x0, noise, t), t, class_labels=labels).sample
        # Min-SNR weighting (Hang et al., 2023) for epsilon prediction.
        w = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]
        loss = (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet, step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
    return ema.shadow.cpu()


def build_ddpm(cfg: DDPMTrainConfig, out: Path, data_root: Path | None = None, download: bool = False,
               overwrite: bool = False, device: str = "cpu", evaluate: bool = True, progress: bool = True) -> dict:
    """Train on ``cfg.dataset`` and write a ``ClassConditionalDDPMPipeline`` folder with its card."""
    out = Path(out)
    guard_output(out, "ddpm train", reads=[data_root], overwrite=overwrite, signature=("ddpm_info.json",),
                 makes_model=True)
    resolution = UNETS.get(cfg.unet, {}).get("sample_size", 16)
    data = D.load(cfg.dataset, n=cfg.n_train, seed=cfg.seed, resolution=resolution, root=data_root,
                  download=download)
    t0 = time.time()
    unet = train_ddpm(cfg, data, device=device, progress=progress)
    import os

    info = {"config": asdict(cfg), "train_seconds": round(time.time() - t0, 1), "dataset": cfg.dataset,
            "device": str(device), "host": f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
            "resolution": resolution, "class_names": data.class_names}
    pipe = make_pipeline(unet, data.class_names)
    if evaluate and cfg.dataset == "toy-shapes":
        from ...toy import TOY_JUDGE
        from .quality import class_rates

        info["quality"] = class_rates(pipe, TOY_JUDGE, per_class=40)
    from .card import write_ddpm_card

    with atomic_dir(out, overwrite=overwrite, mark="ddpm train") as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "ddpm_info.json").write_text(json.dumps(info, indent=2))
        write_ddpm_card(tmp, info)
    return info
