"""Model cards for erased pipelines: what was erased, how, and what the audit measured."""
from __future__ import annotations

import json


def _lr_text(recipe) -> str:
    """The learning-rate schedule, when the rate is not constant."""
    if recipe.lr_schedule == "constant" and not recipe.lr_warmup_steps:
        return ""
    warm = f" after {recipe.lr_warmup_steps} warm-up steps" if recipe.lr_warmup_steps else ""
    return f" ({recipe.lr_schedule} schedule{warm})"


def erased_card(base: str, recipe, summary: dict, opts, extra: dict | None = None, family=None, method=None) -> str:
    """The model card of an erased text-to-image pipeline (``family`` gives the loading snippet)."""
    m = summary.get("mask")
    mask_line = (f"{m['kept']:,} of {m['total']:,} selected UNet weights ({m['kept_fraction']:.1%}) in "
                 f"{m['tensors']} tensors; selection `{recipe.selection}`, keep {recipe.keep}, "
                 f"{'global' if m.get('scope', 'global') == 'global' else 'per-tensor'} ranking"
                 + (f"; contrastive, sparing the retain images' salient weights (forget saliency / (1 + "
                    f"{m['mask_contrast']:g} x retain saliency / its mean))" if m.get("mask_contrast") else "")
                 + (f"; its timesteps drawn {m['timestep_density']}" if m.get("timestep_density") else "")
                 + (f"; the union of one mask per concept (overlap, shared / either: {_overlaps(m['overlap'])})"
                    if m.get("overlap") else "")
                 + (f"; {m['combined']} (each kept {', '.join(f'{k:,}' for k in m['per_view_kept'])})"
                    if m.get("per_view_kept") else "")
                 if m else "none: every selected weight was trainable (ablation)" if method is None or method.salun_loss
                 else "none: the method edits cross-attention key and value projections" if method.closed_form
                 else f"none: the method's own weights (`{method.selection or recipe.selection}`) were trainable")
    res = summary.get("resolution")
    res_line = (f"\n- Training resolution: {res} px (the model's own is {summary['model_resolution']} px)"
                if res and res != summary.get("model_resolution") else "")
    data = summary.get("data") or {}
    data_line = (f"\n- Forget images: {data.get('forget')}; retain images: {data.get('retain')}" if data else "")
    near = data.get("retain_neighbours")
    if near:  # neighbours kept by name: what joined the retain prompts, and the images each got
        what = []
        if near["keep_misaligned"]:
            what.append("the misaligned prompts joined the retain prompts ("
                        + (", ".join(near["misaligned_added"]) or "all there already") + ")")
        if near["keep_neighbours"]:
            what.append(f"the {len(near['neighbours'])} retain prompts nearest the forget prompts were listed twice "
                        f"({', '.join(near['neighbours'])})")
        counts = near.get("images")
        if counts:
            what.append("retain images of each added prompt: " + ", ".join(f"{p} {n}" for p, n in counts.items())
                        + f" (about {near['images_per_prompt']:g} per retain prompt)")
        data_line += "\n- Neighbours kept by name: " + "; ".join(what)
    lora = summary.get("lora")
    lora_line = (f"\n- LoRA export: `{lora['path']}`, rank {lora['rank']}, relative error "
                 f"{lora['relative_error']:.3f} of the weight change; {lora['not_represented']} changed tensors "
                 "(biases, norms) cannot be held by a LoRA and are left out of it (this folder is exact)"
                 if lora else "")
    title = "SalUn" if method is None or method.salun_loss and method.uses_mask else method.title
    own = method is not None and not method.salun_loss
    how = method.card if own else _SALUN if m else _RL
    settings = summary.get("method_options") or {}
    opts_text = ", ".join(f"{k} {v}" for k, v in settings.items())
    if own and method.closed_form:
        training = (f"closed-form edit, no training ({opts_text}); {summary['train_seconds']} s, "
                    f"{summary['trainable_weights']:,} weights changed")
    elif own:
        training = (f"{summary['steps']} steps, batch {recipe.batch_size}, Adam lr {recipe.lr}{_lr_text(recipe)}"
                    + (f", {opts_text}" if opts_text else "")
                    + (f", {summary['n_forget']} forget images" if method.needs_images else "") + ", seed "
                    f"{opts.seed}, mixed precision {opts.mixed_precision}{_weights_note(opts)}; {summary['train_seconds']} s of training")
    else:
        training = (f"{summary['steps']} steps, batch {recipe.batch_size}, Adam lr {recipe.lr}{_lr_text(recipe)}, alpha {recipe.alpha},\n"
                    f"  mask guidance w {recipe.guidance_w}, {summary['n_forget']} forget / {summary['n_retain']} retain "
                    f"images,\n  seed {opts.seed}, mixed precision {opts.mixed_precision}{_weights_note(opts)}; "
                    f"{summary['train_seconds']} s "
                    "of training")
        changed = [f"{k} {v}" + (_preserve_note(recipe) if k == "distill" else "") for k, v in settings.items()
                   if method is not None and k in method.options and v != method.options[k].default]
        if changed:  # the paper's loss, changed by these options (issue 27's ingredients)
            training += ";\n  " + ", ".join(changed)
        ts = summary.get("timesteps")
        if ts:  # the training's (a given mask's own density is on the mask line)
            training += (f";\n  training timesteps drawn {ts['density']} (SD3's training density), scheduler shift "
                         f"{ts['shift']:g}")
    files = ("`mask.safetensors` (bit-packed mask and its metadata), " if m else "") + \
        "`recipe.json` (every setting),\n  `training_log.jsonl` (losses per step)"
    if family is not None:
        how += f"\n\nModel family: {family.title}; the denoising target follows its scheduler's `prediction_type` " \
               f"(`{summary.get('prediction_type', 'epsilon')}`)."
    usage = (family.usage("path/to/this/folder") if family is not None else
             'from diffusers import StableDiffusionPipeline\n'
             'pipe = StableDiffusionPipeline.from_pretrained("path/to/this/folder")')
    every = recipe.extra.get("concepts") or []
    concepts = [c for c in every if not c.get("replay")]
    again = [c["concept"] for c in every if c.get("replay")]
    replay_line = (f"- Replayed, to keep them erased: {', '.join(f'**{c}**' for c in again)} (erased before; their "
                   "forget and misaligned prompts, from the history, joined this run's forget set)\n" if again else "")
    concept_line = (f"- Concepts erased together ({len(concepts)}): " + "; ".join(
        f"**{c['concept']}** ({', '.join(f'`{p}`' for p in c['forget_prompts'][:3])}"
        f"{', ...' if len(c['forget_prompts']) > 3 else ''} -> {', '.join(f'`{p}`' for p in c['misaligned_prompts'][:1])}"
        f"{', ...' if len(c['misaligned_prompts']) > 1 else ''})" for c in concepts) + "\n" if len(concepts) > 1 else "")
    earlier = (extra or {}).get("history") or []
    history = ("\n## Erasure history\n\nThis model was erased before; this run erased one more concept from it. "
               "Earlier erasures, oldest first (recipe.json `history` has them all, this one last):\n\n" + "".join(
                   f"{i + 1}. **{e['concept']}** with {e.get('method') or 'salun'}, from `{e.get('model')}`"
                   + (f" (replaying {', '.join(e['replayed'])})" if e.get("replayed") else "") + "\n"
                   for i, e in enumerate(earlier)) if earlier else "")
    audit = ""
    if extra and extra.get("audit"):
        audit = "\n## Audit\n\n```json\n" + json.dumps(extra["audit"], indent=2) + "\n```\n"
    return f"""---
library_name: diffusers
base_model: {base}
tags: [stable-diffusion, machine-unlearning, concept-erasure, salun]
pipeline_tag: text-to-image
---
# {recipe.name} erased from {base} with {title}

{how}

- Concept: **{recipe.name}**. {recipe.description}
{concept_line}{replay_line}- Forget prompts: {", ".join(f"`{p}`" for p in recipe.forget_prompts)}
- Misaligned prompts: {", ".join(f"`{p}`" for p in recipe.misaligned_prompts)}
- Retain prompts: {len(recipe.retain_prompts)} ({", ".join(f"`{p}`" for p in recipe.retain_prompts[:4])}{"..." if len(recipe.retain_prompts) > 4 else ""})
- Mask: {mask_line}
- Training: {training}{res_line}{data_line}{lora_line}
- Files: {files}
{history}{audit}
## Use

```python
{usage}
```
"""


