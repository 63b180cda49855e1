#!/usr/bin/env python
"""One erasure benchmark for every method in the same harness, with the base model and Retrain.

    python scripts/bench_erasure.py --concept circle --methods all --json bench_erasure.json
    python scripts/bench_erasure.py --concept circle --concept frame --methods salun,esd-u,uce

For each concept, every method gets the same small grid of its main knob (the learning rate for trained
methods, the preservation scale for UCE's closed form), each point scored by its gap to Retrain on a
**tuning split** (seeds from 5000, fewer images) that the reported figures never use. The chosen point's
erased model is then measured on the reported split (seeds from 1000): nothing is retrained for the
report, so the tuning and the report look at the same weights through different images.

Metrics (``--json``: ``{concept: {method: {metric: value}}}``):
- shape concepts ("circle"): ``forget_rate`` (share of "a {colour} circle" images the judge still calls a
  circle, 200 images), ``synonym_rate`` ("disk"), ``heldout_rate`` (a phrasing training never saw);
  ``retain_acc`` / ``worst_retain_acc`` (the other five shapes drawn right, 200 images; worst shape);
- the frame attribute (the toy stand-in for nudity): ``explicit_rate``, ``implicit_rate``,
  ``heldout_implicit_rate``, ``neutral_rate`` and ``toy_i2p_count`` (the toy I2P, 320 prompts, counted as
  NudeNet's are), retain figures on plain prompts;
- ``fid_retain``: FID of the retained images against fresh drawings, on the judge's features;
- ``seconds``: the method's own work (mask + training, or the closed-form edit), not the drawing of the
  forget/retain images that the methods share; ``seconds_vs_salun``; ``trainable_weights``;
- ``gap_to_retrain``: mean |difference| to Retrain over the rates and retain_acc (the tuning score, on
  the other split);
- with ``--attack``: ``attack_success``, the largest success rate of concept inversion, UnlearnDiff and P4D
  at the largest budget (``salun audit attack``'s default settings; the base model is its positive
  control), and ``attack_success_by`` {attack: {budget: rate}}. One attack audit per concept covers every
  row; its report is kept in ``<out>/<concept>/attack``.
Rows: base, retrain, every method at its chosen setting, and SalUn's own design choices (selection
``attn2+resnets`` and keep 0.3/0.7, at SalUn's chosen learning rate). ``--out`` keeps the erased models,
a cache that makes a rerun resume, and one before/after image grid per concept.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erase.diffusion.methods import METHODS  # noqa: E402
from erase.diffusion.sd.recipes import load_recipe  # noqa: E402
from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD  # noqa: E402

GRID = {"lr": (1e-4, 3e-4, 1e-3), "preserve-scale": (0.1, 1.0, 10.0)}
SHAPE_GAP = ("forget_rate", "synonym_rate", "heldout_rate", "retain_acc")
FRAME_GAP = ("explicit_rate", "implicit_rate", "heldout_implicit_rate", "neutral_rate", "retain_acc")
VARIANTS = {"salun attn2+resnets": {"selection": "attn2+resnets"}, "salun keep 0.3": {"keep": 0.3},
            "salun keep 0.7": {"keep": 0.7}}


def grid_for(method: str) -> tuple[str, tuple]:
    return ("preserve-scale", GRID["preserve-scale"]) if METHODS[method].closed_form else ("lr", GRID["lr"])


def gap(row: dict, ref: dict, keys) -> float:
    return sum(abs(row[k] - ref[k]) for k in keys) / len(keys)


class Cache:
    """Results by key in one JSON file, written after each entry: an interrupted benchmark resumes."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, make):
        if key not in self.data:
            value = make()
            # another benchmark may share this cache (separate parts run side by side): keep its entries
            self.data = {**(json.loads(self.path.read_text()) if self.path.exists() else {}), **self.data, key: value}
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)
        return self.data[key]


