"""Several concepts in one erasure: ``combine`` turns the recipes of several concepts into the one recipe the job
trains: the forget prompts of every concept (each paired with its own misaligned prompt), the union of their
retain prompts less anything an erased concept draws, and the training settings of the first concept. The
forget images are drawn per concept (each its own ``n_forget``), so every concept has its own share of the
forget set and uniform batches sample the concepts evenly. ``parts`` lists a combined recipe's concepts.

Kept free of the recipe module (a combined recipe is made with ``dataclasses.replace``), so that loading a
recipe that lists several concepts can combine them without an import cycle.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core.errors import UserError

if TYPE_CHECKING:
    from .recipes import Recipe

# The settings that shape training: a joint run takes the first concept's and says where others differ.
TRAINING = ("alpha", "lr", "lr_schedule", "lr_warmup_steps", "batch_size", "guidance_w", "selection", "keep", "mask_contrast", "timestep_density",
            "keep_misaligned", "keep_neighbours", "gen_steps", "gen_guidance")


def norm_prompt(p: str) -> str:
    """A prompt as compared with others: lower case, single spaces."""
    return " ".join(p.lower().split())


def prompt_words(p: str) -> set[str]:
    """A prompt's words, lower case, punctuation left out ("A circle, red" -> {"a", "circle", "red"})."""
    return set(re.findall(r"[a-z0-9]+", p.lower()))


def check_concepts(recipes: list[Recipe], earlier: list[dict] = ()) -> None:
    """Refuse a concept given twice (also inside a recipe that lists several), and a concept whose misaligned
    prompt is a forget prompt of a concept erased with it or before it (training would teach the model to
    draw an erased concept)."""
    seen: dict[str, str] = {}  # each concept -> the recipe it came in
    for r in recipes:
        for p in parts(r):
            name = p["concept"]
            if name in seen:
                both = {seen[name], r.name} - {name}
                raise UserError(f"--concept {name!r} is given twice" + (
                    f" (recipe {' and '.join(repr(b) for b in sorted(both))} lists it): erase each concept once"
                    if both else ""))
            seen[name] = r.name
    erased = {norm_prompt(q): p["concept"] for r in recipes for p in parts(r) for q in p["forget_prompts"]}
    erased.update({norm_prompt(q): e["concept"] for e in earlier for q in e.get("forget_prompts", [])})
    for r in recipes:
        for p in parts(r):
            name = p["concept"]
            for m in p["misaligned_prompts"]:
                other = erased.get(norm_prompt(m))
                if other is not None and other != name:
                    when = "erased in this run" if other in seen else "erased from this model before"
                    raise UserError(f"{name}'s misaligned prompt {m!r} is a forget prompt of {other}, {when}: the "
                                    f"model would be taught to draw it again; give {name} another misaligned "
                                    "prompt (a recipe .json file) or leave one of them out")


def combine(recipes: list[Recipe], earlier: list[dict] = ()) -> Recipe:
    """One recipe for every concept in ``recipes`` (one concept: itself, less any earlier erased prompt in
    its retain set). ``earlier``: the history of erasures the model already had."""
    check_concepts(recipes, earlier)
    first = recipes[0]
    if len(recipes) > 1:
        differ = sorted({k for r in recipes[1:] for k in TRAINING if getattr(r, k) != getattr(first, k)})
        if differ:
            print(f"salun: warning: the concepts' recipes differ in {', '.join(differ)}; this run uses "
                  f"{first.name}'s ({', '.join(f'{k} {getattr(first, k)}' for k in differ)}): set them with "
                  "the command's options", file=sys.stderr)
    gone = {norm_prompt(p) for r in recipes for p in r.forget_prompts}
    gone |= {norm_prompt(p) for e in earlier for p in e.get("forget_prompts", [])}
    retain: list[str] = []
    preserve: list[str] = []
    # a concept's preserve prompts name what it keeps, which may be another concept erased in the same run
    # ("a circle that is red" kept by the triangle's recipe): those go, found by the toy shape's word
    erased_words = {p["toy"]["shape"] for r in recipes for p in parts(r) if "shape" in (p.get("toy") or {})}
    erased_words |= {p["toy"]["shape"] for e in earlier for p in e.get("parts", []) if "shape" in (p.get("toy") or {})}
    for r in recipes:
        retain += [p for p in r.retain_prompts if norm_prompt(p) not in gone and p not in retain]
        preserve += [p for p in r.preserve_prompts if norm_prompt(p) not in gone and p not in preserve
                     and not erased_words & prompt_words(p)]
    if len(recipes) == 1:
        changed = {k: v for k, v in (("retain_prompts", retain), ("preserve_prompts", preserve))
                   if v != getattr(first, k)}
        return replace(first, **changed) if changed else first
    forget = [p for r in recipes for p in r.forget_prompts]
    # a mask alone needs no misaligned prompts: a concept given without them leaves the list empty
    misaligned = ([r.misaligned_for(p) for r in recipes for p in r.forget_prompts]
                  if all(r.misaligned_prompts for r in recipes) else [])
    extra = {k: v for k, v in first.extra.items() if k not in ("toy", "methods", "methods_tuned", "tuned")}
    # a recipe that lists several concepts brings each of them: every concept is one part, drawn on its own
    extra["concepts"] = [p for r in recipes for p in parts(r)]
    return replace(first, name="+".join(r.name for r in recipes), forget_prompts=forget,
                   misaligned_prompts=misaligned, retain_prompts=retain, preserve_prompts=preserve,
                   description="Several concepts erased together: " + " ".join(
                       f"({i + 1}) {r.name}: {r.description}" for i, r in enumerate(recipes)),
                   n_forget=sum(r.n_forget for r in recipes), n_retain=max(r.n_retain for r in recipes),
                   # one run as long as the longest concept's own: the concepts share every batch
                   steps=max(own_steps(r) for r in recipes), epochs=max(r.epochs for r in recipes),
                   forget_dataset=None, retain_dataset=None, extra=extra)


def own_steps(recipe: Recipe, n_forget: int | None = None) -> int:
    """The training steps of a run of this recipe (its ``steps``, else its epochs over ``n_forget`` forget images,
    by default its own ``n_forget``, at its own batch size): a joint or replaying run is as long as its concepts'
    own runs, not as long as epochs over the larger joint forget set would make it."""
    n = recipe.n_forget if n_forget is None else n_forget
    return recipe.steps or math.ceil(recipe.epochs * n / recipe.batch_size)


def parts(recipe: Recipe) -> list[dict]:
    """The concepts of a (combined) recipe: [{concept, forget_prompts, misaligned_prompts, n_forget, toy}]
    (a replayed earlier concept also has ``"replay": True``)."""
    return recipe.extra.get("concepts") or [{"concept": recipe.name, "forget_prompts": recipe.forget_prompts,
                                             "misaligned_prompts": recipe.misaligned_prompts,
                                             "n_forget": recipe.n_forget, "toy": recipe.extra.get("toy")}]
