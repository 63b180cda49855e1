#!/usr/bin/env python
"""The nudity path end to end on the toy world: erase the frame attribute (the toy stand-in for nudity)
with SalUn and with RL (the same loss on every weight, no mask), and audit them beside the base model and
the shipped Retrain model (trained without the attribute in its pictures) on the toy I2P.

    python scripts/bench_toy_nudity.py --json bench_toy_nudity.json --out bench-toy-nudity
    python scripts/bench_toy_nudity.py --tune --update-recipe --json tune.json   # choose the settings (below)
    python scripts/bench_toy_nudity.py --smoke --json /tmp/nudity.json --out /tmp/nudity   # the path only

``--json`` (the benchmark): ``{"rows": {row: figures}, "settings", "smoke", "under_load", "threads"}``;
``--under-load`` records that other jobs shared the machine, so ``seconds`` is not a cost figure.

Reported figures (every row: base, salun (the frame recipe's SalUn as shipped), salun-paper (the paper's SalUn:
``--mask-contrast 0 --keep 0.5``), rl, retrain), every rate ``k`` with ``k_ci`` (Wilson 95%) and
``n_k``:
- ``explicit_rate``, ``implicit_rate``, ``heldout_implicit_rate``, ``neutral_rate``: share of the toy I2P's
  images in each prompt group that the toy detector calls framed (80 prompts per group, each with its own
  seed and guidance: ``salun audit nudity --prompts toy-i2p --detector toy``); ``toy_i2p_count``: detections
  over the whole toy I2P (320 prompts), counted as NudeNet's are; ``i2p_erased_prompt_acc``: the audit's
  share of the toy I2P's frame prompts that still draw the shape and colour they name;
- the reported split of ``erase.diffusion.toy_metrics`` (``frame_metrics``, the harness of
  ``scripts/bench_erasure.py``): ``erased_prompt_acc`` / ``erased_prompt_reject_rate`` (300 explicit and
  implicit frame prompts must still draw the named shape in the named colour), ``retain_acc``,
  ``worst_retain_acc``, ``retain_colour_acc``, ``retain_reject_rate`` and ``fid_retain`` on 480 plain name
  prompts, ``plain_frame_rate`` (frames drawn for those), ``erased_prompt_fid`` against Retrain's images of
  the same prompts and seeds;
- ``gap_to_retrain`` (with ``gap_to_retrain_ci`` and ``gap_terms``): the harness's one score over the rates
  above, retain, worst shape, what the erased prompts draw and both FIDs;
- ``seconds``: the whole erasure (drawing the 200 + 200 images, the mask, training, export).
The audit's report.md, report.json and nudity_bars.png (the four models' per-class counts), and grid.png (each
model's images of two frame prompts and three plain ones, seed 0), go to --out.

Settings: SalUn's and RL's come from the recipe (``prompts/toy-nudity.json``, ``"methods"``), chosen by the
erasure benchmark's tuning (``--tune`` runs it for these two methods: ``scripts/bench_erasure.py --concept
frame``, the same grid for both, scored on a tuning split with its own templates and seeds, never the toy
I2P or the prompts reported here).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from erase.diffusion.recipes import load_recipe  # noqa: E402
from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD  # noqa: E402

METHODS = ("salun", "rl")
# The erased rows: the frame recipe's SalUn as shipped (its tuned mask contrast and keep), the paper's SalUn (the
# forget-only map at keep 0.5: one option away, a row of every table), and RL; each (method, recipe changes).
# The paper's SalUn also keeps the constant rate and the length the lr x length grid chose for SalUn (1: the recipe's
# own epoch), not the frame recipe's ingredient (a cosine rate for twice the steps).
ERASED = {"salun": ("salun", {}),
          "salun-paper": ("salun", {"mask_contrast": 0.0, "keep": 0.5, "lr_schedule": "constant", "length": 1.0}),
          "rl": ("rl", {})}
RATES = ("explicit_rate", "implicit_rate", "heldout_implicit_rate", "neutral_rate")
GROUP_OF = {"explicit_rate": "explicit", "implicit_rate": "implicit", "heldout_implicit_rate": "heldout-implicit",
            "neutral_rate": "neutral"}


def erase_one(recipe, method: str, out: Path, work: Path, seed: int) -> dict:
    from erase.diffusion.job import EraseOptions, erase

    t0 = time.time()
    summary = erase(EraseOptions(recipe=recipe, out=out, model=str(TOY_SD), method=method, seed=seed,
                                 overwrite=True, progress=False, work_dir=work))
    return {"seconds": round(time.time() - t0, 1), "steps": summary["steps"],
            "trainable_weights": summary["trainable_weights"], "lr": recipe.lr, "epochs": recipe.epochs,
            "lr_schedule": recipe.lr_schedule,
            **({"mask_contrast": recipe.mask_contrast, "keep": recipe.keep} if method == "salun" else {})}


def audit_rates(m: dict) -> dict:
    """One model's toy I2P figures from the nudity audit's report, with their counts and intervals."""
    from erase.core.stats import wilson

    row: dict = {}
    for k in RATES:
        g = m["per_group"][GROUP_OF[k]]
        row[k] = g["share_with_nudity"]
        row[f"{k}_ci"] = list(wilson(g["images_with_nudity"], g["images"]))
        row[f"n_{k}"] = g["images"]
    row["toy_i2p_count"], row["toy_i2p_per_class"] = m["total"], m["per_class"]
    e = m.get("erased_prompts") or {}
    if "erased_prompt_acc" in e:
        row["i2p_erased_prompt_acc"] = e["erased_prompt_acc"]
        row["i2p_erased_prompt_acc_ci"] = e["erased_prompt_acc_ci"]
        row["n_i2p_erased_prompt_acc"] = e["n_erased_prompt_acc"]
    return row


def harness_metrics(model, judge: Path, split: str) -> dict:
    """The erasure benchmark's frame figures on ``split``; its plain prompts' frame rate is renamed, so that
    ``neutral_rate`` stays the toy I2P's."""
    from erase.diffusion.toy_metrics import frame_metrics

    r = frame_metrics(model, judge, split)
    for k in ("neutral_rate", "neutral_rate_ci", "n_neutral_rate"):
        r[k.replace("neutral_rate", "plain_frame_rate")] = r.pop(k)
    return r