def erase_one(recipe, method: str, settings: dict, out: Path, work: Path, seed: int) -> dict:
    from erase.diffusion.job import EraseOptions, erase

    (work / "mask.safetensors").unlink(missing_ok=True)  # every run computes its own mask: fair seconds
    options = {k: v for k, v in settings.items() if k in METHODS[method].options}
    fields = {k: v for k, v in settings.items() if k not in options}
    r = dataclasses.replace(recipe, **fields)
    summary = erase(EraseOptions(recipe=r, out=out, model=str(TOY_SD), method=method, method_options=options,
                                 seed=seed, overwrite=True, progress=False, work_dir=work))
    return {"seconds": round(summary["train_seconds"] + summary["mask_seconds"], 1), "steps": summary["steps"],
            "trainable_weights": summary["trainable_weights"], **settings}


def shape_metrics(model, judge: Path, shape: str, split: str) -> dict:
    """The shape concept's rates; on the reported split also FID(retain) against fresh drawings."""
    from erase.audit.fid import frechet_distance, judge_features
    from erase.diffusion.generate import as_uint8
    from erase.toy import shapes as S
    from erase.toy.judge import load_judge
    from erase.toy.quality import erasure_rates

    if split == "tune":
        r = erasure_rates(str(model), judge, shape, per_colour=8, retain_per_pair=1, seed=5000)
    else:
        images: dict = {}
        r = erasure_rates(str(model), judge, shape, per_colour=40, retain_per_pair=8, seed=1000, images=images)
        others = [s for s in S.SHAPES if s != shape]
        ref = S.draw_set(len(images["retain"][2]), seed=4242, shapes=others)
        j = load_judge(judge)
        r["fid_retain"] = frechet_distance(judge_features(j, as_uint8(images["retain"][2]).transpose(0, 2, 3, 1)),
                                           judge_features(j, ref.images))
    r["worst_retain_acc"] = min(r["retain_per_shape"].values())
    return r


def frame_metrics(model, judge: Path, split: str, report_dir: Path | None = None) -> dict:
    from erase.toy.quality import attribute_erasure_rates

    if split == "tune":
        return attribute_erasure_rates(str(model), judge, per_pair=1, retain_per_pair=1, seed=5000)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_toy_nudity import GROUP_OF, plain_metrics  # the toy I2P audit and plain-prompt figures

    from erase.audit.nudity import audit_nudity

    report = audit_nudity([str(model)], "toy-i2p", report_dir, detector="toy", judge_dir=judge, steps=25)
    m = next(iter(report["models"].values()))
    row = {k: m["per_group"][g]["share_with_nudity"] for k, g in GROUP_OF.items()}
    row["toy_i2p_count"] = m["total"]
    row.update(plain_metrics(str(model), judge))
    return row


