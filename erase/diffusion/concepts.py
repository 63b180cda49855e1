"""The history of erasures a pipeline has already had, and the earlier concepts replayed (combining several
concepts in one run is ``combine.py``'s).

``read_history`` reads what an erased pipeline was already erased of (its ``recipe.json``), so that
erasing one more concept from it keeps the earlier ones out of the retain set and the new card and
recipe.json carry the whole history. ``with_replay`` adds the earlier concepts back to the forget set
(their own forget and misaligned prompts, from the history), so that training on the new concept also
holds the earlier erasures in place: without it, a third erasure brought the first concept back
(``scripts/bench_multi.py``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from ..core.errors import UserError
from .combine import check_concepts, combine, norm_prompt, own_steps, parts  # noqa: F401 - re-exported
from .recipes import Recipe, json_kind

def with_replay(recipe: Recipe, earlier: list[dict]) -> Recipe:
    """``recipe`` (one concept or several) plus the concepts erased before, replayed: each earlier concept's
    forget prompts join the forget set, paired with its own misaligned prompts, with its own ``n_forget``
    images (drawn by the model being erased), marked ``"replay": True`` among the parts. A concept erased
    again, and one whose misaligned prompt is now erased (it would be taught to draw it), are not replayed."""
    own = parts(recipe)
    names = {p["concept"] for p in own}
    gone = {norm_prompt(q) for q in recipe.forget_prompts}
    replays: list[dict] = []
    unknown: list[str] = []
    for e in earlier:
        if "parts" not in e:  # written before histories kept the misaligned prompts
            unknown.append(e.get("concept", "?"))
            continue
        for p in e["parts"]:
            if p["concept"] in names or any(norm_prompt(q) in gone for q in p["forget_prompts"]):
                continue  # erased again in this run, with this run's prompts
            if any(norm_prompt(m) in gone for m in p["misaligned_prompts"]):
                print(f"salun: warning: {p['concept']}, erased before, was sent to "
                      f"{p['misaligned_prompts'][0]!r}, which this run erases: it is not replayed, so this run "
                      "may bring it back (audit it)", file=sys.stderr)
                continue
            names.add(p["concept"])
            gone |= {norm_prompt(q) for q in p["forget_prompts"]}
            # a closed-form erasure (UCE) drew no images of it: replay it with as many as this run's concept
            n = p["n_forget"] if p["n_forget"] >= 1 else own[0]["n_forget"]
            replays.append({**p, "n_forget": n, "replay": True})
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


def _salun_card(card: Path) -> bool:
    return card.is_file() and "concept-erasure" in card.read_text(errors="replace")[:600]  # erased_card's tag


def looks_erased(model: str | Path | None) -> bool:
    """A local pipeline folder that salun erased before (its recipe.json, card or mask say so)."""
    if model is None or not Path(model).is_dir():
        return False
    folder = Path(model)
    return (folder / "recipe.json").exists() or _salun_card(folder / "README.md") or (folder / "mask.safetensors").exists()


def check_no_replay(model: str | Path | None) -> None:
    """``--no-replay`` means something only for a model salun erased before."""
    if not looks_erased(model):
        what = ("was never erased by salun (it has no recipe.json history)" if model is not None and Path(model).is_dir()
                else "is not a local folder salun erased (its recipe.json history is read from a local folder)")
        raise UserError(f"--no-replay: {model} {what}, so there is nothing to replay: leave --no-replay out")


def read_history(model: str | None, strict: bool = True) -> list[dict]:
    """The erasures a local pipeline folder has had (from its recipe.json), oldest first; [] for a model
    that was never erased. An erased model missing its card or recipe continues without history, warned.
    A recipe.json whose history is malformed is a ``UserError`` naming it; ``strict=False`` (``--no-replay``:
    nothing of the history is trained on) continues without that history instead, warned."""
    if not looks_erased(model):
        return []
    folder = Path(model)
    rec, card = folder / "recipe.json", folder / "README.md"
    salun_card = _salun_card(card)
    try:
        data = json.loads(rec.read_text(encoding="utf-8")) if rec.is_file() else None
    except (OSError, ValueError, RecursionError):  # ValueError: not UTF-8, or not JSON
        data = None
    if not isinstance(data, dict):
        data = None  # not a recipe.json salun wrote: as good as missing
    if data is None or "recipe" not in data or not salun_card:
        history = data.get("history", []) if data is not None else []
        problem = _history_problem(history)
        if problem:  # said first: a refusal is the one line
            return _broken(rec, problem, strict)
        missing = "recipe.json" if data is None or "recipe" not in data else "model card (README.md)"
        print(f"salun: warning: {model} looks erased but its {missing} is missing or unreadable: continuing "
              "without the history of its earlier erasures (their concepts may enter the retain set)",
              file=sys.stderr)
        return [dict(e) for e in history]
    problem = (_recipe_problem(data["recipe"], data.get("summary", {}), data.get("options", {}))
               or ("history" in data and _history_problem(data["history"])))
    if problem:
        return _broken(rec, problem, strict)
    last = entry(data["recipe"], data.get("summary", {}), data.get("options", {}))
    if "history" not in data:
        return [last]
    history = [dict(e) for e in data["history"]]
    if history and "parts" not in history[-1]:  # an older history: the last erasure's recipe has its prompts
        history[-1]["parts"] = last["parts"]
    return history


def _broken(rec: Path, problem: str, strict: bool) -> list[dict]:
    """A malformed history: refused, or (not ``strict``) left out, warned."""
    if strict:
        raise UserError(f"{rec}: {problem}, so the history of the model's earlier erasures cannot be read: pass "
                        "--no-replay to erase without its history (or restore the recipe.json salun wrote)")
    print(f"salun: warning: {rec}: {problem}: continuing without the history of the model's earlier erasures "
          "(their concepts may enter the retain set, and the new model card will not list them)", file=sys.stderr)
    return []


def _prompts_problem(value: object, where: str) -> str | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        return f"{where} must be a non-empty list of prompts, got {json_kind(value)}"
    return None


def _part_problem(p: object, where: str) -> str | None:
    """What is wrong with one concept of an erasure (what ``with_replay`` and the job read of it), or None."""
    if not isinstance(p, dict):
        return f"{where} must be an object, got {json_kind(p)}"
    for k in ("concept", "forget_prompts", "misaligned_prompts", "n_forget"):
        if k not in p:
            return f"{where} lacks {k!r}"
    if not isinstance(p["concept"], str) or not p["concept"]:
        return f"{where} \"concept\" must be a name, got {json_kind(p['concept'])}"
    n = p["n_forget"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:  # 0: a closed-form erasure (UCE) drew none
        return f"{where} \"n_forget\" must be a whole number of at least 0, got {json.dumps(n)}"
    if p.get("toy") is not None and not isinstance(p["toy"], dict):
        return f"{where} \"toy\" must be an object, got {json_kind(p['toy'])}"
    return (_prompts_problem(p["forget_prompts"], f"{where} \"forget_prompts\"")
            or _prompts_problem(p["misaligned_prompts"], f"{where} \"misaligned_prompts\""))


def _history_problem(history: object) -> str | None:
    """What is wrong with a recipe.json's ``"history"`` (what ``combine``, ``with_replay`` and the card read of
    each erasure), or None. An entry without ``"parts"`` is an older history's: it is read, not replayed."""
    if not isinstance(history, list):
        return f"\"history\" must be a list of erasures, got {json_kind(history)}"
    for i, e in enumerate(history):
        where = f"\"history\" entry {i + 1}"
        if not isinstance(e, dict):
            return f"{where} must be an object, got {json_kind(e)}"
        for k in ("concept", "forget_prompts"):
            if k not in e:
                return f"{where} lacks {k!r}"
        if not isinstance(e["concept"], str) or not e["concept"]:
            return f"{where} \"concept\" must be a name, got {json_kind(e['concept'])}"
        if not isinstance(e["forget_prompts"], list) or not all(isinstance(q, str) for q in e["forget_prompts"]):
            return f"{where} \"forget_prompts\" must be a list of prompts, got {json_kind(e['forget_prompts'])}"
        if not isinstance(e.get("replayed", []), list) or not all(isinstance(c, str) for c in e.get("replayed", [])):
            return f"{where} \"replayed\" must be a list of concepts, got {json_kind(e['replayed'])}"
        if "parts" in e:
            if not isinstance(e["parts"], list) or not e["parts"]:
                return f"{where} \"parts\" must be a non-empty list of concepts, got {json_kind(e['parts'])}"
            for j, p in enumerate(e["parts"]):
                problem = _part_problem(p, f"{where} part {j + 1}")
                if problem:
                    return problem
    return None


