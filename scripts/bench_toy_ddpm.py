#!/usr/bin/env python
"""Toy-world DDPM benchmark: erase one class from the shipped class-conditional DDPM with SalUn.

Times the erasure (data, mask, training and export: everything `salun erase` does), then audits the
base and the erased model with the same seeds (erase/audit/concept.py): the judge's rate for the
forgotten class (200 samples), accuracy on every other class (40 samples each), FID of the other
classes (toy-judge features), and a before/after grid. Prints a summary and writes --json:

    python scripts/bench_toy_ddpm.py --forget-class circle --json bench_toy_ddpm.json --out bench-ddpm
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erase.audit.concept import audit_toy_concept  # noqa: E402
from erase.diffusion.ddpm.unlearn import DDPMEraseOptions, erase_class  # noqa: E402
from erase.toy import TOY_DDPM, TOY_JUDGE  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=TOY_DDPM)
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--forget-class", default="circle")
    p.add_argument("--per-colour", type=int, default=40, help="forget-class samples = 5 x this (default 200)")
    p.add_argument("--retain-per-pair", type=int, default=8, help="samples per other class = 5 x this (default 40)")
    p.add_argument("--steps", type=int, default=None, help="erasure steps (default: the toy recipe's)")
    p.add_argument("--alpha", type=float, default=None, help="retain-loss weight (default: the toy recipe's)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the toy recipe's)")
    p.add_argument("--no-mask", action="store_true", help="ablation: every UNet weight trainable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="keep the erased model and the audit here")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = a.out or Path(tmp)
        erased = root / f"erased-{a.forget_class}"
        t0 = time.time()
        summary = erase_class(DDPMEraseOptions(model=a.model, forget_class=a.forget_class, out=erased, steps=a.steps,
                                               alpha=a.alpha, lr=a.lr, use_mask=not a.no_mask, seed=a.seed, work_dir=root / "work",
                                               overwrite=True))
        seconds = time.time() - t0
        report = audit_toy_concept([str(a.model), str(erased)], a.forget_class, root / "audit", a.judge,
                                   per_colour=a.per_colour, retain_per_pair=a.retain_per_pair, overwrite=True)
    before, after = report["models"].values()
    drops = {k: before["retain_per_class"][k] - after["retain_per_class"][k] for k in before["retain_per_class"]}
    result = {"forget_class": a.forget_class, "forget_rate_before": before["forget_rate"],
              "forget_rate_after": after["forget_rate"], "UA_after": after["UA"],
              "retain_acc_before": before["retain_acc"], "retain_acc_after": after["retain_acc"],
              "retain_per_class_before": before["retain_per_class"],
              "retain_per_class_after": after["retain_per_class"], "max_class_drop": max(drops.values()),
              "fid_retain_before": before["fid_retain"], "fid_retain_after": after["fid_retain"],
              "n_forget": after["n_forget"], "n_retain": after["n_retain"], "seconds": round(seconds, 1),
              "mask_seconds": summary["mask_seconds"], "train_seconds": summary["train_seconds"],
              "steps": summary["steps"], "alpha": summary["alpha"], "lr": summary["lr"], "masked": not a.no_mask,
              "outputs": str(root) if a.out else None}
    print(f"class {a.forget_class!r}: judged as drawn {result['forget_rate_before']:.1%} -> "
          f"{result['forget_rate_after']:.1%} of {result['n_forget']} samples (UA {result['UA_after']:.1%})")
    print(f"other classes: accuracy {result['retain_acc_before']:.1%} -> {result['retain_acc_after']:.1%} "
          f"({result['n_retain']} samples); largest per-class drop {100 * result['max_class_drop']:.1f} points")
    print("per class: " + ", ".join(f"{k} {before['retain_per_class'][k]:.0%}->{after['retain_per_class'][k]:.0%}"
                                    for k in drops))
    print(f"FID (other classes, judge features): {result['fid_retain_before']:.2f} -> {result['fid_retain_after']:.2f}")
    print(f"erasure: {seconds:.1f} s (mask {summary['mask_seconds']} s, training {summary['train_seconds']} s, "
          f"{summary['steps']} steps)")
    if a.out:
        print(f"erased model and audit (report.md, grid.png) in {a.out}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