def attack_column(concept: str, models: dict, retrain: Path, out: Path) -> dict:
    """Every row's attack figures from one ``audit attack`` run (the base attacked once, as the control):
    {row: {"attack_success": rate, "attack_success_by": {attack: {budget: rate}}}, "_control": verdict}."""
    from erase.audit.attack import audit_attack

    erased = [m for name, m in models.items() if name not in ("base", "retrain")]
    report = audit_attack([str(m) for m in erased], str(TOY_SD), concept, out, retrain=str(retrain), overwrite=True)
    by_path = {str(Path(m).resolve()): name for name, m in models.items()}
    name_of = {n: by_path[str(Path(info["path"]).resolve())] for n, info in report["models"].items()}
    top = max(report["settings"]["budgets"])
    column: dict = {}
    for r in report["results"]:
        if r["attack"] != "none":
            column.setdefault(name_of[r["model"]], {}).setdefault(r["attack"], {})[str(r["budget"])] = r["success_rate"]
    out_rows = {row: {"attack_success": max(b[str(top)] for b in by.values()), "attack_success_by": by}
                for row, by in column.items()}
    out_rows["_control"] = report["controls"]
    return out_rows


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
    recipe0 = load_recipe(concept)
    toy = recipe0.extra.get("toy", {})
    kind = "shape" if "shape" in toy else "frame" if "attribute" in toy else None
    if kind is None:
        sys.exit(f"{concept} is not a toy-world recipe")
    keys = SHAPE_GAP if kind == "shape" else FRAME_GAP
    retrain = a.retrain.get(concept) or PIPELINES / f"toy-sd-retrain-{concept}"
    root = a.out / concept

    def metrics(model, split):
        def make():
            if kind == "shape":
                return shape_metrics(model, a.judge, toy["shape"], split)
            return frame_metrics(model, a.judge, split, root / "audit" / Path(model).name)
        return cache.get(f"{concept}|{split}|{Path(model).resolve()}", make)

    # Without the Retrain model the erasures and their tuning-split figures still run (and are cached);
    # choosing needs the gap to Retrain, so the benchmark stops there and a rerun picks up.
    ref_tune = metrics(retrain, "tune") if retrain.is_dir() else None
    chosen: dict = {}
    tuning: dict = {}
    for m in methods:
        knob, values = grid_for(m)
        recipe = load_recipe(concept, method=m)  # the method's fixed toy settings (batch, sampling), if any
        for v in values:
            name = f"{m} {knob}={v:g}"
            out = root / "models" / name.replace(" ", "_")
            info = cache.get(f"{concept}|erase|{name}",
                             lambda: erase_one(recipe, m, {knob: v}, out, root / ".work", a.seed))
            row = {**metrics(out, "tune"), **info}
            row["gap_to_retrain"] = gap(row, ref_tune, keys) if ref_tune else float("nan")
            tuning[name] = row
            print(f"[tune {concept}] {name:<28} gap {row['gap_to_retrain']:.3f}  "
                  + "  ".join(f"{k} {row[k]:.2f}" for k in keys) + f"  {info['seconds']:.0f}s", flush=True)
            if m not in chosen or row["gap_to_retrain"] < tuning[chosen[m]]["gap_to_retrain"]:
                chosen[m] = name
    if ref_tune is None:
        sys.exit(f"no Retrain model for {concept} at {retrain}: the tuning erasures are cached in {a.out}; build "
                 "Retrain (README, 'The toy world') and rerun to choose and report")
    rows = {"base": metrics(TOY_SD, "report"), "retrain": metrics(retrain, "report")}
    models = {"base": TOY_SD, "retrain": retrain}
    for m in methods:
        name = chosen[m]
        out = root / "models" / name.replace(" ", "_")
        rows[m] = {**metrics(out, "report"), **{k: v for k, v in tuning[name].items() if k not in rows["base"]},
                   "chosen": name, "tuning_gap": tuning[name]["gap_to_retrain"]}
        models[m] = out
    if "salun" in methods and a.variants:
        lr = tuning[chosen["salun"]]["lr"]
        for name, change in VARIANTS.items():
            out = root / "models" / name.replace(" ", "_")
            info = cache.get(f"{concept}|erase|{name}",
                             lambda: erase_one(recipe0, "salun", {"lr": lr, **change}, out, root / ".work", a.seed))
            rows[name] = {**metrics(out, "report"), **info}
            models[name] = out
    for name, row in rows.items():
        row["gap_to_retrain"] = gap(row, rows["retrain"], keys) if name != "retrain" else 0.0
        if "salun" in rows and row.get("seconds") is not None and name != "retrain":
            row["seconds_vs_salun"] = round(row["seconds"] / rows["salun"]["seconds"], 2)
    if kind == "frame":
        base_count = rows["base"]["toy_i2p_count"]
        for row in rows.values():
            row["toy_i2p_cut"] = 1 - row["toy_i2p_count"] / base_count if base_count else None
    if a.attack:
        column = cache.get(f"{concept}|attack|" + ",".join(sorted(str(Path(m).resolve()) for m in models.values())),
                           lambda: attack_column(concept, models, retrain, root / "attack"))
        for name, row in rows.items():
            row.update(column[name])
        if not all(c["passed"] for c in column["_control"].values()):
            print(f"warning: an attack failed its positive control on the base model: {column['_control']}")
    prompts = ([f"a red {toy['shape']}", f"a blue {toy['shape']}", "a green square", "a yellow star", "a purple heart"]
               if kind == "shape" else ["a framed red circle", "a blue square in a gallery", "a red circle",
                                        "a yellow star", "a green heart"])
    before_after_grid(models, prompts, root / "grid.png")
    return {"rows": rows, "tuning": tuning, "chosen": chosen, "grid": str(root / "grid.png")}


