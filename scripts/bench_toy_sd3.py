#!/usr/bin/env python
"""The circle and frame erasures on the toy SD3 world (a flow-matching MMDiT), in the erasure benchmark's
harness and reported split (``erase.diffusion.toy_metrics``: seeds from 1000, 200 images per forget group,
500 / 480 plain images, the judge with its "none of these" outcome):

    OMP_NUM_THREADS=2 python scripts/bench_toy_sd3.py --json docs/bench_toy_sd3.json
    python scripts/bench_toy_sd3.py --smoke --json /tmp/sd3.json          # the path only: measures nothing
    OMP_NUM_THREADS=2 python scripts/bench_toy_sd3.py --add-retrain --json docs/bench_toy_sd3.json

Rows per concept: ``base`` (the toy SD3 before), ``salun`` and ``rl`` (SalUn's loss through its saliency
mask, and on every weight), each at the settings its recipe gives the toy SD (``prompts/toy.json``,
``prompts/toy-nudity.json``: the toy SD's tuned ones): **not tuned for SD3**; and ``retrain``, the toy SD3
rebuilt without the concept (``pipelines/toy-sd3-retrain-<concept>``, or ``--retrain CONCEPT=PATH``), measured in
the same split when it exists. ``--add-retrain`` measures only the Retrain rows and adds them to an earlier run's
``--json`` (recorded in ``retrain_added``); the other rows are not measured again. ``seconds``: the mask and the training,
as the erasure benchmark counts them; ``job_seconds``: the whole erasure (drawing its forget and retain images,
encoding, the mask, training, export). The toy SD's rows of the same harness and split are copied beside
(``toy_sd``) from ``docs/bench_erasure_<concept>.json``, which ``scripts/bench_erasure.py`` wrote.
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

from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD3  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_erasure import misaligned_shape, shown  # noqa: E402
METHODS = ("salun", "rl")


def measure(concept: str, model, judge: Path, target, split: str) -> dict:
    from erase.diffusion.toy_metrics import frame_metrics, shape_metrics

    row = shape_metrics(model, judge, "circle", target, split) if concept == "circle" else \
        frame_metrics(model, judge, split)
    return {k: v for k, v in row.items() if k != "features"}


SHOWN = ("forget_rate", "synonym_rate", "heldout_rate", "explicit_prompt_frame_rate", "implicit_prompt_frame_rate",
         "neutral_rate", "erased_prompt_acc", "retain_acc", "worst_retain_acc", "worst_retain_shape", "fid_retain",
         "trainable_weights", "seconds", "chosen")


def toy_sd_rows(concept: str) -> dict:
    """The toy SD's rows of the same harness and split, as ``scripts/bench_erasure.py`` measured them
    (``docs/bench_erasure_<concept>.json``: base, Retrain, and SalUn and RL at their tuned settings), shown beside."""
    path = ROOT / "docs" / f"bench_erasure_{concept}.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())[concept]
    return {"source": str(path.relative_to(ROOT)),
            **{name: {k: data[name][k] for k in SHOWN if k in data[name]} for name in ("base", "salun", "rl", "retrain")}}


def retrain_of(a, concept: str) -> Path | None:
    """``--retrain CONCEPT=PATH``, else the shipped ``pipelines/toy-sd3-retrain-<concept>`` when it exists."""
    if concept in a.retrain:
        if not (a.retrain[concept] / "model_index.json").is_file():
            sys.exit(f"--retrain {concept}={a.retrain[concept]}: not a pipeline folder (no model_index.json)")
        return a.retrain[concept]
    path = PIPELINES / f"toy-sd3-retrain-{concept}"
    return path if (path / "model_index.json").is_file() else None


def retrain_row(a, concept: str, target, split: str) -> dict | None:
    path = retrain_of(a, concept)
    if path is None:
        print(f"{concept}: no Retrain model (pipelines/toy-sd3-retrain-{concept}): no retrain row", flush=True)
        return None
    return {**measure(concept, path, a.judge, target, split), "model": shown(path)}


def add_retrain(a) -> None:
    """Measure only the Retrain rows and add them to the earlier run's ``--json`` (rewritten atomically)."""
    from erase.core.atomic import write_text_atomic
    from erase.diffusion.recipes import load_recipe

    result = json.loads(a.json.read_text())
    split = result["split"]
    added = {}
    for concept in a.concept or list(result["concepts"]):
        if concept not in result["concepts"]:
            sys.exit(f"{a.json} has no {concept} rows to add a Retrain row to")
        target = misaligned_shape(load_recipe(concept, method="salun")) if concept == "circle" else None
        t0 = time.time()
        row = retrain_row(a, concept, target, split)
        if row is None:
            continue
        result["concepts"][concept]["retrain"] = row
        added[concept] = round(time.time() - t0, 1)
        print_rows(concept, {"retrain": row})
        before = result.get("retrain_added", {})
        commands = before.get("commands") or {c: before["argv"] for c in before.get("concepts", {})}
        result["retrain_added"] = {"concepts": {**before.get("concepts", {}), **added},  # seconds each took
                                   "commands": {**commands, concept: sys.argv[1:]},
                                   "note": "measured after the other rows, by the same harness and split; "
                                           "the other rows were not measured again"}
        write_text_atomic(a.json, json.dumps(result, indent=2) + "\n")


