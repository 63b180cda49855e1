"""SalUn's saliency mask for a class-conditional DDPM (the paper's DDPM setting), and ``salun mask`` for one.

The gradient of the guided noise-prediction loss ``(1 + w) e(x_t|c) - w e(x_t|null)`` (w = 2) on the forget
class's images, each batch's gradient clipped to norm 1 before it is summed; the top ``keep`` fraction of all
UNet weights, ranked globally.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...core.atomic import output_lock
from ...core.export import check_output
from ...core.mask import Mask, compute_mask
from ...defaults import DDPM_MASK_GUIDANCE, MASK_KEEP
from ..losses import guided_forgetting_loss
from ..options import DDPMEraseOptions, check_ddpm_settings
from ..pipeline import check_device
from . import data as D
from .pipeline import default_device, load_ddpm


def ddpm_mask(pipe, forget: D.Labelled, batch_size: int, w: float = DDPM_MASK_GUIDANCE, clip: float | None = 1.0,
              keep: float = MASK_KEEP, seed: int = 0, progress: bool = True) -> Mask:
    """The mask of ``forget``'s class for ``pipe`` (guided loss, per-batch clipped gradients)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    dev = pipe.unet.device
    gen = torch.Generator().manual_seed(seed + 7)
    n = len(forget.labels)
    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]

    def loss_fn(idx):
        x0 = forget.images[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
        labels = forget.labels[idx].to(dev)
        null = torch.full_like(labels, pipe.null_class)
        return guided_forgetting_loss(pipe.eps, sched, x0.to(dev), labels, null, t.to(dev), noise.to(dev), w)

    meta = {"base_model": str(pipe.config.get("_name_or_path", "")), "loss": "guided noise MSE (class-conditional)",
            "guidance_w": w, "forget_class": pipe.class_names[int(forget.labels[0])], "n_forget": n}
    return compute_mask(pipe.unet, loss_fn, batches, selection="all", keep=keep, clip_grad_norm=clip, meta=meta,
                        progress=progress, total=len(batches))


def make_ddpm_mask(model, forget_class: str, out: Path, seed: int = 0, batch_size: int | None = None,
                   w: float = DDPM_MASK_GUIDANCE, keep: float = MASK_KEEP, n_forget: int | None = None,
                   overwrite: bool = False, device: str | None = None, dataset: str | None = None, data_root=None,
                   download: bool = False) -> Mask:
    """``salun mask`` for a class-conditional DDPM: compute and save the mask alone."""
    check_device(device)
    check_output(out, model, overwrite, kind="file")  # never inside the source model's folder
    dataset = D.dataset_of(model, dataset)
    opts = DDPMEraseOptions(model=model, forget_class=forget_class, out=out, batch_size=batch_size,
                            n_forget=n_forget, keep=keep, mask_w=w)
    rec = opts.resolved(dataset)
    check_ddpm_settings(rec, opts)  # before the model is loaded
    with output_lock(out):
        pipe = load_ddpm(model, device=default_device(device))
        c = pipe.class_id(forget_class)
        forget, _ = D.forget_retain(dataset, c, rec, seed, pipe.unet.config.sample_size, data_root, download)
        mask = ddpm_mask(pipe, forget, rec["batch_size"], w, 1.0, keep, seed)
        mask.save(out)
    return mask