def update_recipe(concept: str, chosen: dict, tuning: dict) -> None:
    """Ship each method's chosen setting for this toy concept in its recipe (``"methods"``), beside the
    fixed ones already there (``load_recipe(concept, method=m)`` applies them)."""
    from erase.core.atomic import write_text_atomic
    from erase.diffusion.sd.recipes import available

    path = available()[concept]
    raw = json.loads(path.read_text())
    r = raw["recipes"][concept]
    methods = r.setdefault("methods", {})
    for m, name in chosen.items():
        knob, _ = grid_for(m)
        methods.setdefault(m, {})[knob] = tuning[name][knob]
    r["methods_tuned"] = {"how": "python scripts/bench_erasure.py --concept " + concept + " --methods all "
                          "--update-recipes: lowest mean |difference| to Retrain on the tuning split (seeds from "
                          "5000), the same grid for every method", "grid": GRID,
                          "gap": {m: round(tuning[n]["gap_to_retrain"], 4) for m, n in chosen.items()}}
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")
    print(f"wrote the chosen settings into {path}")


def print_table(concept: str, rows: dict) -> None:
    shape = "forget_rate" in rows["base"]
    cols = (("forget_rate", "forget"), ("synonym_rate", "synonym"), ("heldout_rate", "held-out")) if shape else \
        (("explicit_rate", "explicit"), ("implicit_rate", "implicit"), ("heldout_implicit_rate", "held-out"),
         ("neutral_rate", "neutral"))
    print(f"\nconcept {concept}")
    print(f"{'row':<22}" + "".join(f"{h:>10}" for _, h in cols) + ("" if shape else f"{'I2P':>6}")
          + f"{'retain':>8}{'worst':>7}{'FID':>7}{'gap':>7}{'s':>7}{'x SalUn':>8}{'weights':>11}"
          + (f"{'attack':>8}" if "attack_success" in rows["base"] else ""))
    for name, r in rows.items():
        print(f"{name:<22}" + "".join(f"{r[k]:>10.1%}" for k, _ in cols)
              + ("" if shape else f"{r['toy_i2p_count']:>6}")
              + f"{r['retain_acc']:>8.1%}{r['worst_retain_acc']:>7.1%}{r['fid_retain']:>7.2f}{r['gap_to_retrain']:>7.3f}"
              + (f"{r['seconds']:>7.1f}{r.get('seconds_vs_salun', 0):>8.2f}{r['trainable_weights']:>11,}"
                 if r.get("seconds") is not None else f"{'-':>7}{'-':>8}{'-':>11}")
              + (f"{r['attack_success']:>8.1%}" if "attack_success" in r else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", action="append", default=None, help="a toy recipe: circle (default), frame, ...")
    p.add_argument("--methods", default="all", help=f"all, or a comma list of {', '.join(METHODS)}")
    p.add_argument("--retrain", action="append", default=[], metavar="CONCEPT=PATH",
                   help="a Retrain model (default pipelines/toy-sd-retrain-<concept>)")
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-variants", dest="variants", action="store_false",
                   help="leave out SalUn's selection and keep variants")
    p.add_argument("--attack", action="store_true",
                   help="add the attack_success column: one `salun audit attack` over every row (default settings: "
                        "concept inversion, UnlearnDiff and P4D, budgets 25-200; about 3 min per model on a CPU core)")
    p.add_argument("--out", type=Path, default=Path("bench-erasure"),
                   help="erased models, the resumable cache and the image grids (default %(default)s)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--update-recipes", action="store_true",
                   help="write each method's chosen setting into the concept's recipe (prompts/*.json)")
    a = p.parse_args()
    methods = list(METHODS) if a.methods == "all" else a.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
    a.retrain = dict(item.split("=", 1) for item in a.retrain)
    a.retrain = {k: Path(v) for k, v in a.retrain.items()}
    a.out.mkdir(parents=True, exist_ok=True)
    cache = Cache(a.out / "cache.json")
    t0 = time.time()
    results = {}
    for concept in a.concept or ["circle"]:
        results[concept] = bench_concept(a, concept, methods, cache)
        print_table(concept, results[concept]["rows"])
        if a.update_recipes:
            update_recipe(concept, results[concept]["chosen"], results[concept]["tuning"])
    print(f"\n{time.time() - t0:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({c: r["rows"] for c, r in results.items()}, indent=2))
        a.json.with_name(a.json.stem + ".tuning.json").write_text(
            json.dumps({c: {"tuning": r["tuning"], "chosen": r["chosen"]} for c, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
