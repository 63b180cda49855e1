#!/usr/bin/env python
"""Toy-world DDPM benchmark: erase one class from the shipped class-conditional DDPM with SalUn.

Times the erasure (data, mask, training and export: everything `salun erase` does), then audits the
base and the erased model with the same seeds (erase/audit/concept.py): the judge's rate for the
forgotten class (200 samples), accuracy on every other class (40 samples each), FID of the other
classes (toy-judge features), and a before/after grid. Prints a summary and writes --json:

    python scripts/bench_toy_ddpm.py --forget-class circle --json bench_toy_ddpm.json --out bench-ddpm
    python scripts/bench_toy_ddpm.py --table --json docs/bench_toy_ddpm.json     # the README table's five rows
    python scripts/bench_toy_ddpm.py --smoke --json /tmp/ddpm.json                # seconds: the path only

``--json`` writes ``{"rows": [one dict per run], "under_load": ..., "threads": ...}``; each row has ``name``
(``recipe``, ``no_mask``, ``alpha<A>``, ``class-<C>``), the rates before and after, ``max_class_drop`` and
``max_drop_classes``, FID before and after, and ``seconds`` (the whole erasure). ``--under-load`` records that
the machine was shared, so the seconds are not cost figures.
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
from erase.diffusion.ddpm.stages import erase_class  # noqa: E402
from erase.diffusion.options import DDPMEraseOptions  # noqa: E402
from erase.toy import TOY_DDPM, TOY_JUDGE  # noqa: E402


# The README table's rows: (name, forget class, alpha (None: the toy recipe's), mask)
TABLE = (("recipe", None, None, True), ("no_mask", None, None, False), ("alpha0.1", None, 0.1, True),
         ("alpha0.001", None, 1e-3, True), ("class-star", "star", None, True))
SMOKE = dict(steps=2, batch_size=4, n_forget=8, n_retain=8, per_colour=1, retain_per_pair=1)


def run_row(a, name: str, forget_class: str, alpha: float | None, use_mask: bool, root: Path) -> dict:
    """One erasure of ``forget_class`` and its audit beside the base model."""
    smoke = SMOKE if a.smoke else {}
    erased = root / f"erased-{name}"
    t0 = time.time()
    summary = erase_class(DDPMEraseOptions(model=a.model, forget_class=forget_class, out=erased,
                                           steps=smoke.get("steps", a.steps), alpha=alpha, lr=a.lr,
                                           batch_size=smoke.get("batch_size"), n_forget=smoke.get("n_forget"),
                                           n_retain=smoke.get("n_retain"), use_mask=use_mask, seed=a.seed,
                                           work_dir=root / f"work-{name}", overwrite=True, progress=False))
    seconds = time.time() - t0
    report = audit_toy_concept([str(a.model), str(erased)], forget_class, root / f"audit-{name}", a.judge,
                               per_colour=smoke.get("per_colour", a.per_colour),
                               retain_per_pair=smoke.get("retain_per_pair", a.retain_per_pair), overwrite=True)
    before, after = report["models"].values()
    drops = {k: before["retain_per_class"][k] - after["retain_per_class"][k] for k in before["retain_per_class"]}
    worst = max(drops.values())
    return {"name": name, "forget_class": forget_class, "forget_rate_before": before["forget_rate"],
            "forget_rate_after": after["forget_rate"], "UA_after": after["UA"],
            "retain_acc_before": before["retain_acc"], "retain_acc_after": after["retain_acc"],
            "retain_per_class_before": before["retain_per_class"],
            "retain_per_class_after": after["retain_per_class"], "max_class_drop": worst,
            "max_drop_classes": [k for k, v in drops.items() if v == worst and worst > 0],
            "fid_retain_before": before["fid_retain"], "fid_retain_after": after["fid_retain"],
            "n_forget": after["n_forget"], "n_retain": after["n_retain"], "seconds": round(seconds, 1),
            "mask_seconds": summary["mask_seconds"], "train_seconds": summary["train_seconds"],
            "steps": summary["steps"], "batch_size": summary.get("batch_size"), "alpha": summary["alpha"],
            "lr": summary["lr"], "masked": use_mask, "outputs": str(root) if a.out else None}


def report_row(r: dict) -> None:
    print(f"[{r['name']}] class {r['forget_class']!r}: judged as drawn {r['forget_rate_before']:.1%} -> "
          f"{r['forget_rate_after']:.1%} of {r['n_forget']} samples (UA {r['UA_after']:.1%})")
    print(f"other classes: accuracy {r['retain_acc_before']:.1%} -> {r['retain_acc_after']:.1%} "
          f"({r['n_retain']} samples); largest per-class drop {100 * r['max_class_drop']:.1f} points")
    print("per class: " + ", ".join(f"{k} {v:.0%}->{r['retain_per_class_after'][k]:.0%}"
                                    for k, v in r["retain_per_class_before"].items()))
    print(f"FID (other classes, judge features): {r['fid_retain_before']:.2f} -> {r['fid_retain_after']:.2f}")
    print(f"erasure: {r['seconds']:.1f} s (mask {r['mask_seconds']} s, training {r['train_seconds']} s, "
          f"{r['steps']} steps)", flush=True)


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
    p.add_argument("--table", action="store_true",
                   help="run the README table's five rows (the toy recipe, no mask, alpha 0.1, alpha 1e-3, "
                        "--forget-class star) instead of one run; --alpha and --no-mask are then the rows'")
    p.add_argument("--smoke", action="store_true",
                   help="the smallest run (2 steps on 8 + 8 images, 5 + 25 audit samples): proves the path, "
                        "measures nothing")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="keep the erased models and the audits here")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.table and (a.alpha is not None or a.no_mask):
        p.error("--table runs its own rows: leave out --alpha and --no-mask")

    runs = ([(name, cls or a.forget_class, alpha, mask) for name, cls, alpha, mask in TABLE] if a.table else
            [("recipe" if a.alpha is None and not a.no_mask else "no_mask" if a.alpha is None else f"alpha{a.alpha:g}",
              a.forget_class, a.alpha, not a.no_mask)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = a.out or Path(tmp)
        for name, cls, alpha, mask in runs:
            rows.append(run_row(a, name, cls, alpha, mask, root))
            report_row(rows[-1])
    if a.out:
        print(f"erased models and audits (report.md, grid.png) in {a.out}")
    if a.json:
        import torch

        result = {"rows": rows, "smoke": a.smoke, "under_load": a.under_load, "threads": torch.get_num_threads(),
                  "argv": sys.argv[1:]}
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
