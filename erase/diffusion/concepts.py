"""Several concepts in one erasure, and the history of erasures a pipeline has already had.

``combine`` turns the recipes of several concepts into the one recipe the job trains: the forget
prompts of every concept (each paired with its own misaligned prompt), the union of their retain
prompts less anything an erased concept draws, and the training settings of the first concept. The
forget images are drawn per concept (each its own ``n_forget``), so every concept has its own share
of the forget set and uniform batches sample the concepts evenly.

``read_history`` reads what an erased pipeline was already erased of (its ``recipe.json``), so that
erasing one more concept from it keeps the earlier ones out of the retain set and the new card and
recipe.json carry the whole history. ``with_replay`` adds the earlier concepts back to the forget set
(their own forget and misaligned prompts, from the history), so that training on the new concept also
holds the earlier erasures in place: without it, a third erasure brought the first concept back
(``scripts/bench_multi.py``).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from ..core.errors import UserError
from .sd.recipes import Recipe

# The settings that shape training: a joint run takes the first concept's and says where others differ.
TRAINING = ("alpha", "lr", "batch_size", "guidance_w", "selection", "keep", "gen_steps", "gen_guidance")


def _norm(p: str) -> str:
    return " ".join(p.lower().split())


def check_concepts(recipes: list[Recipe], earlier: list[dict] = ()) -> None:
    """Refuse a concept given twice, and a concept whose misaligned prompt is a forget prompt of a concept
    erased with it or before it (training would teach the model to draw an erased concept)."""
    seen: set[str] = set()
    for r in recipes:
        if r.name in seen:
            raise UserError(f"--concept {r.name!r} is given twice")
        seen.add(r.name)
    erased = {_norm(p): r.name for r in recipes for p in r.forget_prompts}
    erased.update({_norm(p): e["concept"] for e in earlier for p in e.get("forget_prompts", [])})
    for r in recipes:
        for m in r.misaligned_prompts:
            other = erased.get(_norm(m))
            if other is not None and other != r.name:
                when = "erased in this run" if other in seen else "erased from this model before"
                raise UserError(f"{r.name}'s misaligned prompt {m!r} is a forget prompt of {other}, {when}: the "
                                f"model would be taught to draw it again; give {r.name} another misaligned prompt "
                                "(a recipe .json file) or leave one of them out")


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
    gone = {_norm(p) for r in recipes for p in r.forget_prompts}
    gone |= {_norm(p) for e in earlier for p in e.get("forget_prompts", [])}
    retain: list[str] = []
    for r in recipes:
        retain += [p for p in r.retain_prompts if _norm(p) not in gone and p not in retain]
    if len(recipes) == 1:
        return replace(first, retain_prompts=retain) if retain != first.retain_prompts else first
    forget = [p for r in recipes for p in r.forget_prompts]
    # a mask alone needs no misaligned prompts: a concept given without them leaves the list empty
    misaligned = ([r.misaligned_for(p) for r in recipes for p in r.forget_prompts]
                  if all(r.misaligned_prompts for r in recipes) else [])
    parts = [{"concept": r.name, "forget_prompts": r.forget_prompts, "misaligned_prompts": r.misaligned_prompts,
              "n_forget": r.n_forget, "toy": r.extra.get("toy")} for r in recipes]
    extra = {k: v for k, v in first.extra.items() if k not in ("toy", "methods", "methods_tuned", "tuned")}
    extra["concepts"] = parts
    return replace(first, name="+".join(r.name for r in recipes), forget_prompts=forget,
                   misaligned_prompts=misaligned, retain_prompts=retain,
                   description="Several concepts erased together: " + " ".join(
                       f"({i + 1}) {r.name}: {r.description}" for i, r in enumerate(recipes)),
                   n_forget=sum(r.n_forget for r in recipes), n_retain=max(r.n_retain for r in recipes),
                   # one run as long as the longest concept's own: the concepts share every batch
                   steps=max(own_steps(r) for r in recipes), epochs=max(r.epochs for r in recipes),
                   forget_dataset=None, retain_dataset=None, extra=extra)


def with_replay(recipe: Recipe, earlier: list[dict]) -> Recipe:
    """``recipe`` (one concept or several) plus the concepts erased before, replayed: each earlier concept's
    forget prompts join the forget set, paired with its own misaligned prompts, with its own ``n_forget``
    images (drawn by the model being erased), marked ``"replay": True`` among the parts. A concept erased
    again, and one whose misaligned prompt is now erased (it would be taught to draw it), are not replayed."""
    own = parts(recipe)
    names = {p["concept"] for p in own}
    gone = {_norm(q) for q in recipe.forget_prompts}
    replays: list[dict] = []
    unknown: list[str] = []
    for e in earlier:
        if "parts" not in e:  # written before histories kept the misaligned prompts
            unknown.append(e.get("concept", "?"))
            continue
        for p in e["parts"]:
            if p["concept"] in names or any(_norm(q) in gone for q in p["forget_prompts"]):
                continue  # erased again in this run, with this run's prompts
            if any(_norm(m) in gone for m in p["misaligned_prompts"]):
                print(f"salun: warning: {p['concept']}, erased before, was sent to "
                      f"{p['misaligned_prompts'][0]!r}, which this run erases: it is not replayed, so this run "
                      "may bring it back (audit it)", file=sys.stderr)
                continue
            names.add(p["concept"])
            gone |= {_norm(q) for q in p["forget_prompts"]}
            replays.append({**p, "replay": True})
    if unknown:
        print(f"salun: warning: the history does not keep the misaligned prompts of {', '.join(unknown)}: "
              "they are not replayed, so this run may bring them back (audit them)", file=sys.stderr)
    if not replays:
        return recipe
    forget = list(recipe.forget_prompts) + [q for p in replays for q in p["forget_prompts"]]
    # one misaligned prompt per forget prompt, so that misaligned_for pairs each with its own concept's
    misaligned = ([recipe.misaligned_for(q) for q in recipe.forget_prompts] +
                  [p["misaligned_prompts"][i % len(p["misaligned_prompts"])]
                   for p in replays for i in range(len(p["forget_prompts"]))]) if recipe.misaligned_prompts else []
    return replace(recipe, forget_prompts=forget, misaligned_prompts=misaligned, steps=own_steps(recipe),
                   n_forget=recipe.n_forget + sum(p["n_forget"] for p in replays),
                   extra={**recipe.extra, "concepts": own + replays})


def replayed(recipe: Recipe) -> list[str]:
    """The earlier concepts a continual erasure replays."""
    return [p["concept"] for p in parts(recipe) if p.get("replay")]


def own_steps(recipe: Recipe) -> int:
    """The training steps of a run of this recipe alone (its ``steps``, else its epochs over its own forget
    images at its own batch size): a joint or replaying run is as long as its concepts' own runs, not as long
    as epochs over the larger joint forget set would make it."""
    return recipe.steps or math.ceil(recipe.epochs * recipe.n_forget / recipe.batch_size)


def parts(recipe: Recipe) -> list[dict]:
    """The concepts of a (combined) recipe: [{concept, forget_prompts, misaligned_prompts, n_forget, toy}]
    (a replayed earlier concept also has ``"replay": True``)."""
    return recipe.extra.get("concepts") or [{"concept": recipe.name, "forget_prompts": recipe.forget_prompts,
                                             "misaligned_prompts": recipe.misaligned_prompts,
                                             "n_forget": recipe.n_forget, "toy": recipe.extra.get("toy")}]


def read_history(model: str | None) -> list[dict]:
    """The erasures a local pipeline folder has had (from its recipe.json), oldest first; [] for a model
    that was never erased. An erased model missing its card or recipe continues without history, warned."""
    if model is None or not Path(model).is_dir():
        return []
    folder = Path(model)
    rec, card = folder / "recipe.json", folder / "README.md"
    salun_card = card.exists() and "concept-erasure" in card.read_text(errors="replace")[:600]  # erased_card's tag
    erased = rec.exists() or salun_card or (folder / "mask.safetensors").exists()
    if not erased:
        return []
    try:
        data = json.loads(rec.read_text()) if rec.exists() else None
    except ValueError:
        data = None
    if data is None or "recipe" not in data or not salun_card:
        missing = "recipe.json" if data is None or "recipe" not in data else "model card (README.md)"
        print(f"salun: warning: {model} looks erased but its {missing} is missing or unreadable: continuing "
              "without the history of its earlier erasures (their concepts may enter the retain set)",
              file=sys.stderr)
        return data.get("history", []) if isinstance(data, dict) else []
    last = entry(data["recipe"], data.get("summary", {}), data.get("options", {}))
    if "history" not in data:
        return [last]
    history = [dict(e) for e in data["history"]]
    if history and "parts" not in history[-1]:  # an older history: the last erasure's recipe has its prompts
        history[-1]["parts"] = last["parts"]
    return history


def entry(recipe: dict, summary: dict, options: dict) -> dict:
    """One erasure in a pipeline's history: what was erased (each concept's prompts, so that a later erasure
    can replay it), what it replayed, how, from what."""
    ps = recipe.get("extra", {}).get("concepts") or [{
        "concept": recipe["name"], "forget_prompts": recipe["forget_prompts"],
        "misaligned_prompts": recipe["misaligned_prompts"], "n_forget": recipe["n_forget"],
        "toy": recipe.get("extra", {}).get("toy")}]
    own = [p for p in ps if not p.get("replay")]
    return {"concept": recipe["name"], "concepts": [p["concept"] for p in own],
            "forget_prompts": [q for p in own for q in p["forget_prompts"]],
            "parts": [{k: p.get(k) for k in ("concept", "forget_prompts", "misaligned_prompts", "n_forget", "toy")}
                      for p in own],
            "replayed": [p["concept"] for p in ps if p.get("replay")],
            "method": summary.get("method"), "model": options.get("model"), "steps": summary.get("steps")}