def bench(a) -> dict:
    from erase.audit.nudity import audit_nudity
    from erase.diffusion.toy_metrics import GAP_TERMS, add_erased_prompt_fid, gap_to_retrain

    root = a.keep_outputs or Path(tempfile.mkdtemp(prefix="bench_toy_nudity_"))
    erased = {}
    for name, (method, changes) in ERASED.items():
        changes = dict(changes)
        if "length" in changes:  # a share of the concept's own training length (its recipe before any method's)
            changes.update(load_recipe("frame").length_fields(changes.pop("length")))
        recipe = dataclasses.replace(load_recipe("frame", method=method), **changes)
        if a.smoke:
            recipe = dataclasses.replace(recipe, n_forget=4, n_retain=4, batch_size=4, gen_steps=5, steps=1)
        out = root / f"frame-{name}"
        erased[name] = (out, erase_one(recipe, method, out, root / f".work-{name}", a.seed))
        print(f"erased with {name}: {erased[name][1]}", flush=True)
    models = {"base": TOY_SD, **{name: out for name, (out, _) in erased.items()}, "retrain": a.retrain}
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
    split = "smoke" if a.smoke else "report"
    rows = {}
    for name in models:
        row = audit_rates(report["models"][name])
        row.update(harness_metrics(str(models[name]), a.judge, split))
        if name in erased:
            row.update(erased[name][1])
        rows[name] = row
    terms = GAP_TERMS[("frame", "report")]
    for name, row in rows.items():
        add_erased_prompt_fid(row, rows["retrain"])
        row.update(gap_to_retrain(row, rows["retrain"], terms))
    grid(models, Path(a.out) / "grid.png")
    base_count = rows["base"]["toy_i2p_count"]
    for name in (*ERASED, "retrain"):
        rows[name]["toy_i2p_count_cut"] = 1 - rows[name]["toy_i2p_count"] / base_count if base_count else None
    return {name: {k: v for k, v in row.items() if k != "features"} for name, row in rows.items()}


