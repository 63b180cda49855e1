#!/usr/bin/env python
"""One erasure benchmark for every method in the same harness, with the base model and Retrain.

    python scripts/bench_erasure.py --concept circle --concept frame --methods all --attack --json PATH
    python scripts/bench_erasure.py --smoke --concept circle --methods salun --json /tmp/smoke.json
    python scripts/bench_erasure.py --model pipelines/toy-sd3 --concept circle --methods all --json PATH

**Models.** ``--model`` (default the toy SD) is the base every method erases; its Retrain is
``pipelines/<model>-retrain-<concept>`` unless ``--retrain`` names one. The methods its family does not serve
(the toy SD3: every one but SalUn and RL) are left out with the family's reason, printed and kept in
``_meta.refused``. The recipes' fixed settings are the toy SD's; the grid below tunes the rest per model.

**Tuning.** Every method gets the same budget of four settings (trained methods: learning rate 1e-4 or 1e-3 x
training length x0.5 or x1 of the recipe's; UCE: preservation scale 0.1, 1, 10 or 100), each scored by its
gap to Retrain on the **tuning split**: its own prompt templates (for the frame, its own trigger phrasings:
``attribute.TUNING_*_TEMPLATES``) and seeds from 5000, so it shares neither prompts nor seeds with the
report; 150 images per forget group and 300 plain images (``erase.diffusion.toy_metrics.SPLITS``). The chosen
setting's model is then measured on the **reported split** (seeds from 1000; 200 images per forget group,
500 / 480 plain images, and for the frame the toy I2P's 320 prompts). A reported row carries only reported
figures, plus the erasure's settings and cost and the tuning gap it was chosen by.

**Figures** (``--json``: ``{concept: {row: {metric: value}}}``; each rate ``k`` with ``k_ci``, its Wilson 95%
interval, and ``n_k``), judged by the toy judge with its "none of these" outcome (``erase/toy/reject.py``):
- shapes: ``forget_rate`` / ``synonym_rate`` / ``heldout_rate`` (images judged the erased shape; a rejected
  image is not), and what the erased prompt draws: ``erased_prompt_acc`` (a valid other shape in the asked
  colour, as Retrain draws), ``erased_prompt_as_target`` (the recipe's misaligned shape), ``_as_other``,
  ``erased_prompt_reject_rate``;
- the frame: ``explicit_rate`` / ``implicit_rate`` / ``heldout_implicit_rate`` / ``i2p_neutral_rate`` and
  ``toy_i2p_count`` on the toy I2P, ``neutral_rate`` on plain prompts, and ``erased_prompt_acc``: the explicit
  and implicit frame prompts must still draw the named shape in the named colour (not rejected);
- retain: ``retain_acc``, ``worst_retain_acc`` (and ``worst_retain_shape``), ``retain_colour_acc``,
  ``retain_reject_rate``; ``fid_retain`` (against fresh drawings) and ``erased_prompt_fid`` (the erased
  prompts' images against Retrain's of the same prompts and seeds), judge-feature FIDs with +-1.96 bootstrap
  standard deviations;
- ``gap_to_retrain``: the one score, the mean |difference| to Retrain over the terms in
  ``toy_metrics.GAP_TERMS`` (rates as they are, FIDs / 50 capped at 1, attack success where measured),
  with ``gap_to_retrain_ci`` (conservative: each term bounded by its two intervals) and ``gap_ties`` (the rows
  whose gap interval overlaps: no difference is called between them);
- ``seconds`` (mask + training, or the closed-form edit), ``trainable_weights``, ``chosen``, ``tuning_gap``;
- with ``--attack``: ``attack_success``, the best success over attacks *and budgets* (as UnlearnDiff counts
  it), with its interval, ``attack_success_by`` {attack: {budget: rate}}, and each attack's positive-control
  verdict in ``_meta.controls`` (the control must be lifted by the attack, not merely start high).
Rows: base, retrain, every method at its chosen setting, SalUn's variants (``VARIANTS``: its own design
choices and retain-preserving ingredients, at SalUn's chosen setting; ``--variant`` picks some), and with
``--tune-ingredients`` each saliency method's second-grid best (``SECOND_GRIDS``: SalUn's ingredients, ANT's
own knobs). ``--out`` keeps the erased models, a cache
keyed by a hash of the code, recipes and judge the figures depend on (older entries are ignored with a
note, never reported) and one before/after image grid per concept.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from erase.core.stats import separated  # noqa: E402

from erase.diffusion.methods import METHODS  # noqa: E402
from erase.diffusion.recipes import load_recipe  # noqa: E402
from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD  # noqa: E402

# Every method gets the same budget: four settings, each scored on the tuning split. Trained methods: the
# learning rate x the training length (x0.5 or x1 of the recipe's steps or epochs); UCE's closed form: four
# preservation scales.
GRID = {"lr": (1e-4, 1e-3), "length": (0.5, 1.0), "preserve-scale": (0.1, 1.0, 10.0, 100.0)}
VARIANTS = {"salun attn2+resnets": {"selection": "attn2+resnets"}, "salun keep 0.3": {"keep": 0.3},
            "salun keep 0.7": {"keep": 0.7},
            # issue 27's first ingredient: the preserve prompts' outputs held to the frozen base's
            "salun distill 1": {"distill": 1.0}, "salun distill 10": {"distill": 10.0},
            "salun forget-t-max 600": {"forget-t-max": 600},
            # the contrastive saliency map: weights the retain images need ranked lower
            "salun contrast 1": {"mask_contrast": 1.0}, "salun contrast 10": {"mask_contrast": 10.0},
            # distill resists the forget term: a stronger forget term beside it, and the combinations
            "salun distill 1 lr 3e-3": {"distill": 1.0, "lr": 3e-3},
            "salun distill 1 length 2": {"distill": 1.0, "length": 2.0},
            "salun distill 1 keep 0.3": {"distill": 1.0, "keep": 0.3},
            "salun distill 1 attn2+resnets": {"distill": 1.0, "selection": "attn2+resnets"},
            "salun distill 1 contrast 1": {"distill": 1.0, "mask_contrast": 1.0},
            # the contrast's trend past 10, and its combinations
            "salun contrast 30": {"mask_contrast": 30.0}, "salun contrast 100": {"mask_contrast": 100.0},
            "salun contrast 10 keep 0.3": {"mask_contrast": 10.0, "keep": 0.3},
            "salun contrast 10 distill 1": {"mask_contrast": 10.0, "distill": 1.0},
            "salun contrast 100 keep 0.3": {"mask_contrast": 100.0, "keep": 0.3},
            # a flow-matching model's own training density (the toy SD3; UNet families have none)
            "salun logit-normal": {"timestep_density": "logit-normal"},
            # a decaying learning rate instead of the recipe's constant one (issue 27's schedule ingredient)
            "salun cosine": {"lr_schedule": "cosine"},
            "salun contrast 100 keep 0.3 cosine": {"mask_contrast": 100.0, "keep": 0.3, "lr_schedule": "cosine"},
            "salun contrast 100 keep 0.3 cosine length 2": {"mask_contrast": 100.0, "keep": 0.3,
                                                             "lr_schedule": "cosine", "length": 2.0},
            # ANT's own knobs (its second grid, as SalUn's ingredients are SalUn's): every weight instead of
            # its heavy hitters, a stronger reversed guidance, fewer kept early steps, larger heavy-hitter views
            "ant every weight": {"heavy-hitters": 0}, "ant eta 3": {"negative-guidance": 3.0},
            "ant early 3": {"early-steps": 3}, "ant keep 0.7": {"keep": 0.7},
            # the fifth candidate each saliency method gets: its best second-grid knob with a cosine rate for
            # twice the steps (SalUn's cosine-50 row, added after it was seen on the reported split; ANT gets
            # the same change to its own best, so that the budgets stay equal)
            "ant every weight cosine length 2": {"heavy-hitters": 0, "lr_schedule": "cosine", "length": 2.0}}
# SalUn's retain-preserving ingredients (issue 27), chosen like any setting: a second budget of five, each at
# SalUn's chosen learning rate and length (the fifth: twice the length, cosine rate) and scored on the tuning
# split beside the paper's map. One is adopted (and shipped by --update-recipes) only when its tuning gap
# interval lies below the paper's.
INGREDIENTS = ("salun contrast 10", "salun contrast 100", "salun contrast 10 keep 0.3",
               "salun contrast 100 keep 0.3", "salun contrast 100 keep 0.3 cosine length 2")
# Each saliency method's second grid under --tune-ingredients: five settings of its own knobs, so that ANT gets
# the nine tuning settings SalUn gets (the lr x length grid, then these); chosen by the same rule.
SECOND_GRIDS = {"salun": INGREDIENTS, "ant": ("ant every weight", "ant eta 3", "ant early 3", "ant keep 0.7",
                                              "ant every weight cosine length 2")}
# What a cached entry depends on: a change to any of these files makes earlier entries stale.
VERSIONED = ("erase/diffusion/toy_metrics.py", "erase/toy/judge.py", "erase/toy/reject.py", "erase/diffusion/toy_quality.py",
             "erase/toy/shapes.py", "erase/toy/attribute.py", "erase/diffusion/loop.py", "erase/diffusion/losses.py",
             "erase/diffusion/job.py", "erase/diffusion/latents.py", "erase/diffusion/saliency.py",
             "erase/diffusion/prepare.py", "erase/diffusion/generate.py", "erase/diffusion/methods",
             "erase/diffusion/unet_family.py", "erase/diffusion/sd/family.py", "erase/diffusion/combine.py",
             "erase/diffusion/recipes.py", "erase/core/sampling.py", "erase/core/mask.py",
             "erase/core/masked_optim.py", "erase/core/lr_schedule.py", "erase/core/stats.py", "prompts/toy.json", "prompts/toy-nudity.json",
             "prompts/toy-i2p.csv", "pipelines/toy-judge/config.json")


ATTACK_VERSIONED = ("erase/audit/attack.py", "erase/audit/attack_checks.py", "erase/attacks")
# What a model of another family also depends on (``--model``): its family's own modules.
FAMILY_VERSIONED = {"sdxl": ("erase/diffusion/sdxl",),
                    "sd3": ("erase/diffusion/sd3", "erase/diffusion/flow.py", "erase/diffusion/flow_family.py"),
                    "flux": ("erase/diffusion/flux", "erase/diffusion/flow.py", "erase/diffusion/flow_family.py")}


def code_version(root: Path = ROOT, files=VERSIONED) -> str:
    """A hash of the code, recipes and judge the figures depend on (``VERSIONED``)."""
    h = hashlib.sha256()
    for name in files:
        p = root / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes() if f.exists() else b"-")
    return h.hexdigest()[:12]


def bench_version(model: Path) -> str:
    """The cache's version: ``code_version()`` for the toy SD (so its caches keep their keys); for another model,
    the code with its family's modules and the model's path, so that one ``--out`` never mixes two models."""
    if model.resolve() == TOY_SD.resolve():
        return code_version()
    from erase.diffusion.family import family_of

    files = VERSIONED + FAMILY_VERSIONED.get(family_of(model).name, ())
    return hashlib.sha256(f"{code_version(files=files)}|{model.resolve()}".encode()).hexdigest()[:12]


def default_retrain(a, concept: str) -> Path:
    """``--retrain CONCEPT=PATH``, else the shipped ``pipelines/<model>-retrain-<concept>`` (the toy SD's:
    ``toy-sd-retrain-circle``; the toy SD3's: ``toy-sd3-retrain-circle``)."""
    return a.retrain.get(concept) or PIPELINES / f"{a.model.name}-retrain-{concept}"


def served_methods(model: Path, methods: list[str]) -> tuple[list[str], dict[str, str]]:
    """The methods the model's family serves, and the refused ones with the family's one-line reason."""
    from erase.core.errors import UserError
    from erase.diffusion.family import family_of

    check = getattr(family_of(model), "check_method", None)
    served, refused = [], {}
    for m in methods:
        try:
            if check is not None:
                check(METHODS[m])
            served.append(m)
        except UserError as e:
            refused[m] = str(e)
    return served, refused


def variant_served(model: Path, name: str) -> bool:
    """Whether the model's family can run this variant (a timestep density only a flow-matching family has)."""
    from erase.diffusion.family import family_of

    density = VARIANTS[name].get("timestep_density")
    return density is None or density in getattr(family_of(model), "timestep_densities", ("uniform",))


def grid_for(method: str) -> list[dict]:
    if METHODS[method].closed_form:
        return [{"preserve-scale": v} for v in GRID["preserve-scale"]]
    return [{"lr": lr, "length": n} for lr in GRID["lr"] for n in GRID["length"]]


def setting_name(method: str, setting: dict) -> str:
    return f"{method} " + " ".join(f"{k}={v:g}" for k, v in setting.items())


class Cache:
    """Results by key in one JSON file, written after each entry: an interrupted benchmark resumes. Keys carry
    the code version; entries of other versions are never reported (they are counted and left in the file)."""

    def __init__(self, path: Path, version: str | None = None):
        self.path, self.version = path, version or code_version()
        self.data = json.loads(path.read_text()) if path.exists() else {}
        stale = sum(1 for k in self.data if not k.startswith(self.version + "|"))
        if stale:
            print(f"note: {stale} cached results in {path} come from other code or recipe versions: ignored")

    def get(self, key: str, make):
        key = f"{self.version}|{key}"
        if key not in self.data:
            value = make()
            # another benchmark may share this cache (separate parts run side by side): keep its entries
            self.data = {**(json.loads(self.path.read_text()) if self.path.exists() else {}), **self.data, key: value}
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)
        return self.data[key]


