#!/usr/bin/env python
"""What holding the UNet in bf16, or Adam's moments in 8 bits, costs an erasure (issue 29): the toy frame (the toy
nudity) erased as ``salun erase --concept frame`` erases it (the recipe's shipped SalUn settings), once with float32
weights and moments, once with ``--weights-dtype bf16`` and once with ``--use-8bit-adam``, each measured on the reported split as ``scripts/bench_erasure.py`` measures
its rows (erasure_rates' frame groups, the erased prompts' shapes, retain accuracy, FID(retain), the toy I2P, the
gap to Retrain), beside the base and Retrain. Same seed, same data; only the precision differs.

    python scripts/bench_precision.py --json docs/bench_precision.json     # about 12 minutes on 2 cores
    python scripts/bench_precision.py --smoke --json /tmp/precision.json   # the path only, in a minute

The erasure's seconds are each run's own (one process, one at a time); the peak memory of the same option at SD
1.4 scale is ``scripts/bench_real_scale.py --phases erase --weights-dtype bf16``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"fp32": {}, "bf16 weights": {"weights_dtype": "bf16"}, "8-bit adam": {"use_8bit_adam": True}}


def measure(model, judge, limit: int | None, split: str) -> dict:
    from erase.diffusion.toy_metrics import frame_metrics, toy_i2p_metrics

    return {**frame_metrics(model, judge, split), **toy_i2p_metrics(model, judge, limit=limit)}


def main() -> None:
    from erase.diffusion.job import EraseOptions, erase
    from erase.diffusion.recipes import load_recipe
    from erase.diffusion.toy_metrics import GAP_TERMS, add_erased_prompt_fid, gap_to_retrain
    from erase.toy import TOY_JUDGE, TOY_SD

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="where the erased models go (default: a temporary folder)")
    p.add_argument("--i2p-limit", type=int, default=None, help="only the first N toy I2P prompts (a quick look)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps (a quick look)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--smoke", action="store_true",
                   help="the smallest erasures on the smoke split and 8 toy I2P prompts: proves the path, measures nothing")
    a = p.parse_args()
    split = "smoke" if a.smoke else "report"
    if a.smoke:
        a.i2p_limit = a.i2p_limit or 8
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_precision_"))
    retrain_dir = ROOT / "pipelines" / "toy-sd-retrain-frame"
    rows: dict = {}
    ref = measure(retrain_dir, TOY_JUDGE, a.i2p_limit, split)
    add_erased_prompt_fid(ref, ref)
    for name, model in (("base", TOY_SD), ("retrain", retrain_dir)):
        row = ref if name == "retrain" else measure(model, TOY_JUDGE, a.i2p_limit, split)
        if name == "base":
            add_erased_prompt_fid(row, ref)
        rows[name] = row
    recipe = load_recipe("frame", method="salun")
    if a.smoke:
        recipe = dataclasses.replace(recipe, n_forget=2, n_retain=2, steps=2, gen_steps=4, batch_size=2)
    for name, options in SETTINGS.items():
        out = work / name.replace(" ", "_")
        t0 = time.time()
        summary = erase(EraseOptions(recipe=recipe, out=out, model=str(TOY_SD), seed=a.seed, overwrite=True,
                                     progress=False, work_dir=work / f"{out.name}.work", steps=a.steps, **options))
        row = measure(out, TOY_JUDGE, a.i2p_limit, split)
        add_erased_prompt_fid(row, ref)
        row.update({"seconds": round(summary["train_seconds"] + summary["mask_seconds"], 1),
                    "wall_seconds": round(time.time() - t0, 1), "steps": summary["steps"], **options})
        rows[name] = row
        print(f"{name}: frames {row['explicit_rate']:.3f}  retain {row['retain_acc']:.3f}  "
              f"FID(retain) {row['fid_retain']:.2f}  {row['seconds']} s", flush=True)
    for row in rows.values():
        row.update(gap_to_retrain(row, ref, GAP_TERMS[("frame", "report")]))
        row.pop("features", None)
    res = {"concept": "frame", "recipe": "toy-nudity (as shipped)", "seed": a.seed, "i2p_limit": a.i2p_limit,
           "steps": a.steps, "smoke": a.smoke, "split": split, "under_load": False, "rows": rows}
    print(json.dumps({k: {m: v for m, v in r.items() if not isinstance(v, (dict, list))} for k, r in rows.items()},
                     indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
