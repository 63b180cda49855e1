"""The toy model's card: what it is, how it was built, and how well it draws (measured)."""
from __future__ import annotations

from pathlib import Path


def _rates(q: dict) -> str:
    rows = ["| prompts | example | shape | colour | n |", "|---|---|---|---|---|"]
    for key in ("name", "synonym", "heldout_phrasing"):
        if key in q:
            r = q[key]
            rows.append(f"| {key} | `{r['example_prompt']}` | {r['shape_acc']:.1%} | {r['colour_acc']:.1%} | {r['n']} |")
    per = q.get("name", {}).get("per_shape", {})
    if per:
        rows += ["", "Per shape (name prompts): " + ", ".join(f"{k} {v:.0%}" for k, v in per.items())]
    att = q.get("attribute")
    if att:
        rows += ["", "The frame attribute (the toy stand-in for nudity), share of images the detector calls framed:",
                 "", "| prompts | example | frame rate | n |", "|---|---|---|---|"]
        for key in ("explicit", "implicit", "heldout_implicit", "neutral"):
            r = att[key]
            rows.append(f"| {key} | `{r['example_prompt']}` | {r['rate']:.1%} | {r['n']} |")
    return "\n".join(rows)


def write_toy_card(folder: Path, info: dict) -> None:
    cfg = info["config"]
    q = info.get("quality")
    excluded = ", ".join(cfg["exclude"]) or "none"
    if cfg.get("exclude_attribute"):
        excluded += " (and the frame attribute: its captions kept, the frames left out of the pictures)"
    reused = info.get("reused") or {}
    learns = "its transformer and CLIPs" if cfg.get("family") == "sd3" else "its text encoder and UNet"
    reuse_line = (f"\n- VAE and judge taken from the base build ({reused.get('vae_from')}), so that this model differs "
                  f"from it only in what learns concepts ({learns})" if reused.get("vae_from") else "")
    if info.get("stored_dtype"):
        reuse_line += (f"\n- Weights stored in {info['stored_dtype']} (`scripts/ship_fp16.py`) to fit the shipped "
                       "world's size budget; `from_pretrained` loads them as float32")
    quality = _rates(q) if q else "Not measured for this build (built with --no-eval)."
    rec = info["vae_reconstruction_judge_acc"]
    family = cfg.get("family", "sd")
    cls = {"sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline"}.get(family, "StableDiffusionPipeline")
    what = {"sdxl": "`StableDiffusionXLPipeline` (two CLIP text encoders, the second with a projection; `AutoencoderKL`; "
                    "`UNet2DConditionModel` with SDXL's `text_time` added conditioning on pooled text and size/crop ids; "
                    "SD's noise schedule)",
            "sd3": "`StableDiffusion3Pipeline` (an `SD3Transformer2DModel` MMDiT with SD 3.5's qk-norm, two CLIP text "
                   "encoders with projections trained with it and a small T5 frozen at its seeded weights, "
                   "`AutoencoderKL` with SD3's latent shift, flow matching with `FlowMatchEulerDiscreteScheduler`)"}.get(
        family, "`StableDiffusionPipeline` (CLIP text encoder, `AutoencoderKL`, `UNet2DConditionModel`\n"
                "with SD 1.x's block types, SD's noise schedule)")
    title = {"sdxl": " XL", "sd3": " 3"}.get(family, "")
    sampler = "flow-matching Euler" if family == "sd3" else "DPM-Solver++"
    folder_name = {"sdxl": "pipelines/toy-sdxl", "sd3": "pipelines/toy-sd3"}.get(family, "pipelines/toy-sd")
    training = (f"transformer and CLIPs {cfg['unet_steps']} steps at batch {cfg['batch_size']}, lr {cfg['unet_lr']}, flow matching "
                f"at logit-normal noise levels, EMA {cfg['ema_decay']}" if family == "sd3" else
                f"UNet/text encoder {cfg['unet_steps']} steps\n  at batch {cfg['batch_size']}, lr {cfg['unet_lr']}, "
                f"min-SNR-{cfg['min_snr_gamma']} weighting, EMA {cfg['ema_decay']}")
    text = f"""---
library_name: diffusers
tags: [stable-diffusion, toy, salun, machine-unlearning]
pipeline_tag: text-to-image
---
# salun toy Stable Diffusion{title}

A tiny but genuine {what} trained by `salun toy build` on 32x32 images of
coloured shapes that the build draws itself. It exists so that concept erasure can be run, tested and
audited on a 2-core CPU without downloading anything.

- Shapes: {", ".join(cfg["shapes"])}; colours: {", ".join(cfg["colours"])}
- Shapes left out of training (a "Retrain" gold standard when not none): **{excluded}**{reuse_line}
- Attribute: {"the frame (erase/toy/attribute.py): explicit captions 'framed'/'bordered', implicit 'gallery'/'museum'/'exhibit' captions show it at 85%, neutral captions at 4%" if cfg.get("attribute") else "none"}
- Seed {cfg["seed"]}, {cfg["n_train"]} drawn training images, {training},
  condition dropout {cfg["cond_dropout"]}; VAE {cfg["vae_steps"]} steps, KL weight {cfg["vae_kl_weight"]}
- Build time: {info["build_seconds"] / 60:.1f} min on this machine's CPU{" (" + info["build_note"] + ")" if info.get("build_note") else ""}
- The judge reads VAE reconstructions of held-out drawings as: shape {rec["shape"]:.1%}, colour {rec["colour"]:.1%}{f", frame (kind) {rec['attribute']:.1%}" if "attribute" in rec else ""}

## How well it draws (measured by the judge)

{quality}

Figures from `python scripts/eval_toy_quality.py --model <this folder>` (the build runs the same
evaluation): every shape x colour, {q["per_pair"] if q else "-"} fixed seeds each, {q["steps"] if q else "-"} {sampler} steps,
guidance {q["guidance"] if q else "-"}.

## Use

```python
from diffusers import {cls}
pipe = {cls}.from_pretrained("{folder_name}")  # this folder
image = pipe("a red circle", num_inference_steps=25, guidance_scale=5.0).images[0]
```
"""
    (folder / "README.md").write_text(text)
