"""Neighbours kept by name: what an erasure is most likely to take with it gets a larger share of the retain set.

Two ingredients of the retain set (issue 27), each a recipe setting, measured one at a time:

- ``keep_misaligned``: the misaligned prompts join the retain prompts. They name where the forget loss sends the
  erased concept (circle -> "a red square"), the first place collateral lands; their images are drawn by the
  model being erased, like every retain image, so training keeps what that prompt drew before.
- ``keep_neighbours`` = K: the K retain prompts nearest the forget prompts by the model's own text encoder are
  listed once more, so their images take about twice a plain retain prompt's share (the run reports the counts).
  Nearness: the cosine between the prompts' text conditions, centred on their mean over the forget and retain
  prompts so that what every prompt shares does not count, the best over the forget prompts. The conditions are
  the pooled text embedding where the family has one (SDXL's ``text_embeds``, SD3's and FLUX's
  ``pooled_projections``: one vector per prompt, whatever its length), else every token of the denoiser's
  cross-attention input (SD 1.x/2.x's CLIP states, whose padding positions carry the causal encoder's summary).

Both change only ``recipe.retain_prompts``, so the training key, the mask key (a contrastive mask) and
recipe.json follow them; ``choose`` says what it added, for the card. The main process chooses, and every
process takes its choice (near-ties must not split the processes' prompt lists).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..core import distributed as dist
from ..core.errors import UserError
from .combine import norm_prompt
from .recipes import Recipe

# the families' pooled text embeddings, preferred to the token states where a family gives one
POOLED = ("text_embeds", "pooled_projections")


def nearest(family, pipe, forget: list[str], candidates: list[str], k: int, resolution: int) -> list[str]:
    """The ``k`` prompts of ``candidates`` nearest to any of ``forget`` (ties: the earlier candidate), nearest
    first."""
    if k <= 0 or not candidates:
        return []
    pool = list(dict.fromkeys([*forget, *candidates]))
    cond = family.encode_prompts(pipe, pool, resolution)
    pooled = next((cond[key] for key in POOLED if key in cond), None)
    states = pooled if pooled is not None else cond.get("encoder_hidden_states", next(iter(cond.values())))
    v = states.float().reshape(len(pool), -1).cpu()
    if not torch.isfinite(v).all():
        raise UserError("--keep-neighbours: the text encoder's conditions of the forget and retain prompts are not "
                        "finite (an overflow in half precision?): load the text encoders in float32")
    v = v - v.mean(0, keepdim=True)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    index = {p: i for i, p in enumerate(pool)}
    sim = v[[index[c] for c in candidates]] @ v[[index[f] for f in forget]].T
    best = sim.max(dim=1).values
    order = sorted(range(len(candidates)), key=lambda i: (-float(best[i]), i))
    return [candidates[i] for i in order[:k]]


def choose(recipe: Recipe, family, pipe, resolution: int) -> tuple[Recipe, dict | None]:
    """The recipe with its retain set widened as ``keep_misaligned`` and ``keep_neighbours`` say, and what was
    added (None when neither is set)."""
    k, misaligned = recipe.keep_neighbours, recipe.keep_misaligned
    if not k and not misaligned:
        return recipe, None
    forget = {norm_prompt(p) for p in recipe.forget_prompts}
    retain = list(recipe.retain_prompts)
    added_misaligned = []
    if misaligned:
        known = {norm_prompt(p) for p in retain}
        for p in recipe.misaligned_prompts:
            if norm_prompt(p) not in known and norm_prompt(p) not in forget:
                added_misaligned.append(p)
                known.add(norm_prompt(p))
    # a retain prompt that is also a forget prompt would be nearest of all: it is never a neighbour
    unique = [p for p in dict.fromkeys(retain + added_misaligned) if norm_prompt(p) not in forget]
    near = None
    if dist.is_main():
        with torch.no_grad():
            near = nearest(family, pipe, recipe.forget_prompts, unique, k, resolution)
    near = dist.broadcast(near)
    out = replace(recipe, retain_prompts=retain + added_misaligned + near)
    return out, {"misaligned_added": added_misaligned, "neighbours": near, "keep_neighbours": k,
                 "keep_misaligned": misaligned}