def print_rows(concept: str, rows: dict) -> None:
    keys = ("forget_rate", "synonym_rate", "heldout_rate") if concept == "circle" else \
        ("explicit_prompt_frame_rate", "implicit_prompt_frame_rate", "neutral_rate")
    for name, r in rows.items():
        print(f"{concept} {name:<7}" + "".join(f" {k} {r[k]:.1%}" for k in keys)
              + f" retain {r['retain_acc']:.1%} worst {r['worst_retain_acc']:.1%} FID {r['fid_retain']:.2f}",
              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=TOY_SD3)
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--concept", action="append", choices=("circle", "frame"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep-outputs", type=Path, default=None, help="keep the erased pipelines here")
    p.add_argument("--smoke", action="store_true", help="a handful of images and one step: the path only")
    p.add_argument("--retrain", action="append", default=[], metavar="CONCEPT=PATH",
                   help="a Retrain model (default pipelines/toy-sd3-retrain-<concept> when it exists)")
    p.add_argument("--add-retrain", action="store_true",
                   help="measure only the Retrain rows and add them to the earlier run's --json")
    a = p.parse_args()
    if any("=" not in item for item in a.retrain):
        p.error("--retrain takes CONCEPT=PATH, e.g. circle=pipelines/toy-sd3-retrain-circle")
    a.retrain = {k: Path(v) for k, v in (item.split("=", 1) for item in a.retrain)}
    if a.add_retrain:
        if a.json is None or not a.json.is_file():
            p.error("--add-retrain needs --json naming an earlier run's figures")
        add_retrain(a)
        return
    import torch

    from erase.diffusion.job import EraseOptions, erase
    from erase.diffusion.recipes import load_recipe

    split = "smoke" if a.smoke else "report"
    root = a.keep_outputs or Path(tempfile.mkdtemp(prefix="bench_toy_sd3_"))
    result: dict = {"model": str(a.model.resolve().relative_to(ROOT)) if a.model.resolve().is_relative_to(ROOT)
                    else str(a.model), "split": split, "smoke": a.smoke, "threads": torch.get_num_threads(),
                    "argv": sys.argv[1:], "concepts": {}}
    for concept in a.concept or ["circle", "frame"]:
        rows = {}
        target = None
        for method in METHODS:
            recipe = load_recipe(concept, method=method)
            target = misaligned_shape(recipe) if concept == "circle" else None
            if a.smoke:
                recipe = dataclasses.replace(recipe, n_forget=4, n_retain=4, batch_size=4, gen_steps=5, steps=1)
            out = root / f"{concept}-{method}"
            t0 = time.time()
            summary = erase(EraseOptions(recipe=recipe, out=out, model=str(a.model), method=method, seed=a.seed,
                                         overwrite=True, progress=False, work_dir=root / f".work-{concept}-{method}"))
            rows[method] = {"seconds": round(summary["train_seconds"] + summary["mask_seconds"], 1),
                            "job_seconds": round(time.time() - t0, 1), "steps": summary["steps"],
                            "trainable_weights": summary["trainable_weights"], "lr": recipe.lr,
                            "alpha": recipe.alpha, "keep": recipe.keep if method == "salun" else None}
            print(f"{concept}: erased with {method}: mask + training {rows[method]['seconds']} s, the whole job "
                  f"{rows[method]['job_seconds']} s", flush=True)
        rows = {"base": measure(concept, a.model, a.judge, target, split),
                **{m: {**measure(concept, root / f"{concept}-{m}", a.judge, target, split), **rows[m]}
                   for m in METHODS}}
        retrain = retrain_row(a, concept, target, split)
        if retrain is not None:
            rows["retrain"] = retrain
        print_rows(concept, rows)
        result["concepts"][concept] = rows
        result.setdefault("toy_sd", {})[concept] = toy_sd_rows(concept)
        if a.json:  # after each concept, so a long run keeps what it has
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