def erase_one(recipe, method: str, setting: dict, out: Path, work: Path, seed: int, model: Path = TOY_SD) -> dict:
    from erase.diffusion.job import EraseOptions, erase

    (work / "mask.safetensors").unlink(missing_ok=True)  # every run computes its own mask: fair seconds
    options = {k: v for k, v in setting.items() if k in METHODS[method].options}
    fields = {k: v for k, v in setting.items() if k not in options and k != "length"}
    if "length" in setting:  # the second knob: a share of the recipe's training length
        fields.update(recipe.length_fields(setting["length"]))
    r = dataclasses.replace(recipe, **fields)
    summary = erase(EraseOptions(recipe=r, out=out, model=str(model), method=method, method_options=options,
                                 seed=seed, overwrite=True, progress=False, work_dir=work))
    return {"seconds": round(summary["train_seconds"] + summary["mask_seconds"], 1), "steps": summary["steps"],
            "trainable_weights": summary["trainable_weights"], **setting}


def smoke(recipe):
    """The smallest erasure (--smoke): it checks the script works; its figures mean nothing."""
    return dataclasses.replace(recipe, n_forget=2, n_retain=2, steps=2, gen_steps=4, batch_size=2)


def choose_ingredients(tuning: dict, paper: str, candidates: tuple[str, ...] = INGREDIENTS) -> tuple[str, bool]:
    """The ingredient setting with the lowest tuning gap, and whether it replaces the paper's map: only when its
    gap interval lies wholly below the paper's (a tie keeps the paper's SalUn; for ANT's second grid, its first
    grid's choice)."""
    best = min(candidates, key=lambda n: tuning[n]["gap_to_retrain"])
    adopt = (tuning[best]["gap_to_retrain"] < tuning[paper]["gap_to_retrain"]
             and separated(tuning[best]["gap_to_retrain_ci"], tuning[paper]["gap_to_retrain_ci"]))
    return best, adopt


