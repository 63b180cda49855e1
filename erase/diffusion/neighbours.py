"""Neighbours kept by name: what an erasure is most likely to take with it gets a larger share of the retain set.

Two ingredients of the retain set (issue 27), each a recipe setting, measured one at a time:

- ``keep_misaligned``: the misaligned prompts join the retain prompts. They name where the forget loss sends the
  erased concept (circle -> "a red square"), the first place collateral lands; their images are drawn by the
  model being erased, like every retain image, so training keeps what that prompt drew before.
- ``keep_neighbours`` = K: the K retain prompts nearest the forget prompts by the model's own text encoder are
  listed once more, so their images take twice a plain retain prompt's share. Nearness: the cosine between the
  prompts' conditions (the denoiser's cross-attention input, every token, centred on the mean over the forget
  and retain prompts so that what every prompt shares does not count), the best over the forget prompts.

Both change only ``recipe.retain_prompts``, so the training key, the mask key (a contrastive mask) and
recipe.json follow them; ``choose`` says what it added, for the card.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .combine import norm_prompt
from .recipes import Recipe


def nearest(family, pipe, forget: list[str], candidates: list[str], k: int, resolution: int) -> list[str]:
    """The ``k`` prompts of ``candidates`` nearest to any of ``forget`` (ties: the earlier candidate), nearest
    first."""
    if k <= 0 or not candidates:
        return []
    pool = list(dict.fromkeys([*forget, *candidates]))
    cond = family.encode_prompts(pipe, pool, resolution)
    states = cond.get("encoder_hidden_states", next(iter(cond.values())))
    v = states.float().reshape(len(pool), -1)
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
    unique = list(dict.fromkeys(retain + added_misaligned))
    with torch.no_grad():
        near = nearest(family, pipe, recipe.forget_prompts, unique, k, resolution)
    out = replace(recipe, retain_prompts=retain + added_misaligned + near)
    return out, {"misaligned_added": added_misaligned, "neighbours": near, "keep_neighbours": k,
                 "keep_misaligned": misaligned}
