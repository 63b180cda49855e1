#!/usr/bin/env python
"""Several concepts: erased together in one run, and one after another from an erased model.

    python scripts/bench_multi.py --json bench_multi.json --out bench-multi
    python scripts/bench_multi.py --smoke --json /tmp/multi.json --out /tmp/multi   # seconds: the path only
    python scripts/bench_multi.py --skip joint,singles,tune,masks,uce \
        --chains continual_contrast,continual_neighbours --merge --json docs/bench_multi.json --out bench-multi

On the toy SD (every figure from the toy judge, reported split: seeds from 1000):
- **joint**: ``salun erase --concept A --concept B ...`` for 1, 2 and 4 shapes (circle; circle, triangle;
  circle, triangle, star, cross). The four concepts' recipes send each shape to a shape that stays
  (circle, triangle -> square; star, cross -> heart), written to ``<out>/recipes`` and used by every run,
  single or joint, so the runs differ only in what they erase together.
- **singles**: each of the four shapes alone, for the cost: the joint run's wall time against the sum of
  the single runs' (each whole run: drawing, mask, training, export; a fresh work folder every time).
- **continual**: circle, then triangle from that model, then cross from that one, each step measured on
  every shape erased so far; with the joint runs' recipes (``continual``) and with the shipped recipes of
  ``prompts/toy.json`` (``continual_shipped``: triangle -> star, cross -> heart); each chain with the
  earlier concepts replayed (the default) and without (``*_no_replay``: ``salun erase --no-replay``); and, when
  ``--chains`` names them, the replayed chain with SalUn's retain-preserving ingredients: ``continual_contrast``
  (the contrastive mask the frame recipe ships: ``--mask-contrast 100 --keep 0.3``) and ``continual_neighbours``
  (that, with ``--keep-neighbours 5``; ``--keep-misaligned`` would add nothing, as the toy recipes' retain prompts
  already hold every misaligned prompt).
- **tune**: the third continual step with the retain loss weighted 0.5 (the recipe's), 1 or 2 and the mask
  keeping 0.5 (the recipe's) or 0.3, chosen on the tuning split (seeds from 5000) and measured once on the
  reported split.
- **attribute**: the toy attribute (the frame, the toy world's nudity) with circle in one run, and erased
  third, after circle and triangle (the replay chain's second model; with ``--chains`` naming the ingredient
  chains, also after theirs, the neighbours chain's frame step keeping its neighbours too); the frame's rate per
  phrasing group.
- **masks**: the four shapes' own masks (no training): each pair's overlap (shared / either) and the
  union's size against the joint mask's.
- **uce**: UCE's closed-form edit of the same four shapes, for the time against SalUn's joint run.

Per row (``--json``): ``forget_rate`` {shape: share still drawn as the shape}, ``synonym_rate`` and
``heldout_rate`` per shape, ``retain_acc`` over the shapes none of the erased ones is (and the base's on
the same shapes, ``retain_drop``), ``fid_retain`` (judge features, against fresh drawings), ``seconds``;
what the erased prompts draw per shape (``erased_prompt_acc``: another shape in the asked colour, as Retrain
would; ``erased_prompt_reject_rate``: none of the shapes) and ``retain_reject_rate``; every rate with a 95%
Wilson interval beside it (``<key>_ci``). The judge must have its "none of these" outcome (a rebuilt toy world).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_erasure import Cache  # noqa: E402

from erase.toy import TOY_JUDGE, TOY_SD  # noqa: E402

SETS = {1: ["circle"], 2: ["circle", "triangle"], 4: ["circle", "triangle", "star", "cross"]}
SENT_TO = {"circle": "square", "triangle": "square", "star": "heart", "cross": "heart"}
CONTINUAL = ["circle", "triangle", "cross"]
# SalUn's retain-preserving ingredients (issue 27) in the replayed chain: run when --chains names them
CONTRAST = {"mask_contrast": 100.0, "keep": 0.3}
# (--keep-misaligned adds nothing here: the toy recipes' retain prompts already hold every misaligned prompt)
NEIGHBOURS = {"keep_neighbours": 5}
# --smoke (set by main): every erasure draws 2 + 2 images in 5 sampling steps and trains 1 step; the rates are
# read from one colour's images in 5 sampling steps
TINY: dict = {}
TINY_RATES: dict = {}


def write_recipes(folder: Path) -> dict[str, Path]:
    """The four shapes' toy recipes, each sent to a shape no joint run erases."""
    raw = json.loads((Path(__file__).resolve().parents[1] / "prompts" / "toy.json").read_text())["recipes"]
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for shape, target in SENT_TO.items():
        r = {k: v for k, v in raw[shape].items() if k not in ("methods", "methods_tuned")}
        r["misaligned_prompts"] = [p.replace(shape, target) for p in r["forget_prompts"]]
        r["description"] = f"Toy world: erase the shape '{shape}'; misaligned prompt: the same colour, '{target}'."
        r["name"] = shape
        path = folder / f"{shape}.json"
        path.write_text(json.dumps(r, indent=1))
        out[shape] = path
    return out