def misaligned_shape(recipe) -> str | None:
    from erase.toy import shapes as S

    words = recipe.misaligned_prompts[0].split()
    return next((s for s in S.SHAPES if s in words), None)


def measure(kind: str, model: Path, a, toy: dict, target, split: str) -> dict:
    """One model's figures on one split (``erase.diffusion.toy_metrics``); on the reported split the frame
    also gets the toy I2P (drawn as ``salun audit nudity --detector toy`` draws it), whose group rates it reports."""
    from erase.diffusion.toy_metrics import frame_metrics, shape_metrics

    if kind == "shape":
        return shape_metrics(model, a.judge, toy["shape"], target, split)
    row = frame_metrics(model, a.judge, split)
    if split == "tune":
        return row
    from erase.diffusion.toy_metrics import toy_i2p_metrics

    return {**row, **toy_i2p_metrics(model, a.judge, limit=a.i2p_limit)}


def attack_column(concept: str, models: dict, retrain: Path, out: Path, a) -> dict:
    """Every row's attack figures from one ``audit attack`` run: {row: {"attack_success": best over budgets
    and attacks, "attack_success_ci", "attack_success_by": {attack: {budget: rate}}}, "_control": verdicts}."""
    from erase.audit.attack import audit_attack
    from erase.core.stats import wilson

    erased = [m for name, m in models.items() if name not in ("base", "retrain")]
    kwargs = {"budgets": a.attack_budgets} if a.attack_budgets else {}
    report = audit_attack([str(m) for m in erased], str(a.model), concept, out, retrain=str(retrain), overwrite=True,
                          **kwargs)
    by_path = {str(Path(m).resolve()): name for name, m in models.items()}
    name_of = {n: by_path.get(str(Path(info["path"]).resolve())) for n, info in report["models"].items()}
    column: dict = {}
    for r in report["results"]:
        row = name_of.get(r["model"])
        if r["attack"] == "none" or row is None or int(r["budget"]) == 0:
            continue
        entry = column.setdefault(row, {"attack_success": -1.0, "attack_success_by": {}})
        entry["attack_success_by"].setdefault(r["attack"], {})[str(r["budget"])] = r["success_rate"]
        if r["success_rate"] > entry["attack_success"]:  # best over budgets and attacks (UnlearnDiff's count)
            n = int(r.get("n_items") or r.get("n") or len(r.get("prompts", [])) or 0)
            entry["attack_success"] = r["success_rate"]
            entry["attack_success_ci"] = list(wilson(r["success_rate"] * n, n)) if n else [0.0, 1.0]
            entry["attack_success_n"] = n
            entry["attack_success_at"] = f"{r['attack']} budget {r['budget']}"
    column["_control"] = report["controls"]
    return column


