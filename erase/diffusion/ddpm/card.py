"""Model cards for class-conditional DDPMs: the trained one and an erased one."""
from __future__ import annotations

import json
from pathlib import Path

_USE = """## Use

```python
from erase.diffusion.ddpm import ClassConditionalDDPMPipeline  # registers the class with diffusers (no remote code)
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{path}")
images = pipe(["{first}"] * 4, guidance_scale=2.0, num_inference_steps=50).images
```
"""


def _per_class(q: dict | None) -> str:
    if not q:
        return "Not measured (only toy-world models have a judge)."
    rows = ["| class | judged as drawn |", "|---|---|"] + [f"| {k} | {v:.1%} |" for k, v in q["per_class"].items()]
    return "\n".join(rows) + (f"\n\n{q['per_class_n']} samples per class (seeds {q['seed']}...), {q['steps']} DDIM "
                              f"steps, guidance w {q['w']}; judged by the toy judge (samples upsampled to 32px).")


def write_ddpm_card(folder: Path, info: dict, path: str | None = None) -> None:
    cfg = info["config"]
    text = f"""---
library_name: diffusers
tags: [ddpm, class-conditional, classifier-free-guidance, salun]
pipeline_tag: unconditional-image-generation
---
# salun class-conditional DDPM ({info["dataset"]})

A `ClassConditionalDDPMPipeline` (salun's, in diffusers' format): a `UNet2DModel` with a class embedding
plus a null class, trained with {cfg["cond_dropout"]:.0%} condition dropout so that sampling can apply
classifier-free guidance `(1 + w) e(x, c) - w e(x, null)`; a DDIM scheduler (the linear DDPM schedule).

- Classes: {", ".join(info["class_names"])}
- {info["resolution"]}px images; UNet preset `{cfg["unet"]}`; {cfg["steps"]} steps at batch {cfg["batch_size"]},
  AdamW lr {cfg["lr"]}, min-SNR-{cfg["min_snr_gamma"]} weighting, EMA {cfg["ema_decay"]}, seed {cfg["seed"]}
- Training time: {info["train_seconds"] / 60:.1f} min on {info.get("device", "cpu")} ({info.get("host", "")})

## What it draws (measured)

{_per_class(info.get("quality"))}

{_USE.format(path=path or "path/to/this/folder", first=info["class_names"][0])}"""
    (folder / "README.md").write_text(text)


def erased_ddpm_card(base: str, summary: dict) -> str:
    audit = ""
    if summary.get("audit"):
        audit = "\n## Audit\n\n```json\n" + json.dumps(summary["audit"], indent=2) + "\n```\n"
    m = summary["mask"]
    mask_line = (f"{m['kept']:,} of {m['total']:,} UNet weights ({m['kept_fraction']:.1%}), global ranking, "
                 f"from the guided loss (w {summary['mask_w']}, each batch's gradient clipped to norm {summary['mask_clip']})"
                 if m else "none: every weight was trainable (ablation)")
    return f"""---
library_name: diffusers
base_model: {base}
tags: [ddpm, class-conditional, machine-unlearning, salun]
---
# class "{summary["forget_class"]}" erased from {base} with SalUn

[SalUn](https://arxiv.org/abs/2310.12508) (Fan et al., ICLR 2024) for a class-conditional DDPM: the
prediction under the forget class is pulled toward the (frozen) prediction under class
"{summary["target_class"]}" at the same noisy image, plus alpha x the ordinary denoising loss on the
other classes; only the weights in the saliency mask move (the rest are bit-identical to the base).

- Mask: {mask_line}
- Training: {summary["steps"]} steps, batch {summary["batch_size"]}, Adam lr {summary["lr"]}, gradient clip {summary["grad_clip"]},
  alpha {summary["alpha"]}, {summary["n_forget"]} forget / {summary["n_retain"]} retain images, seed {summary["seed"]};
  {summary["train_seconds"]} s of training
- Files: `mask.safetensors`, `recipe.json`, `training_log.jsonl`
{audit}
{_USE.format(path="path/to/this/folder", first=summary["target_class"])}"""
