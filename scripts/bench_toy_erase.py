#!/usr/bin/env python
"""Toy-world erasure benchmark: erase a shape with SalUn (and without the mask, as an ablation).

Prints a table and writes the same figures to --json. Every rate is the judge's reading of >= 200
images generated with fixed seeds (see erase/diffusion/toy_quality.py: erasure_rates):

    python scripts/bench_toy_erase.py --concept circle --json bench_toy_erase.json
    python scripts/bench_toy_erase.py --concept circle --model pipelines/toy-sdxl --json bench_toy_erase_sdxl.json
    python scripts/bench_toy_erase.py --concept circle --model pipelines/toy-sdxl --weights-dtype bf16 \
        --use-8bit-adam --json bench_toy_erase_sdxl_lean.json   # what the memory options cost the erasure
    python scripts/bench_toy_erase.py --smoke --json /tmp/toy_erase.json      # seconds: the path only

``--json``: ``{"concept", "model", "rows": {row: figures}, "options", "smoke", "under_load", "threads"}``; ``--under-load``
records that other jobs shared the machine, so the rows' ``seconds`` are not cost figures.

Rows: ``salun`` (mask, keep 0.5), ``no_mask`` (every UNet weight trainable, same recipe) and, when the
toy world ships one for the concept (pipelines/toy-sd-retrain-<concept>), ``retrain``: the toy SD rebuilt
from the same seed and data with the concept left out, the exact-unlearning gold standard.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erase.diffusion.recipes import load_recipe  # noqa: E402
from erase.diffusion.job import EraseOptions, erase  # noqa: E402
from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD  # noqa: E402
from erase.diffusion.toy_quality import erasure_rates  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_erasure import shown  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", default="circle", help="a toy shape recipe (default %(default)s)")
    p.add_argument("--model", type=Path, default=TOY_SD)
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--per-colour", type=int, default=40, help="forget-concept images per colour (5 colours)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep-outputs", type=Path, default=None, help="keep the erased pipelines here")
    p.add_argument("--retrain", type=Path, default=None,
                   help="the Retrain model (default: pipelines/toy-sd-retrain-<concept> when it exists)")
    p.add_argument("--smoke", action="store_true",
                   help="the smallest run (4 + 4 drawn images, 1 step, 1 image per colour and rate, no Retrain "
                        "row): proves the path, measures nothing")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    p.add_argument("--weights-dtype", choices=("fp32", "bf16"), default="fp32",
                   help="salun erase's --weights-dtype for both erasures (bf16: the UNet held in bf16 while it trains)")
    p.add_argument("--use-8bit-adam", action="store_true",
                   help="salun erase's --use-8bit-adam for both erasures (Adam's moments in 8 bits; the 8bit extra)")
    a = p.parse_args()
    options = {"weights_dtype": a.weights_dtype, "use_8bit_adam": a.use_8bit_adam}
    rates = {"retain_per_pair": 8}
    if a.smoke:  # one colour, 5 sampling steps: seconds
        a.per_colour, a.steps = 1, 1
        rates = {"retain_per_pair": 1, "colours": ["red"], "steps": 5}
        recipe = load_recipe(a.concept, n_forget=4, n_retain=4, batch_size=4, gen_steps=5)
    else:
        recipe = load_recipe(a.concept)
    shape = recipe.extra.get("toy", {}).get("shape")
    if shape is None:
        sys.exit(f"{a.concept} is not a toy-world recipe")
    before = erasure_rates(str(a.model), a.judge, shape, per_colour=a.per_colour, **rates)
    rows = {}
    root = a.keep_outputs or Path(tempfile.mkdtemp(prefix="bench_toy_erase_"))
    for name, use_mask in (("salun", True), ("no_mask", False)):
        t0 = time.time()
        out = root / f"{a.concept}-{name}"
        summary = erase(EraseOptions(recipe=recipe, out=out, model=str(a.model), use_mask=use_mask, steps=a.steps,
                                     seed=a.seed, overwrite=True, progress=False, work_dir=root / ".work",
                                     **options))
        seconds = time.time() - t0
        after = erasure_rates(str(out), a.judge, shape, per_colour=a.per_colour, **rates)
        rows[name] = {"forget_rate_before": before["forget_rate"], "forget_rate_after": after["forget_rate"],
                      "synonym_rate_before": before["synonym_rate"], "synonym_rate_after": after["synonym_rate"],
                      "heldout_rate_before": before["heldout_rate"], "heldout_rate_after": after["heldout_rate"],
                      "retain_acc_before": before["retain_acc"], "retain_acc_after": after["retain_acc"],
                      "retain_per_shape_after": after["retain_per_shape"],
                      "n_forget_images": after["n_forget"], "n_retain_images": after["n_retain"],
                      "trainable_weights": summary["trainable_weights"], "steps": summary["steps"],
                      "seconds": round(seconds, 1)}
    # the shipped Retrain models are toy SD builds: the default applies to the toy SD only
    retrain = a.retrain or (PIPELINES / f"toy-sd-retrain-{a.concept}" if a.model.resolve() == TOY_SD else None)
    if retrain is not None and retrain.is_dir() and not a.smoke:
        after = erasure_rates(str(retrain), a.judge, shape, per_colour=a.per_colour, **rates)
        rows["retrain"] = {**{f"{k}_before": before[k] for k in ("forget_rate", "synonym_rate", "heldout_rate",
                                                                  "retain_acc")},
                           **{f"{k}_after": after[k] for k in ("forget_rate", "synonym_rate", "heldout_rate",
                                                                "retain_acc")},
                           "retain_per_shape_after": after["retain_per_shape"], "n_forget_images": after["n_forget"],
                           "n_retain_images": after["n_retain"], "trainable_weights": None, "steps": None,
                           "seconds": None, "model": shown(retrain)}
    print(f"toy world, erase '{a.concept}' ({rows['salun']['n_forget_images']} forget-prompt images, "
          f"{rows['salun']['n_retain_images']} retain images per model)")
    head = f"{'row':<9}{'forget':>15}{'synonym':>15}{'held-out':>15}{'retain acc':>15}{'trainable':>12}{'s':>7}"
    print(head)
    for name, r in rows.items():
        def pair(k):
            return f"{r[k + '_before']:.1%}->{r[k + '_after']:.1%}"
        print(f"{name:<9}{pair('forget_rate'):>15}{pair('synonym_rate'):>15}{pair('heldout_rate'):>15}"
              f"{pair('retain_acc'):>15}" + (f"{r['trainable_weights']:>12,}{r['seconds']:>7.0f}"
                                              if r["seconds"] is not None else f"{'-':>12}{'-':>7}"))
    if a.json:
        import torch

        from erase.toy import shapes as S

        result = {"concept": a.concept, "shape": shape, "synonym": S.SHAPES[shape][1], "model": shown(a.model),
                  "rows": rows, "options": options, "smoke": a.smoke,
                  "under_load": a.under_load, "threads": torch.get_num_threads(), "argv": sys.argv[1:]}
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