def _recipe_problem(recipe: object, summary: object, options: object) -> str | None:
    """What is wrong with a recipe.json's ``"recipe"``, ``"summary"`` and ``"options"`` for ``entry``, or None."""
    for key, value in (("recipe", recipe), ("summary", summary), ("options", options)):
        if not isinstance(value, dict):
            return f"{key!r} must be an object, got {json_kind(value)}"
    if "name" not in recipe:
        return "\"recipe\" lacks its \"name\""
    if not isinstance(recipe["name"], str) or not recipe["name"]:
        return f"\"recipe\" \"name\" must be a name, got {json_kind(recipe['name'])}"
    extra = recipe.get("extra", {})
    if not isinstance(extra, dict):
        return f"\"recipe\" \"extra\" must be an object, got {json_kind(extra)}"
    listed = extra.get("concepts")
    if listed:
        if not isinstance(listed, list):
            return f"\"recipe\" \"extra\" \"concepts\" must be a list of concepts, got {json_kind(listed)}"
        for j, p in enumerate(listed):
            problem = _part_problem(p, f"\"recipe\" concept {j + 1}")
            if problem:
                return problem
        return None
    # one concept: the part entry() makes of the recipe's own keys
    own = {k: recipe[k] for k in ("forget_prompts", "misaligned_prompts", "n_forget") if k in recipe}
    return _part_problem({"concept": recipe["name"], "toy": extra.get("toy"), **own}, "\"recipe\"")


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