GRID_PROMPTS = ["a framed red circle", "a blue square in a gallery", "a red circle", "a yellow star", "a green heart"]


def grid(models: dict, path: Path) -> None:
    """``grid.png``: one row per model, one column per prompt (two that ask for the frame, three plain ones)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_erasure import before_after_grid

    before_after_grid(models, GRID_PROMPTS, path)


def tune(a) -> int:
    """SalUn's and RL's settings, chosen by the erasure benchmark's tuning for the frame (same grid, tuning split)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_erasure.py"), "--concept", "frame", "--methods",
           ",".join(METHODS), "--no-variants", "--out", str(a.out), "--retrain", f"frame={a.retrain}",
           "--judge", str(a.judge), "--seed", str(a.seed)]
    cmd += (["--json", str(a.json)] if a.json else []) + (["--update-recipes"] if a.update_recipe else []) + \
        (["--under-load"] if a.under_load else [])
    print("tuning with the erasure benchmark:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


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
    head = (f"{'model':<12}{'explicit':>9}{'implicit':>9}{'held-out':>9}{'neutral':>9}{'I2P count':>10}"
            f"{'erased ok':>10}{'retain':>8}{'worst':>7}{'FID':>7}{'gap':>7}{'s':>6}")
    print(head)
    for name, r in rows.items():
        print(f"{name:<12}" + "".join(f"{r[k]:>9.1%}" for k in RATES) + f"{r['toy_i2p_count']:>10}"
              f"{r['erased_prompt_acc']:>10.1%}{r['retain_acc']:>8.1%}{r['worst_retain_acc']:>7.1%}"
              f"{r['fid_retain']:>7.2f}{r['gap_to_retrain']:>7.3f}"
              + (f"{r['seconds']:>6.0f}" if "seconds" in r else f"{'-':>6}"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--retrain", type=Path, default=PIPELINES / "toy-sd-retrain-frame",
                   help="the Retrain model (default %(default)s)")
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tune", action="store_true",
                   help="choose SalUn's and RL's settings instead of the reported benchmark: runs "
                        "scripts/bench_erasure.py --concept frame --methods salun,rl (its tuning split and grid); "
                        "--out is then its work folder and --json its figures")
    p.add_argument("--update-recipe", action="store_true",
                   help="with --tune: write the chosen settings into prompts/toy-nudity.json (\"methods\")")
    p.add_argument("--out", type=Path, default=Path("bench-toy-nudity"),
                   help="the audit's folder (report.md, report.json, nudity_bars.png, images/)")
    p.add_argument("--keep-outputs", type=Path, default=None, help="keep the erased pipelines here")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--smoke", action="store_true",
                   help="the smallest run (4 + 4 drawn images, 1 step, one toy I2P prompt per group, a handful of "
                        "harness images): proves the path, measures nothing")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    a = p.parse_args()
    if a.smoke and a.tune:
        p.error("--smoke runs the benchmark, not the tuning grid")
    if a.update_recipe and not a.tune:
        p.error("--update-recipe goes with --tune")
    if a.tune:
        sys.exit(tune(a))
    rows = bench(a)
    print_table(rows)
    import torch

    settings = {m: {k: rows[m][k] for k in ("lr", "lr_schedule", "epochs", "steps", "mask_contrast", "keep")
                    if k in rows[m]}
                for m in ERASED}
    result = {"rows": rows, "settings": settings, "smoke": a.smoke, "under_load": a.under_load,
              "threads": torch.get_num_threads(), "argv": sys.argv[1:]}
    if a.json:
        from erase.core.atomic import write_text_atomic

        a.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(a.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
