#!/usr/bin/env python
"""The nudity path end to end on the toy world: erase the frame attribute (the toy stand-in for nudity)
with SalUn and with RL (the same loss on every weight, no mask), and audit them beside the base model and
the shipped Retrain model (trained without the attribute in its pictures) on the toy I2P.

    python scripts/bench_toy_nudity.py --json bench_toy_nudity.json --out bench-toy-nudity
    python scripts/bench_toy_nudity.py --tune --json tune_toy_nudity.json     # the tuning grid (settings)
    python scripts/bench_toy_nudity.py --smoke --json /tmp/nudity.json --out /tmp/nudity   # seconds: the path only

``--json`` (the benchmark): ``{"rows": {row: figures}, "smoke", "under_load", "threads"}``; ``--under-load``
records that other jobs shared the machine, so ``seconds`` is not a cost figure.

Reported figures (every row: base, salun, rl, retrain):
- ``explicit_rate``, ``implicit_rate``, ``heldout_implicit_rate``, ``neutral_rate``: share of the toy I2P's
  images in each prompt group that the toy detector calls framed (80 prompts per group, each with its own
  seed and guidance: ``salun audit nudity --prompts toy-i2p --detector toy``);
- ``toy_i2p_count``: detections over the whole toy I2P (320 prompts), counted as NudeNet's are;
- ``retain_acc`` / ``worst_retain_acc``: the judge's shape accuracy on plain name prompts ("a red circle",
  every shape x colour x 8 seeds from 1000; worst shape); ``fid_retain``: FID of those images against
  fresh drawings without frames, on the judge's features (the toy stand-in for Inception);
- ``seconds``: the whole erasure (drawing the 200 + 200 images, the mask, training, export), each method
  in its own work folder;
- ``gap_to_retrain``: mean absolute difference of the four rates and retain_acc to Retrain's.
The audit's report.md, report.json and nudity_bars.png (the four models' per-class counts) go to --out.

Tuning (``--tune``): SalUn and RL get the same grid (lr; one epoch, as the recipe says), scored by the same gap to Retrain
measured on a tuning split, the attribute's prompt phrasings over every shape x colour with seeds from 5000
and plain prompts with seeds from 5000, never the toy I2P or the seeds of the reported figures. The chosen
settings live in prompts/toy-nudity.json (SalUn: the recipe; RL: its ``tuned.rl`` entry).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erase.diffusion.recipes import load_recipe  # noqa: E402
from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD  # noqa: E402

RATES = ("explicit_rate", "implicit_rate", "heldout_implicit_rate", "neutral_rate")
GAP_KEYS = RATES + ("retain_acc",)
GRID_LR = (1e-4, 3e-4, 1e-3)
GRID_EPOCHS = (1,)  # the recipe mirrors nudity.json: one epoch
GROUP_OF = {"explicit_rate": "explicit", "implicit_rate": "implicit", "heldout_implicit_rate": "heldout-implicit",
            "neutral_rate": "neutral"}


def gap(row: dict, ref: dict) -> float:
    return sum(abs(row[k] - ref[k]) for k in GAP_KEYS) / len(GAP_KEYS)


def erase_one(recipe, method: str, lr: float, epochs: float, out: Path, work: Path, seed: int,
              steps: int | None = None) -> dict:
    from erase.diffusion.job import EraseOptions, erase

    r = dataclasses.replace(recipe, lr=lr, epochs=epochs, steps=steps)
    t0 = time.time()
    summary = erase(EraseOptions(recipe=r, out=out, model=str(TOY_SD), use_mask=method == "salun", seed=seed,
                                 overwrite=True, progress=False, work_dir=work))
    return {"seconds": round(time.time() - t0, 1), "steps": summary["steps"],
            "trainable_weights": summary["trainable_weights"], "lr": lr, "epochs": epochs}


def plain_metrics(model, judge_dir: Path, seed: int = 1000, per_pair: int = 8, steps: int | None = None) -> dict:
    """Shape accuracy (mean, worst shape) of plain name prompts, and their FID against frameless drawings."""
    from erase.core.fid import frechet_distance, judge_features
    from erase.diffusion.generate import as_uint8, generate
    from erase.diffusion.pipeline import load_pipeline
    from erase.toy import shapes as S
    from erase.toy.judge import load_judge
    from erase.diffusion.toy_quality import concept_prompts, judge_rates

    judge = load_judge(judge_dir)
    pipe = load_pipeline(model)
    prompts, seeds, ys, yc = concept_prompts(list(S.SHAPES), list(S.COLOURS), per_pair, seed=seed)
    images = generate(pipe, prompts, seeds, progress=False, **({"steps": steps} if steps else {}))
    r = judge_rates(judge, images, ys, yc, list(S.SHAPES))
    ref = S.draw_set(len(prompts), seed=4242)
    fid = frechet_distance(judge_features(judge, as_uint8(images).transpose(0, 2, 3, 1)),
                           judge_features(judge, ref.images))
    return {"retain_acc": r["shape_acc"], "worst_retain_acc": min(r["per_shape"].values()),
            "retain_colour_acc": r["colour_acc"], "fid_retain": fid, "n_retain": r["n"]}


def tune(a, recipe, retrain: Path) -> dict:
    from erase.diffusion.toy_quality import attribute_erasure_rates

    def score(model):
        r = attribute_erasure_rates(str(model), a.judge, per_pair=1, retain_per_pair=2, seed=5000)
        return {k: r[k] for k in GAP_KEYS}

    root = Path(tempfile.mkdtemp(prefix="tune_toy_nudity_"))
    ref = score(retrain)
    rows = {"retrain": ref, "base": score(TOY_SD)}
    print(f"tuning split: retrain {ref}\n              base    {rows['base']}")
    best = {}
    for method in ("salun", "rl"):
        for lr in GRID_LR:
            for epochs in GRID_EPOCHS:
                out = root / f"{method}-{lr:g}-{epochs}"
                info = erase_one(recipe, method, lr, epochs, out, root / ".work", a.seed)
                r = {**score(out), **info}
                r["gap"] = gap(r, ref)
                rows[f"{method} lr={lr:g} epochs={epochs}"] = r
                print(f"{method:<6} lr {lr:<7g} epochs {epochs}: gap {r['gap']:.4f}  "
                      + "  ".join(f"{k} {r[k]:.3f}" for k in GAP_KEYS), flush=True)
                if method not in best or r["gap"] < best[method]["gap"]:
                    best[method] = {"lr": lr, "epochs": epochs, "gap": r["gap"]}
    print("chosen (lowest gap to Retrain on the tuning split):", json.dumps(best))
    return {"grid": {"lr": GRID_LR, "epochs": GRID_EPOCHS}, "rows": rows, "chosen": best}


def update_recipe(chosen: dict) -> None:
    """Ship the tuned settings: SalUn's in the recipe itself, RL's beside it (``tuned.rl``)."""
    from erase.core.atomic import write_text_atomic
    from erase.diffusion.recipes import PROMPTS_DIR

    path = PROMPTS_DIR / "toy-nudity.json"
    raw = json.loads(path.read_text())
    r = raw["recipes"]["frame"]
    r["lr"], r["epochs"] = chosen["salun"]["lr"], chosen["salun"]["epochs"]
    r["tuned"] = {"how": "python scripts/bench_toy_nudity.py --tune --update-recipe: lowest mean |rate difference| "
                         "to Retrain on the tuning split (seeds from 5000), same grid for both methods",
                  "grid": {"lr": list(GRID_LR), "epochs": list(GRID_EPOCHS)},
                  "salun": chosen["salun"], "rl": chosen["rl"]}
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")
    print(f"wrote the chosen settings into {path}")


def bench(a, recipe, retrain: Path) -> dict:
    from erase.audit.nudity import audit_nudity

    root = a.keep_outputs or Path(tempfile.mkdtemp(prefix="bench_toy_nudity_"))
    rl = recipe.extra.get("tuned", {}).get("rl", {})
    settings = {"salun": (recipe.lr, recipe.epochs), "rl": (rl.get("lr", recipe.lr), rl.get("epochs", recipe.epochs))}
    erased = {}
    for method, (lr, epochs) in settings.items():
        out = root / f"frame-{method}"
        erased[method] = (out, erase_one(recipe, method, lr, epochs, out, root / f".work-{method}", a.seed,
                                         steps=1 if a.smoke else None))
        print(f"erased with {method}: {erased[method][1]}", flush=True)
    models = {"base": TOY_SD, "salun": erased["salun"][0], "rl": erased["rl"][0], "retrain": retrain}
    # The audit names each model by its folder; give them the row names.
    named = root / "models"
    named.mkdir(exist_ok=True)
    for name, path in models.items():
        link = named / name
        if not link.exists():
            link.symlink_to(Path(path).resolve())
    prompts = smoke_prompts(root) if a.smoke else "toy-i2p"
    report = audit_nudity([str(named / n) for n in models], prompts, a.out, detector="toy", judge_dir=a.judge,
                          steps=5 if a.smoke else 25)
    rows = {}
    for name in models:
        m = report["models"][name]
        row = {k: m["per_group"][GROUP_OF[k]]["share_with_nudity"] for k in RATES}
        row["toy_i2p_count"] = m["total"]
        row["toy_i2p_per_class"] = m["per_class"]
        row.update(plain_metrics(str(models[name]), a.judge, per_pair=1 if a.smoke else 8,
                                 steps=5 if a.smoke else None))
        if name in erased:
            row.update(erased[name][1])
        rows[name] = row
    for name in ("base", "salun", "rl"):
        rows[name]["gap_to_retrain"] = gap(rows[name], rows["retrain"])
    base_count = rows["base"]["toy_i2p_count"]
    for name in ("salun", "rl", "retrain"):
        rows[name]["toy_i2p_count_cut"] = 1 - rows[name]["toy_i2p_count"] / base_count if base_count else None
    return rows


def smoke_prompts(root: Path) -> str:
    """The toy I2P's first prompt of each group, as a local prompts file (the smoke run's audit)."""
    import csv

    from erase.audit.nudity import TOY_I2P

    with open(TOY_I2P, newline="") as f:
        reader = csv.DictReader(f)
        rows, seen = [], set()
        for r in reader:
            if r["toy_group"] not in seen:
                seen.add(r["toy_group"])
                rows.append(r)
    path = root / "toy-i2p-smoke.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=reader.fieldnames)
        w.writeheader()
        w.writerows(rows)
    return str(path)


def print_table(rows: dict) -> None:
    head = (f"{'model':<8}{'explicit':>9}{'implicit':>9}{'held-out':>9}{'neutral':>9}{'I2P count':>10}"
            f"{'retain':>8}{'worst':>7}{'FID':>7}{'gap':>7}{'s':>6}")
    print(head)
    for name, r in rows.items():
        g = r.get("gap_to_retrain")
        print(f"{name:<8}" + "".join(f"{r[k]:>9.1%}" for k in RATES) + f"{r['toy_i2p_count']:>10}"
              f"{r['retain_acc']:>8.1%}{r['worst_retain_acc']:>7.1%}{r['fid_retain']:>7.2f}"
              + (f"{g:>7.3f}" if g is not None else f"{'-':>7}")
              + (f"{r['seconds']:>6.0f}" if "seconds" in r else f"{'-':>6}"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--retrain", type=Path, default=PIPELINES / "toy-sd-retrain-frame",
                   help="the Retrain model (default %(default)s)")
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tune", action="store_true", help="run the tuning grid instead of the reported benchmark")
    p.add_argument("--update-recipe", action="store_true",
                   help="with --tune: write the chosen settings into prompts/toy-nudity.json (SalUn: the recipe's lr "
                        "and epochs; RL: its tuned.rl entry)")
    p.add_argument("--out", type=Path, default=Path("bench-toy-nudity"),
                   help="the audit's folder (report.md, report.json, nudity_bars.png, images/)")
    p.add_argument("--keep-outputs", type=Path, default=None, help="keep the erased pipelines here")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--smoke", action="store_true",
                   help="the smallest run (4 + 4 drawn images, 1 step, one toy I2P prompt per group, 30 plain "
                        "prompts): proves the path, measures nothing")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    a = p.parse_args()
    if a.smoke and a.tune:
        p.error("--smoke runs the benchmark, not the tuning grid")
    recipe = load_recipe("frame", **({"n_forget": 4, "n_retain": 4, "batch_size": 4, "gen_steps": 5} if a.smoke else {}))
    if a.tune:
        result = tune(a, recipe, a.retrain)
        if a.update_recipe:
            update_recipe(result["chosen"])
    else:
        rows = bench(a, recipe, a.retrain)
        print_table(rows)
        import torch

        result = {"rows": rows, "smoke": a.smoke, "under_load": a.under_load, "threads": torch.get_num_threads(),
                  "argv": sys.argv[1:]}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
