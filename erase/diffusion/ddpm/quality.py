"""What a toy class-conditional DDPM draws, per class, as the toy judge sees it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_STEPS = 50  # DDIM steps
DEFAULT_W = 2.0  # guidance w, as in the SalUn DDPM runs


def sample_classes(pipe, classes: list[int], per_class: int, seed: int = 1000, steps: int = DEFAULT_STEPS,
                   w: float = DEFAULT_W, batch_size: int = 250) -> torch.Tensor:
    """``per_class`` images of each class id, image k of a class seeded ``seed + k`` (so every model
    audited with the same settings starts from the same noise). Returns (N, 3, H, W) in [-1, 1]."""
    labels = [c for c in classes for _ in range(per_class)]
    seeds = [seed + k for _ in classes for k in range(per_class)]
    out = []
    for i in range(0, len(labels), batch_size):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i:i + batch_size]]
        out.append(pipe(labels[i:i + batch_size], guidance_scale=w, num_inference_steps=steps, generator=gens,
                        output_type="pt").images.cpu())
    return torch.cat(out)


def for_judge(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """The judge sees 32x32 images: smaller samples are upsampled bilinearly (the judge scores 100% on
    drawings downsampled to 16px and back, so this loses nothing it needs)."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False).clamp(-1, 1)


def class_rates(model, judge_dir, per_class: int = 40, seed: int = 1000, steps: int = DEFAULT_STEPS,
                w: float = DEFAULT_W, forget: str | int | None = None, forget_per_class: int | None = None,
                images: dict | None = None) -> dict:
    """Per-class judge accuracy; with ``forget``, also ``forget_rate`` (share of the forget class's samples
    drawn as it, from ``forget_per_class`` samples) and ``retain_acc`` (accuracy over the other classes).
    Pass a dict as ``images`` to get the samples back (``forget`` and ``retain``: (labels, images))."""
    from ...toy import shapes as S
    from ...toy.judge import classify, load_judge
    from .pipeline import load_ddpm

    pipe = load_ddpm(model) if isinstance(model, (str, Path)) else model
    judge = load_judge(judge_dir)
    names = pipe.class_names
    unknown = [n for n in names if n not in S.SHAPES]
    if unknown:
        from ...core.errors import UserError

        raise UserError(f"the toy judge knows {', '.join(S.SHAPES)}, not {', '.join(unknown)}")
    classes = list(range(len(names)))
    f = pipe.class_id(forget) if forget is not None else None
    counts = [forget_per_class if c == f and forget_per_class else per_class for c in classes]
    imgs = torch.cat([sample_classes(pipe, [c], k, seed, steps, w) for c, k in zip(classes, counts)])
    labels = np.repeat(classes, counts)
    pred, _ = classify(judge, for_judge(imgs))
    shapes = list(S.SHAPES)
    judged = np.array([names.index(shapes[p]) if shapes[p] in names else -1 for p in pred])
    per_class_acc = {names[c]: float((judged[labels == c] == c).mean()) for c in classes}
    out = {"per_class": per_class_acc, "acc": float((judged == labels).mean()), "per_class_n": per_class,
           "steps": steps, "w": w, "seed": seed}
    if f is not None:
        rest = labels != f
        out.update(forget_class=names[f], forget_rate=per_class_acc[names[f]], n_forget=int((~rest).sum()),
                   n_retain=int(rest.sum()),
                   retain_acc=float((judged[rest] == labels[rest]).mean()),
                   retain_per_class={k: v for k, v in per_class_acc.items() if k != names[f]})
        if images is not None:
            images["forget"] = (labels[~rest], imgs[torch.from_numpy(~rest)])
            images["retain"] = (labels[rest], imgs[torch.from_numpy(rest)])
    if images is not None:
        images["all"] = (labels, imgs)
    return out


def reference_like(images32: torch.Tensor, resolution: int) -> torch.Tensor:
    """Drawings as a perfect ``resolution``-px model would draw them, then as the judge sees them: the fair
    FID reference for a small model's upsampled samples."""
    if resolution == images32.shape[-1]:
        return images32
    return for_judge(F.interpolate(images32.float(), size=resolution, mode="area"), images32.shape[-1])