def before_after_grid(models: dict, prompts: list[str], path: Path) -> None:
    """One row per model, one column per prompt (seed 0): what each method draws, at a glance."""
    from PIL import Image, ImageDraw

    from erase.diffusion.generate import as_uint8, generate
    from erase.diffusion.pipeline import load_pipeline

    cell, label = 64, 150
    sheet = Image.new("RGB", (label + cell * len(prompts), 14 + cell * len(models)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, p in enumerate(prompts):
        draw.text((label + j * cell + 2, 2), p.replace("a ", "")[:10], fill="black")
    for i, (name, model) in enumerate(models.items()):
        imgs = as_uint8(generate(load_pipeline(str(model)), prompts, [0] * len(prompts), progress=False))
        draw.text((4, 14 + i * cell + cell // 2 - 6), name, fill="black")
        for j, im in enumerate(imgs):
            sheet.paste(Image.fromarray(im.transpose(1, 2, 0)).resize((cell, cell), Image.NEAREST),
                        (label + j * cell, 14 + i * cell))
    tmp = path.with_name(path.stem + ".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)


def bench_concept(a, concept: str, methods: list[str], cache: Cache) -> dict:
    from erase.diffusion.toy_metrics import GAP_TERMS, add_erased_prompt_fid, gap_to_retrain

    recipe0 = load_recipe(concept)
    toy = recipe0.extra.get("toy", {})
    kind = "shape" if "shape" in toy else "frame" if "attribute" in toy else None
    if kind is None:
        sys.exit(f"{concept} is not a toy-world recipe")
    target = misaligned_shape(recipe0) if kind == "shape" else None
    retrain = default_retrain(a, concept)
    root = a.out / concept
    tune_split, report_split = ("smoke", "smoke") if a.smoke else ("tune", "report")

    def metrics(model, split):
        """The split's figures (cached, keyed by the code version), with the erased-prompt features kept in an
        .npy file beside the cache."""
        slug = hashlib.sha256(str(Path(model).resolve()).encode()).hexdigest()[:10]
        feats = a.out / "features" / cache.version / f"{concept}-{split}-{Path(model).name}-{slug}.npy"
        key = f"{concept}|{split}|{Path(model).resolve()}"
        if f"{cache.version}|{key}" in cache.data and not feats.exists():
            del cache.data[f"{cache.version}|{key}"]  # the features went missing: measure again

        def make():
            row = measure(kind, model, a, toy, target, split)
            feats.parent.mkdir(parents=True, exist_ok=True)
            np.save(feats, row.pop("features"))
            return row
        row = dict(cache.get(key, make))
        row["features"] = np.load(feats)
        return row

    def score(row: dict, ref: dict, split: str) -> dict:
        add_erased_prompt_fid(row, ref)
        return gap_to_retrain(row, ref, GAP_TERMS[(kind, "report" if split == "smoke" else split)])

    # Without the Retrain model the erasures and their tuning-split figures still run (and are cached);
    # choosing needs the gap to Retrain, so the benchmark stops there and a rerun picks up.
    ref_tune = metrics(retrain, tune_split) if retrain.is_dir() else None
    if ref_tune is not None:
        add_erased_prompt_fid(ref_tune, ref_tune)
    chosen: dict = {}
    tuning: dict = {}
    grid_of = {m: (grid_for(m)[-1:] if a.smoke else grid_for(m)) for m in methods}
    def method_recipe(m: str):
        # the method's fixed toy settings (batch, sampling), if any; the training length the grid scales is the
        # concept's own, never a length chosen by an earlier tuning and shipped in the recipe
        recipe = dataclasses.replace(load_recipe(concept, method=m), steps=recipe0.steps, epochs=recipe0.epochs)
        if m == "salun":  # the paper's map, whatever ingredients the recipe ships (those are tuned beside it)
            recipe = dataclasses.replace(recipe, mask_contrast=recipe0.mask_contrast, keep=recipe0.keep)
        return smoke(recipe) if a.smoke else recipe

    for m in methods:
        recipe = method_recipe(m)
        for setting in grid_of[m]:
            name = setting_name(m, setting)
            out = root / "models" / name.replace(" ", "_")
            info = cache.get(f"{concept}|erase|{name}|smoke={a.smoke}",
                             lambda: erase_one(recipe, m, setting, out, root / ".work", a.seed, a.model))
            row = {**metrics(out, tune_split), **info}
            if ref_tune:
                row.update(score(row, ref_tune, tune_split))
            else:
                row["gap_to_retrain"] = float("nan")
            tuning[name] = {k: v for k, v in row.items() if k != "features"}
            print(f"[tune {concept}] {name:<36} gap {row['gap_to_retrain']:.3f}  retain {row['retain_acc']:.2f}  "
                  f"erased-prompt {row['erased_prompt_acc']:.2f}  {info['seconds']:.0f}s", flush=True)
            if m not in chosen or row["gap_to_retrain"] < tuning[chosen[m]]["gap_to_retrain"]:
                chosen[m] = name
    if ref_tune is None:
        sys.exit(f"no Retrain model for {concept} at {retrain}: the tuning erasures are cached in {a.out}; build "
                 "Retrain (README, 'The toy world') and rerun to choose and report")
    # The report: the chosen models measured again on the reported split. Only its own figures go in a row,
    # with the erasure's settings and cost and the tuning gap it was chosen by (nothing else from tuning).
    full = {"base": metrics(a.model, report_split), "retrain": metrics(retrain, report_split)}
    models = {"base": a.model, "retrain": retrain}
    info_of: dict = {}
    for m in methods:
        name = chosen[m]
        models[m] = root / "models" / name.replace(" ", "_")
        full[m] = metrics(models[m], report_split)
        info_of[m] = {k: tuning[name][k] for k in ("seconds", "steps", "trainable_weights", *grid_of[m][0])}
        info_of[m].update(chosen=name, tuning_gap=tuning[name]["gap_to_retrain"],
                          tuning_gap_ci=tuning[name].get("gap_to_retrain_ci"))
    def variant(name: str) -> tuple[Path, dict]:
        """A method with one of ``VARIANTS`` (named for it: "salun ...", "ant ...") at the method's chosen learning
        rate and length (erased once, cached)."""
        m = name.split(" ", 1)[0]
        lr, length = tuning[chosen[m]]["lr"], tuning[chosen[m]]["length"]
        out = root / "models" / name.replace(" ", "_")
        # SalUn's variants start from the concept's recipe (their cache keys predate the second grids)
        recipe = (smoke(recipe0) if a.smoke else recipe0) if m == "salun" else method_recipe(m)
        info = cache.get(f"{concept}|erase|{name}|lr={lr}|length={length}" + ("|smoke" if a.smoke else ""),
                         lambda: erase_one(recipe, m, {"lr": lr, "length": length, **VARIANTS[name]}, out,
                                           root / ".work", a.seed, a.model))
        return out, info

    second: dict = {}  # each saliency method's second grid (--tune-ingredients)
    for m in (m for m in SECOND_GRIDS if m in methods and a.tune_ingredients):
        first, candidates = chosen[m], SECOND_GRIDS[m]
        for name in candidates:
            out, info = variant(name)
            row = {**metrics(out, tune_split), **info}
            row.update(score(row, ref_tune, tune_split))
            tuning[name] = {k: v for k, v in row.items() if k != "features"}
            print(f"[tune {concept}] {name:<36} gap {row['gap_to_retrain']:.3f}  retain {row['retain_acc']:.2f}  "
                  f"erased-prompt {row['erased_prompt_acc']:.2f}  {info['seconds']:.0f}s", flush=True)
        best, adopt = choose_ingredients(tuning, first, candidates)
        second[m] = {"paper" if m == "salun" else "first": first, "candidates": list(candidates), "best": best,
                     "adopted": adopt, "settings": dict(VARIANTS[best]) if adopt else {},
                     "gap": {n: round(tuning[n]["gap_to_retrain"], 4) for n in (first, *candidates)},
                     "gap_ci": {n: tuning[n]["gap_to_retrain_ci"] for n in (first, *candidates)},
                     "rule": f"lowest tuning gap of the {len(candidates)} candidates, adopted only if its interval "
                             "lies below the " + ("paper map's" if m == "salun" else "first grid's choice's")}
        print(f"[tune {concept}] {m}'s second grid: best {best}, " + ("adopted" if adopt else
                                                                      "not adopted (its interval overlaps)"))
    ingredients = second.get("salun")
    # by default SalUn's variants; another method's (ANT's second grid) when named by --variant
    names = [n for n in VARIANTS if a.variants and not a.smoke
             and (n in a.variant if a.variant else n.startswith("salun "))
             and n.split(" ", 1)[0] in methods and variant_served(a.model, n)]
    for m, grid in second.items():
        if grid["best"] not in names:
            names.append(grid["best"])  # the second grid's best always gets its reported row
    for name in names:
        out, info = variant(name)
        full[name], models[name], info_of[name] = metrics(out, report_split), out, info
        if any(name == grid["best"] for grid in second.values()):
            info_of[name] = {**info, "chosen": name, "tuning_gap": tuning[name]["gap_to_retrain"],
                             "tuning_gap_ci": tuning[name].get("gap_to_retrain_ci")}
    if a.attack:
        column = cache.get(f"{concept}|attack|{code_version(files=ATTACK_VERSIONED)}|" + ",".join(sorted(str(Path(m).resolve()) for m in models.values())),
                           lambda: attack_column(concept, models, retrain, root / "attack", a))
        for name in full:
            full[name].update(column.get(name, {}))
        controls = column["_control"]
        if not all(c.get("passed") for c in controls.values()):
            print(f"warning: an attack failed its positive control: {controls}")
    else:
        controls = None
    rows: dict = {}
    for name, row in full.items():
        row.update(score(row, full["retrain"], report_split))
        row.update(info_of.get(name, {}))
        rows[name] = {k: v for k, v in row.items() if k != "features"}
    compare_rows(rows)
    for name, row in rows.items():
        if "salun" in rows and row.get("seconds") is not None and name != "retrain" and rows["salun"]["seconds"]:
            row["seconds_vs_salun"] = round(row["seconds"] / rows["salun"]["seconds"], 2)
    if kind == "frame":
        base_count = rows["base"]["toy_i2p_count"]
        for row in rows.values():
            row["toy_i2p_cut"] = 1 - row["toy_i2p_count"] / base_count if base_count else None
    prompts = ([f"a red {toy['shape']}", f"a blue {toy['shape']}", "a green square", "a yellow star", "a purple heart"]
               if kind == "shape" else ["a framed red circle", "a blue square in a gallery", "a red circle",
                                        "a yellow star", "a green heart"])
    before_after_grid(models, prompts, root / "grid.png")
    return {"rows": rows, "tuning": tuning, "chosen": chosen, "grid": str(root / "grid.png"), "controls": controls,
            "version": cache.version, "splits": {"tune": tune_split, "report": report_split},
            "ingredients": ingredients, "second_grids": {m: g for m, g in second.items() if m != "salun"} or None}


def compare_rows(rows: dict) -> None:
    """Each erased row's ``gap_ties`` (the rows whose gap interval overlaps its own: a difference is called only
    when the intervals separate) and ``gap_below_base``."""
    base_gap = rows["base"]["gap_to_retrain_ci"]
    for name, row in rows.items():
        if name in ("base", "retrain"):
            continue
        row["gap_ties"] = sorted(o for o, r in rows.items() if o not in (name, "base", "retrain")
                                 and not separated(row["gap_to_retrain_ci"], r["gap_to_retrain_ci"]))
        row["gap_below_base"] = separated(row["gap_to_retrain_ci"], base_gap) and \
            row["gap_to_retrain"] < rows["base"]["gap_to_retrain"]


def add_attack(a, concept: str, report: dict, cache: Cache) -> dict:
    """An earlier run's reported rows (``report``: one concept of its ``--json``) with the attack column added:
    the models it chose, kept in ``--out``, are attacked, and each row's gap to Retrain is computed again with
    the attack term; nothing else is measured again. ``_meta.attack`` records the attack code's version and
    this command beside the earlier run's own version."""
    from erase.diffusion.toy_metrics import GAP_TERMS, gap_to_retrain

    meta = report["_meta"]
    rows = {k: dict(v) for k, v in report.items() if k != "_meta"}
    kind = "shape" if "forget_rate" in rows["base"] else "frame"
    retrain = default_retrain(a, concept)
    root = a.out / concept
    models: dict = {"base": a.model, "retrain": retrain}
    for name in rows:
        if name in ("base", "retrain"):
            continue
        models[name] = root / "models" / (meta["chosen"].get(name) or name).replace(" ", "_")
    missing = [str(m) for m in models.values() if not Path(m).is_dir()]
    if missing:
        sys.exit(f"--add-attack: the earlier run's models are not in {root / 'models'} (first missing: {missing[0]}); "
                 "give the --out that run used")
    version = code_version(files=ATTACK_VERSIONED)
    column = cache.get(f"{concept}|attack|{version}|" + ",".join(sorted(str(Path(m).resolve())
                                                                        for m in models.values())),
                       lambda: attack_column(concept, models, retrain, root / "attack", a))
    for name, row in rows.items():
        row.update(column.get(name, {}))
    for row in rows.values():
        row.update(gap_to_retrain(row, rows["retrain"], GAP_TERMS[(kind, "report")]))
    compare_rows(rows)
    controls = column["_control"]
    if not all(c.get("passed") for c in controls.values()):
        print(f"warning: an attack failed its positive control: {controls}")
    command = "python scripts/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    return {**rows, "_meta": {**meta, "controls": controls,
                              "attack": {"version": version, "command": command, "under_load": a.under_load}}}


def update_recipe(concept: str, chosen: dict, tuning: dict, ingredients: dict | None = None) -> None:
    """Ship each method's chosen setting for this toy concept in its recipe (``"methods"``), beside the
    fixed ones already there (``load_recipe(concept, method=m)`` applies them); with ``ingredients`` (from
    ``--tune-ingredients``), SalUn's adopted ingredient (mask contrast, keep, rate schedule, length), or the paper's
    map when none was."""
    from erase.core.atomic import write_text_atomic
    from erase.diffusion.recipes import available, load_recipe as load

    path = available()[concept]
    raw = json.loads(path.read_text())
    r = raw["recipes"][concept]
    methods = r.setdefault("methods", {})
    for m, name in chosen.items():
        t = tuning[name]
        if "preserve-scale" in t:
            methods.setdefault(m, {})["preserve-scale"] = t["preserve-scale"]
            continue
        methods.setdefault(m, {})["lr"] = t["lr"]
        base = load(concept)  # the concept's own length, the one the grid scaled
        for k in ("steps", "epochs"):
            methods[m].pop(k, None)
        if t["length"] != 1.0:  # the chosen training length, in the unit the recipe counts it in
            methods[m].update(base.length_fields(t["length"]))
    r["methods_tuned"] = {"how": "python scripts/bench_erasure.py --concept " + concept + " --methods all "
                          "--update-recipes: lowest gap to Retrain on the tuning split (its own templates, seeds "
                          "from 5000), the same four settings for every method", "grid": GRID,
                          "gap": {**r.get("methods_tuned", {}).get("gap", {}),  # a run of some methods only
                                  **{m: round(tuning[n]["gap_to_retrain"], 4) for m, n in chosen.items()}}}
    if ingredients is not None and "salun" in methods:
        for k in ("mask_contrast", "keep", "lr_schedule"):
            methods["salun"].pop(k, None)
        settings = dict(ingredients["settings"])
        if "length" in settings:  # an ingredient's own training length replaces the lr x length grid's
            for k in ("steps", "epochs"):
                methods["salun"].pop(k, None)
            methods["salun"].update(load(concept).length_fields(settings.pop("length")))
        methods["salun"].update(settings)
        r["methods_tuned"]["salun_ingredients"] = {k: ingredients[k] for k in ("candidates", "best", "adopted",
                                                                                "gap", "rule")}
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")
    print(f"wrote the chosen settings into {path}")


def print_table(concept: str, rows: dict) -> None:
    shape = "forget_rate" in rows["base"]
    cols = (("forget_rate", "forget"), ("synonym_rate", "synonym"), ("heldout_rate", "held-out")) if shape else \
        (("explicit_rate", "explicit"), ("implicit_rate", "implicit"), ("heldout_implicit_rate", "held-out"),
         ("neutral_rate", "neutral"))
    cols += (("erased_prompt_acc", "erased-p"), ("erased_prompt_reject_rate", "reject"), ("retain_acc", "retain"),
             ("worst_retain_acc", "worst"))
    attack = any("attack_success" in r for r in rows.values())
    print(f"\nconcept {concept}")
    print(f"{'row':<22}" + "".join(f"{h:>10}" for _, h in cols) + f"{'FID':>7}{'FID-e':>7}{'gap':>7}{'gap 95%':>15}"
          + f"{'s':>7}" + (f"{'attack':>8}" if attack else ""))
    for name, r in rows.items():
        ci = r["gap_to_retrain_ci"]
        print(f"{name:<22}" + "".join(f"{r[k]:>10.1%}" if r.get(k) is not None else f"{'-':>10}" for k, _ in cols)
              + f"{r['fid_retain']:>7.2f}{r['erased_prompt_fid']:>7.1f}{r['gap_to_retrain']:>7.3f}"
              + f"{f'[{ci[0]:.3f}, {ci[1]:.3f}]':>15}"
              + (f"{r['seconds']:>7.1f}" if r.get("seconds") is not None else f"{'-':>7}")
              + (f"{r['attack_success']:>8.1%}" if "attack_success" in r else ""))


def shown(path: Path) -> str:
    """A model path as the tables name it: relative to the repository when inside it."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", action="append", default=None, help="a toy recipe: circle (default), frame, ...")
    p.add_argument("--methods", default="all", help=f"all, or a comma list of {', '.join(METHODS)}")
    p.add_argument("--model", type=Path, default=TOY_SD,
                   help="the base model (default %(default)s; e.g. pipelines/toy-sd3): every method erases it, with "
                        "the same grid, splits and judge; methods its family does not serve are left out by name")
    p.add_argument("--retrain", action="append", default=[], metavar="CONCEPT=PATH",
                   help="a Retrain model (default pipelines/<model>-retrain-<concept>, e.g. toy-sd-retrain-circle)")
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-variants", dest="variants", action="store_false",
                   help="leave out SalUn's variants (selection, keep, distill, contrast, ...)")
    p.add_argument("--variant", action="append", default=None, choices=list(VARIANTS),
                   help="run only these of the variants (SalUn's, or ANT's second grid; each needs its method in --methods; "
                        "repeatable; default: all of SalUn's)")
    p.add_argument("--tune-ingredients", action="store_true",
                   help="a second grid of five settings for each saliency method, at its chosen lr and length, "
                        "on the tuning split: SalUn's retain-preserving ingredients (mask contrast 10 or 100, with "
                        "or without keep 0.3; contrast 100 keep 0.3 with a cosine rate for twice the steps) and "
                        "ANT's own knobs (every weight, eta 3, 3 early steps, keep 0.7; every weight with a cosine "
                        "rate for twice the steps); "
                        "each best gets a reported row, and --update-recipes ships SalUn's only if its gap interval "
                        "lies below the paper map's")
    p.add_argument("--attack", action="store_true",
                   help="add the attack_success column: one `salun audit attack` over every row (its positive "
                        "control must be lifted by each attack; success is the best over budgets)")
    p.add_argument("--add-attack", action="store_true",
                   help="add the attack column to an earlier run's --json without measuring the rest again: the "
                        "models it chose (kept in --out) are attacked and each gap is computed again with the "
                        "attack term; the JSON is rewritten in place")
    p.add_argument("--attack-budgets", type=int, nargs="+", default=None, help="the attack audit's budgets")
    p.add_argument("--smoke", action="store_true",
                   help="the smallest run: one setting per method, a 2-step erasure, a handful of images per figure "
                        "(checks the script works; its figures mean nothing)")
    p.add_argument("--under-load", action="store_true",
                   help="say in the JSON that other jobs shared the machine: its seconds are then not cost figures")
    p.add_argument("--i2p-limit", type=int, default=None, help="use only the first N toy I2P prompts (smoke runs)")
    p.add_argument("--out", type=Path, default=Path("bench-erasure"),
                   help="erased models, the resumable cache and the image grids (default %(default)s)")
    p.add_argument("--json", type=Path, default=None,
                   help="the reported rows per concept (written after each concept); the tuning split's rows go "
                        "to <stem>.tuning.json")
    p.add_argument("--update-recipes", action="store_true",
                   help="write each method's chosen setting into the concept's recipe (prompts/*.json)")
    a = p.parse_args()
    methods = list(METHODS) if a.methods == "all" else a.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
    if not (a.model / "model_index.json").is_file():
        p.error(f"--model {a.model}: not a pipeline folder (no model_index.json)")
    methods, refused = served_methods(a.model, methods)
    for m, why in refused.items():
        if a.methods != "all":
            p.error(why)
        print(f"left out: {why}")
    for name in VARIANTS:
        if not variant_served(a.model, name) and a.variants and (not a.variant or name in a.variant):
            if a.variant:
                p.error(f"--variant {name!r}: {a.model}'s family draws uniform timesteps only")
            print(f"left out: the variant {name!r} (this family draws uniform timesteps only)")
    for name in a.variant or []:
        if name.split(" ", 1)[0] not in methods:
            p.error(f"--variant {name!r}: --methods does not run {name.split(' ', 1)[0]}")
    if a.update_recipes and a.model.resolve() != TOY_SD.resolve():
        p.error("--update-recipes writes the toy SD's tuned settings into prompts/*.json; another --model's "
                "chosen settings stay in its --json")
    if any("=" not in item for item in a.retrain):
        p.error("--retrain takes CONCEPT=PATH, e.g. circle=pipelines/toy-sd-retrain-circle")
    a.retrain = dict(item.split("=", 1) for item in a.retrain)
    a.retrain = {k: Path(v) for k, v in a.retrain.items()}
    if a.smoke and a.i2p_limit is None:
        a.i2p_limit = 8
    a.out.mkdir(parents=True, exist_ok=True)
    cache = Cache(a.out / "cache.json", bench_version(a.model))
    t0 = time.time()
    if a.add_attack:
        if a.json is None or not a.json.exists():
            p.error("--add-attack needs --json naming an earlier run's figures")
        from erase.core.atomic import write_text_atomic

        data = json.loads(a.json.read_text())
        for concept in a.concept or ["circle"]:
            if concept not in data:
                p.error(f"{a.json} has no figures for {concept}")
            data[concept] = add_attack(a, concept, data[concept], cache)
            print_table(concept, {k: v for k, v in data[concept].items() if k != "_meta"})
            write_text_atomic(a.json, json.dumps(data, indent=2))
        print(f"\n{time.time() - t0:.0f} s")
        return
    results = {}
    for concept in a.concept or ["circle"]:
        results[concept] = bench_concept(a, concept, methods, cache)
        print_table(concept, results[concept]["rows"])
        if a.update_recipes and not a.smoke:
            update_recipe(concept, results[concept]["chosen"], results[concept]["tuning"],
                          results[concept]["ingredients"])
        if a.json:
            from erase.core.atomic import write_text_atomic

            meta = {"version": cache.version, "under_load": a.under_load, "model": shown(a.model), "refused": refused, "command": "python scripts/" + " ".join([Path(sys.argv[0]).name,
                                                                                     *sys.argv[1:]])}
            write_text_atomic(a.json, json.dumps({**{c: {**r["rows"], "_meta": {**meta, "controls": r["controls"],
                                                                               "chosen": r["chosen"],
                                                                               "ingredients": r["ingredients"],
                                                                               "second_grids": r["second_grids"]}}
                                                     for c, r in results.items()}}, indent=2))
            write_text_atomic(a.json.with_name(a.json.stem + ".tuning.json"), json.dumps(
                {c: {"tuning": r["tuning"], "chosen": r["chosen"], "_meta": meta} for c, r in results.items()},
                indent=2))
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