def _preserve_note(recipe) -> str:
    """What ``--distill`` held: the number of preserve prompts and the first few."""
    ps = recipe.preserve_prompts
    return (f" (the outputs under {len(ps)} preserve prompts held to the frozen base's: "
            + ", ".join(f"`{p}`" for p in ps[:3]) + ("..." if len(ps) > 3 else "") + ")")


def _overlaps(overlap: dict) -> str:
    return ", ".join(f"{pair.replace('|', ' & ')} {v:.1%}" for pair, v in overlap.items())


_SALUN = """Erased with [salun](https://arxiv.org/abs/2310.12508) (Fan et al., *SalUn: Empowering Machine Unlearning
via Gradient-based Weight Saliency in Both Image Classification and Generation*, ICLR 2024): a
saliency mask from the gradient of the guided noise-prediction loss on the forget images, then
training in which only masked UNet weights move (all others are bit-identical to the base)."""

_RL = """Erased with [salun](https://arxiv.org/abs/2310.12508)'s RL method (random label: the loss of Fan et al.,
ICLR 2024, without the saliency mask): every selected UNet weight was trained to answer the forget
prompts as it answers their misaligned prompts, with a retain loss on other images."""


def _weights_note(opts) -> str:
    """What ``--weights-dtype bf16`` did to the weights and ``--use-8bit-adam`` to the optimizer (nothing is said
    for the defaults, float32 weights and moments)."""
    note = ""
    if getattr(opts, "weights_dtype", "fp32") != "fp32":
        note += (", UNet weights held in bf16 while training (the masked entries trained on float32 master copies and "
                 "rounded; every UNet weight is a bf16 value, saved as float32)")
    if getattr(opts, "use_8bit_adam", False):
        note += (", Adam's moments held in 8 bits (bitsandbytes' block-wise 8-bit Adam on the masked entries; "
                 "vectors under 4,096 entries kept float32 moments)")
    return note