def run_erase(concepts: list, out: Path, model: str | None = None, method: str = "salun", overrides: dict | None = None,
              **kw) -> dict:
    """One whole `salun erase` job (a fresh work folder: the wall time includes drawing the images)."""
    from erase.diffusion.concepts import combine
    from erase.diffusion.job import EraseOptions, erase
    from erase.diffusion.recipes import load_recipe

    recipes = [load_recipe(str(c), method=method, **{**TINY, **(overrides or {})}) for c in concepts]
    recipe = combine(recipes) if len(recipes) > 1 else recipes[0]
    work = out.with_name("." + out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.time()
    if TINY and method != "uce":
        kw.setdefault("steps", 1)
    s = erase(EraseOptions(recipe=recipe, out=out, model=model or str(TOY_SD), method=method, overwrite=True,
                           progress=False, work_dir=work, **kw))
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": round(time.time() - t0, 1), "steps": s["steps"], "n_forget": s["n_forget"],
            "train_seconds": s["train_seconds"], "mask_seconds": s["mask_seconds"], "mask": s.get("mask"),
            "recipe": {k: getattr(recipe, k) for k in ("lr", "lr_schedule", "alpha", "batch_size", "keep",
                                                       "mask_contrast", "keep_misaligned", "keep_neighbours")}}


def measure(model, erased: list[str], per_colour: int, retain_per_pair: int, seed: int = 1000) -> dict:
    """The rates of ``erased`` and the retain figures; ``seed`` 1000: the reported split, 5000: tuning."""
    from erase.core.fid import frechet_distance, judge_features
    from erase.diffusion.generate import as_uint8
    from erase.toy import shapes as S
    from erase.toy.judge import load_judge
    from erase.diffusion.toy_quality import multi_erasure_rates

    images: dict = {}
    r = multi_erasure_rates(str(model), TOY_JUDGE, erased, per_colour=per_colour, retain_per_pair=retain_per_pair,
                            images=images, seed=seed, **TINY_RATES)
    retain = images["retain"][2]
    ref = S.draw_set(len(retain), seed=4242 + seed - 1000, shapes=[s for s in S.SHAPES if s not in erased])
    j = load_judge(TOY_JUDGE)
    fid = frechet_distance(judge_features(j, as_uint8(retain).transpose(0, 2, 3, 1)), judge_features(j, ref.images))
    pc = r["per_concept"]
    per_shape = ("forget_rate", "synonym_rate", "heldout_rate", "erased_prompt_acc", "erased_prompt_reject_rate",
                 "erased_prompt_as_other")
    out = {k: {s: pc[s][k] for s in erased} for k in per_shape}
    out |= {f"{k}_ci": {s: pc[s][f"{k}_ci"] for s in erased} for k in per_shape}
    return out | {k: r[k] for k in ("retain_acc", "retain_acc_ci", "retain_per_shape", "retain_colour_acc", "n_retain",
                                    "retain_reject_rate", "retain_reject_rate_ci")} | {"fid_retain": fid}


def read_as(model, shape: str, per_colour: int = 4) -> dict:
    """What the judge reads ``shape``'s plain prompts as ({shape or "none": count}, seeds from 1000; "none": the
    judge's reject outcome)."""
    from erase.diffusion.generate import generate
    from erase.diffusion.pipeline import load_pipeline
    from erase.toy import shapes as S
    from erase.toy.judge import judge_images, load_judge
    from erase.diffusion.toy_quality import concept_prompts

    prompts, seeds, _, _ = concept_prompts([shape], list(S.COLOURS), per_colour, seed=1000)
    j = judge_images(load_judge(TOY_JUDGE), generate(load_pipeline(str(model)), prompts, seeds, progress=False))
    shapes = list(S.SHAPES)
    names = [shapes[i] if not r else "none" for i, r in zip(j["shape"].tolist(), j["reject"].tolist())]
    return {n: names.count(n) for n in sorted(set(names))}


def measure_attribute(model, per_pair: int) -> dict:
    """The frame's rate for its explicit, implicit and held-out implicit phrasings (every shape x colour,
    ``per_pair`` seeds each; the judge's frame detector)."""
    from erase.diffusion.pipeline import load_pipeline
    from erase.toy import shapes as S
    from erase.toy.judge import load_judge
    from erase.diffusion.toy_quality import attribute_rates

    rates = attribute_rates(load_pipeline(str(model)), load_judge(TOY_JUDGE), list(S.SHAPES), list(S.COLOURS),
                            per_pair=per_pair, seed=1000)
    return ({f"{g}_rate": v["rate"] for g, v in rates.items()} | {f"{g}_rate_ci": v["rate_ci"] for g, v in rates.items()}
            | {"n_per_group": rates["explicit"]["n"]})


def concept_masks(recipes: dict[str, Path], work: Path) -> dict:
    """The four shapes' own masks and the joint one, from the same drawn images: overlap and sizes."""
    from erase.diffusion.concepts import combine
    from erase.diffusion.job import EraseOptions
    from erase.diffusion.latents import TextBank, image_latents
    from erase.diffusion.prepare import family_of_pipe
    from erase.diffusion.saliency import mask_for, per_concept_mask
    from erase.diffusion.pipeline import load_pipeline
    from erase.diffusion.recipes import load_recipe

    recipe = combine([load_recipe(str(recipes[s]), **TINY) for s in SETS[4]])
    pipe = load_pipeline(str(TOY_SD))
    res = pipe.unet.config.sample_size * pipe.vae_scale_factor
    mean, std, caps, _ = image_latents(pipe, recipe, EraseOptions(recipe=recipe, out=work / "x"), work, "forget", res)
    bank = TextBank(family_of_pipe(pipe), pipe, caps, pipe.device, res)
    t0 = time.time()
    union = per_concept_mask(pipe, recipe, mean, std, caps, bank, 0, progress=False, resolution=res)
    per_seconds = time.time() - t0
    joint = mask_for(pipe, recipe, mean, std, caps, bank, 0, progress=False, resolution=res)
    both = sum(int((union.masks[n] & joint.masks[n]).sum()) for n in joint.masks)
    return {"overlap": union.meta["overlap"], "per_concept_kept": union.meta["per_concept_kept"],
            "union_kept": union.kept, "joint_kept": joint.kept, "total": joint.total,
            "union_share_of_joint": round(both / max(1, joint.kept), 4), "per_concept_seconds": round(per_seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench-multi"), help="models, recipes and the resumable cache")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--per-colour", type=int, default=20, help="images per colour for each rate (default 20: 100 "
                   "per rate)")
    p.add_argument("--retain-per-pair", type=int, default=4, help="retain images per shape x colour (default 4)")
    p.add_argument("--per-pair", type=int, default=2, help="frame images per shape x colour and phrasing group "
                   "(default 2: 60 per group)")
    p.add_argument("--skip", default="", help="comma list of parts to leave out: joint,singles,continual,tune,attribute,masks,uce")
    p.add_argument("--chains", default=None, help="a comma list of the chains to run (continual: continual,continual_no_replay,continual_shipped,"
                   "continual_shipped_no_replay, and SalUn's retain-preserving ingredients: continual_contrast, "
                   "continual_neighbours, which also name the attribute's frame erased third after them; attribute: joint,"
                   "joint_frame_first,continual,continual_frame_no_replay; default all but the "
                   "ingredient chains)")
    p.add_argument("--retime", action="store_true",
                   help="run the joint and single erasures once more, one after another with nothing else on the "
                        "machine, for the time comparison (the first runs are kept for the rates)")
    p.add_argument("--smoke", action="store_true",
                   help="the smallest run: the one-concept joint run and the masks only, each erasure on 2 + 2 "
                        "images for 1 step, 1 image per colour and rate: proves the path, measures nothing")
    p.add_argument("--merge", action="store_true",
                   help="keep an earlier --json's parts that this run leaves out (--skip, --chains): the parts measured "
                        "replace theirs, and its 'added' says by which command")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    a = p.parse_args()
    if a.smoke and a.merge:
        p.error("--merge writes into an earlier run's figures, and a --smoke run measures nothing")
    if a.smoke:
        TINY.update(n_forget=2, n_retain=2, batch_size=2, gen_steps=5)
        TINY_RATES.update(colours=["red"], steps=5)
        a.per_colour, a.retain_per_pair, a.per_pair = 1, 1, 1
        a.skip = ",".join(sorted(set(filter(None, a.skip.split(","))) | {"singles", "continual", "tune", "attribute",
                                                                          "uce"}))
    a.out.mkdir(parents=True, exist_ok=True)
    cache = Cache(a.out / "cache.json")
    skip = set(filter(None, a.skip.split(",")))
    recipes = write_recipes(a.out / "recipes")
    models = a.out / "models"
    ev = lambda model, erased: measure(model, erased, a.per_colour, a.retain_per_pair)  # noqa: E731
    res: dict = {"joint": {}, "singles": {}, "base": {}}

    def base_row(erased):
        key = ",".join(erased)
        res["base"][key] = cache.get(f"base|{key}", lambda: ev(TOY_SD, erased))
        return res["base"][key]

    for n, erased in SETS.items():
        if "joint" in skip or (a.smoke and n > 1):  # the smoke run: one concept
            break
        out = models / f"joint{n}"
        run = cache.get(f"joint{n}|run", lambda: run_erase([recipes[s] for s in erased], out))
        row = {**run, **cache.get(f"joint{n}|eval", lambda: ev(out, erased))}
        row["retain_drop"] = base_row(erased)["retain_acc"] - row["retain_acc"]
        res["joint"][n] = row
        print(f"joint {n}: forget {row['forget_rate']}, retain {row['retain_acc']:.1%} (drop "
              f"{row['retain_drop']:+.1%}), FID {row['fid_retain']:.2f}, {row['seconds']} s", flush=True)
    if "singles" not in skip:
        for s in SETS[4]:
            out = models / f"single-{s}"
            res["singles"][s] = cache.get(f"single|{s}|run", lambda: run_erase([recipes[s]], out))
            print(f"single {s}: {res['singles'][s]['seconds']} s", flush=True)
        for n, erased in SETS.items():
            total = sum(res["singles"][s]["seconds"] for s in erased)
            res["joint"][n]["sum_of_singles_seconds"] = round(total, 1)
            res["joint"][n]["joint_vs_singles"] = round(res["joint"][n]["seconds"] / total, 3)
    if "continual" not in skip:
        # with the joint runs' recipes (each shape sent to square or heart) and with the shipped recipes of
        # prompts/toy.json (triangle -> star, cross -> heart); each with the earlier concepts replayed (the
        # default) and without (--no-replay, the first version, which let the first concept come back)
        # and (issue 27) the replayed chain with SalUn's retain-preserving ingredients: the contrastive mask the
        # frame recipe ships (contrast 100, keep 0.3), then that with the neighbours kept by name
        chains = (("continual", "continual-replay", lambda c: recipes[c], True, None),
                  ("continual_no_replay", "continual-bench", lambda c: recipes[c], False, None),
                  ("continual_shipped", "continual-shipped-replay", lambda c: c, True, None),
                  ("continual_shipped_no_replay", "continual", lambda c: c, False, None),
                  ("continual_contrast", "continual-contrast", lambda c: recipes[c], True, CONTRAST),
                  ("continual_neighbours", "continual-neighbours", lambda c: recipes[c], True,
                   {**CONTRAST, **NEIGHBOURS}))
        for key, prefix, recipe_of, replay, overrides in chains:
            if a.chains and key not in a.chains.split(","):
                continue
            if overrides is not None and not a.chains:  # the ingredient chains run when named
                continue
            res[key] = []
            model = str(TOY_SD)
            for k, s in enumerate(CONTINUAL):
                out = models / f"{prefix}{k + 1}-{s}"
                tag = prefix + (json.dumps(overrides, sort_keys=True) if overrides else "")  # (other settings: other keys)
                keys = (f"{tag}|{k}|run", f"{tag}|{k}|eval")
                if k == 0 and overrides is None:  # the first step erases the base: the same run with or without replay
                    out, keys = ((models / "joint1", ("joint1|run", "joint1|eval")) if "shipped" not in key else
                                 (models / "continual1-circle", ("continual|0|run", "continual|0|eval")))
                run = cache.get(keys[0], lambda: run_erase([recipe_of(s)], out, model=model, replay=replay,
                                                           overrides=overrides))
                erased = CONTINUAL[:k + 1]
                row = {"erased": erased, "replay": replay, **run, **cache.get(keys[1], lambda: ev(out, erased)),
                       **({"settings": overrides} if overrides else {})}
                row["retain_drop"] = base_row(erased)["retain_acc"] - row["retain_acc"]
                res[key].append(row)
                print(f"{key} {'+'.join(erased)}: forget {row['forget_rate']}, retain {row['retain_acc']:.1%}, "
                      f"{row['seconds']} s", flush=True)
                model = str(out)
    step2 = models / "continual-replay2-triangle"
    if not step2.exists() and not {"tune", "attribute"} <= skip:  # said, not silently left out
        print(f"note: {step2} is made by the continual part: the tune part and the attribute's continual row are "
              "left out of this run", file=sys.stderr, flush=True)
    if "tune" not in skip and step2.exists():
        # the third continual step (cross, from the circle+triangle model, replayed) with more weight on the
        # retain loss, chosen on the tuning split (seeds from 5000), then measured once on the reported split
        base_tune = cache.get("base-tune|circle,triangle,cross", lambda: measure(TOY_SD, CONTINUAL, a.per_colour,
                                                                                a.retain_per_pair, seed=5000))
        grid = {}
        # (alpha, keep): (0.5, 0.5) is the recipe's own, the continual row above
        for alpha, keep in ((0.5, 0.5), (1.0, 0.5), (2.0, 0.5), (0.5, 0.3), (1.0, 0.3)):
            name = str(alpha) if keep == 0.5 else f"alpha{alpha},keep{keep}"
            out = models / ("continual-replay3-cross" if name == "0.5" else
                            f"tune-continual3-cross-alpha{alpha}" + ("" if keep == 0.5 else f"-keep{keep}"))
            run = cache.get("continual-replay|2|run" if name == "0.5" else f"tune-continual|{name}|run",
                            lambda: run_erase([recipes["cross"]], out, model=str(step2),
                                              overrides={"alpha": alpha, "keep": keep}))
            t = cache.get(f"tune-continual|{name}|tune-eval", lambda: measure(out, CONTINUAL, a.per_colour,
                                                                            a.retain_per_pair, seed=5000))
            # what every target asks for, as one number: the mean erased rate plus the retain drop
            score = sum(t["forget_rate"].values()) / len(CONTINUAL) + max(0.0, base_tune["retain_acc"] - t["retain_acc"])
            grid[name] = {"alpha": alpha, "keep": keep, "score": round(score, 4), "tuning": t, "run": run,
                          "out": str(out)}
            print(f"tune continual alpha {alpha} keep {keep}: forget {t['forget_rate']}, retain {t['retain_acc']:.1%}, "
                  f"score {score:.3f}", flush=True)
        best = min(grid, key=lambda k: grid[k]["score"])
        row = {"erased": CONTINUAL, "alpha": grid[best]["alpha"], "keep": grid[best]["keep"], **grid[best]["run"],
               **cache.get("continual-replay|2|eval" if best == "0.5" else f"tune-continual|{best}|eval",
                           lambda: ev(grid[best]["out"], CONTINUAL))}
        row["retain_drop"] = base_row(CONTINUAL)["retain_acc"] - row["retain_acc"]
        # where the stars went, and the same cross erasure from the base model for comparison
        res["star_read_as"] = {m: cache.get(f"star-read-as|{m}", lambda: read_as(models / m, "star")) for m in (
            "continual-replay2-triangle", "continual-replay3-cross", "continual-bench3-cross",
            "continual-shipped-replay3-cross", grid[best]["out"].split("/")[-1])}
        res["single_cross_from_base"] = cache.get("single|cross|eval", lambda: ev(models / "single-cross", ["cross"]))
        print(f"stars read as: {res['star_read_as']}; cross erased from the base: retain "
              f"{res['single_cross_from_base']['retain_per_shape']}", flush=True)
        res["continual_tuned"] = {"grid": {k: {"alpha": v["alpha"], "keep": v["keep"], "score": v["score"],
                                               "forget_rate": v["tuning"]["forget_rate"],
                                               "retain_acc": v["tuning"]["retain_acc"]} for k, v in grid.items()},
                                  "chosen": {"alpha": grid[best]["alpha"], "keep": grid[best]["keep"]}, "row": row}
        print(f"continual, tuned (alpha {row['alpha']}, keep {row['keep']}): forget {row['forget_rate']}, retain "
              f"{row['retain_acc']:.1%}", flush=True)
    if "attribute" not in skip:
        # the toy attribute (the frame, the toy world's nudity) as one of the concepts: with circle in one run,
        # and erased third, after circle and triangle (from the replay chain's second model)
        base_attr = cache.get("base|attribute", lambda: measure_attribute(TOY_SD, a.per_pair))
        res["attribute"] = {"base_frame": base_attr}
        # a joint run takes its first concept's settings: circle's (lr 1e-4, 100 steps) and the frame's (lr 1e-3,
        # one epoch of batch 8), each in turn
        for key, order in (("joint", [recipes["circle"], "frame"]), ("joint_frame_first", ["frame", recipes["circle"]])):
            if a.chains and key not in a.chains.split(","):
                continue
            out = models / ("attr-joint-circle-frame" if key == "joint" else "attr-joint-frame-circle")
            tag = "attr-joint" if key == "joint" else "attr-joint-frame-first"
            run = cache.get(f"{tag}|run", lambda: run_erase(order, out))
            row = {"erased": ["circle", "frame"], "settings_of": "circle" if key == "joint" else "frame", **run,
                   **cache.get(f"{tag}|eval", lambda: {**ev(out, ["circle"]), "frame": measure_attribute(out, a.per_pair)})}
            row["retain_drop"] = base_row(["circle"])["retain_acc"] - row["retain_acc"]
            res["attribute"][key] = row
            print(f"attribute {key}: forget {row['forget_rate']}, frame {row['frame']['explicit_rate']:.1%}, "
                  f"retain {row['retain_acc']:.1%}, {row['seconds']} s", flush=True)
        # erased third: after the replayed chain's circle and triangle (the frame's recipe as it ships), and after
        # the ingredient chains' (issue 27: their contrastive mask, and the neighbours kept by name in the frame step)
        # and, to tell what the replay costs, the same frame step from the replayed chain's model without replaying
        # circle and triangle (--no-replay: they train at the frame's lr and alpha when replayed)
        thirds = (("continual", step2, "attr-continual", None, True),
                  ("continual_frame_no_replay", step2, "attr-continual-no-replay", None, False),
                  ("continual_contrast", models / "continual-contrast2-triangle", "attr-continual-contrast", None,
                   True),
                  ("continual_neighbours", models / "continual-neighbours2-triangle", "attr-continual-neighbours",
                   NEIGHBOURS, True))
        for key, model, tag, overrides, replay in thirds:
            if key not in (a.chains.split(",") if a.chains else ["continual"]):  # the ingredient rows run when named
                continue
            if not model.exists():  # said, not silently left out (the continual chain's step 2: said above)
                if model != step2:
                    print(f"note: {model} is made by the {key} chain: the attribute's {key} row is left out of this "
                          "run", file=sys.stderr, flush=True)
                continue
            out = models / f"{tag}3-frame"
            run = cache.get(f"{tag}|run", lambda: run_erase(["frame"], out, model=str(model), overrides=overrides,
                                                            replay=replay))
            erased = ["circle", "triangle"]
            row = {"erased": erased + ["frame"], "replay": replay, **run, **cache.get(f"{tag}|eval", lambda: {
                **ev(out, erased), "frame": measure_attribute(out, a.per_pair)})}
            row["retain_drop"] = base_row(erased)["retain_acc"] - row["retain_acc"]
            res["attribute"][key] = row
            print(f"attribute {key} circle, triangle, then frame: forget {row['forget_rate']}, frame "
                  f"{row['frame']['explicit_rate']:.1%}, retain {row['retain_acc']:.1%}, {row['seconds']} s", flush=True)
    if "masks" not in skip:
        res["masks"] = cache.get("masks", lambda: concept_masks(recipes, a.out / ".masks"))
        print(f"masks: {res['masks']}", flush=True)
    if "uce" not in skip:
        out = models / "uce4"
        run = cache.get("uce4|run", lambda: run_erase([recipes[s] for s in SETS[4]], out, method="uce"))
        res["uce4"] = {**run, **cache.get("uce4|eval", lambda: ev(out, SETS[4]))}
        res["uce4"]["retain_drop"] = base_row(SETS[4])["retain_acc"] - res["uce4"]["retain_acc"]
        print(f"uce 4: forget {res['uce4']['forget_rate']}, retain {res['uce4']['retain_acc']:.1%}, "
              f"{res['uce4']['seconds']} s", flush=True)
    if a.retime:  # the cost comparison from runs made back to back on a quiet machine
        timed = {}
        for name, concepts in [*((f"joint{n}", e) for n, e in SETS.items()), *((f"single-{s}", [s]) for s in SETS[4])]:
            out = models / f"retime-{name}"
            timed[name] = cache.get(f"retime|{name}", lambda: run_erase([recipes[c] for c in concepts], out))["seconds"]
            shutil.rmtree(out, ignore_errors=True)
        for n, erased in SETS.items():
            total = sum(timed[f"single-{s}"] for s in erased)
            res["joint"].setdefault(n, {}).update(retimed_seconds=timed[f"joint{n}"], retimed_sum_of_singles=round(total, 1),
                                   retimed_joint_vs_singles=round(timed[f"joint{n}"] / total, 3))
        res["retimed"] = timed
        print(f"retimed: {timed}", flush=True)
    if a.json:
        res.update(smoke=a.smoke, under_load=a.under_load)
        if a.merge and a.json.exists():
            res = merged(json.loads(a.json.read_text()), res, sys.argv[1:])
        a.json.parent.mkdir(parents=True, exist_ok=True)
        from erase.core.atomic import write_text_atomic

        write_text_atomic(a.json, json.dumps(res, indent=2))
        print(f"wrote {a.json}")


def merged(old: dict, new: dict, argv: list[str]) -> dict:
    """``--merge``: the parts this run measured replace the earlier run's, the rest stay (a part that is a dict,
    such as ``attribute``, keeps its other rows); ``added`` names what was replaced, by which command, and
    whether other jobs shared the machine (a list of such records for a part whose rows came from several
    ``--merge`` runs)."""
    out = dict(old)
    command = "python scripts/bench_multi.py " + " ".join(argv)
    for key, value in new.items():
        if key in ("smoke", "under_load") or value in ({}, []):
            continue
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            out[key] = {**old[key], **value}
        else:
            out[key] = value
        if key != "base":  # (the base rows are the same model's, measured again where needed)
            rows = sorted(value) if isinstance(value, dict) else None
            record = {"command": command, "under_load": new["under_load"], **({"rows": rows} if rows else {})}
            added = out.setdefault("added", {})
            # an earlier --merge's record of this part keeps the rows this run did not measure again
            earlier = added.get(key, [])
            kept = []
            for r in (earlier if isinstance(earlier, list) else [earlier]):
                if rows and isinstance(old.get(key), dict):
                    left = sorted(set(r.get("rows") or old[key]) - set(rows))
                    if left:
                        kept.append({**r, "rows": left})
            added[key] = [*kept, record] if kept else record
    return out


if __name__ == "__main__":
    main()
