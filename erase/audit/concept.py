"""Concept audit: does the model still draw the erased concept, and does it still draw the rest?

For each model: generate the forget concept's prompts and the retain concepts' prompts (fixed seeds,
the same for every model), classify them, and report UA (share of forget-concept images *not*
classified as the concept), retain accuracy per class, and FID of the retained classes against
reference images. Plus a before/after grid: the same prompts and seeds through every model.

Classifier: on the toy world, the toy judge (and its penultimate layer stands in for Inception in
FID, since Inception weights cannot be downloaded here).
"""
from __future__ import annotations

import json
import platform
from pathlib import Path


from ..errors import UserError
from ..generate import as_uint8, grid, to_pil
from ..mask import fingerprint
from ..pipeline import load_pipeline
from ..recipes import load_recipe
from .fid import frechet_distance, judge_features


def _versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def audit_toy_concept(models: list[str], concept: str, out: Path, judge_dir: Path, per_colour: int = 40,
                      retain_per_pair: int = 8, overwrite: bool = False, grid_seeds: int = 4) -> dict:
    """Audit toy-world models for a toy shape recipe; writes report.json, report.md and grid.png."""
    from ..atomic import atomic_dir
    from ..toy import shapes as S
    from ..toy.judge import load_judge
    from ..toy.quality import erasure_rates

    recipe = load_recipe(concept)
    shape = recipe.extra.get("toy", {}).get("shape")
    if shape is None:
        raise UserError(f"{concept!r} is not a toy-world concept; the toy judge only knows "
                        f"{', '.join(S.SHAPES)}")
    if not models:
        raise UserError("give at least one --model")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists: choose another --out or pass --overwrite")
    judge = load_judge(judge_dir)
    ref = S.draw_set(retain_per_pair * len(S.COLOURS) * (len(S.SHAPES) - 1), seed=4242,
                     shapes=[s for s in S.SHAPES if s != shape])
    ref_feats = judge_features(judge, ref.images)
    report = {"concept": concept, "shape": shape, "classifier": "toy judge (erase/toy/judge.py)",
              "fid_features": "toy judge penultimate layer (stand-in for Inception on the toy world)",
              "settings": {"per_colour": per_colour, "retain_per_pair": retain_per_pair, "seed": 1000},
              "versions": _versions(), "models": {}}
    rows, names = [], []
    for i, model in enumerate(models):
        pipe = load_pipeline(model)
        imgs: dict = {}
        r = erasure_rates(pipe, judge_dir, shape, per_colour=per_colour, retain_per_pair=retain_per_pair,
                          images=imgs)
        retain_u8 = as_uint8(imgs["retain"][2]).transpose(0, 2, 3, 1)
        fid = frechet_distance(judge_features(judge, retain_u8), ref_feats)
        name = _unique(Path(model).name or str(model), names)
        names.append(name)
        report["models"][name] = {
            "path": str(model), "unet_fingerprint": fingerprint(dict(pipe.unet.named_parameters())),
            "UA": 1 - r["forget_rate"], "forget_rate": r["forget_rate"], "synonym_rate": r["synonym_rate"],
            "heldout_rate": r["heldout_rate"], "retain_acc": r["retain_acc"],
            "retain_per_class": r["retain_per_shape"], "retain_colour_acc": r["retain_colour_acc"],
            "fid_retain": fid, "n_forget": r["n_forget"], "n_retain": r["n_retain"]}
        # grid rows: two forget prompts and two retain prompts, the first seeds of each
        picks = []
        for key, want in (("forget_rate", 2), ("synonym_rate", 1), ("retain", 2)):
            prompts, seeds, ims = imgs[key]
            step = max(1, len(prompts) // want)
            for start in range(0, step * want, step):
                picks.append((prompts[start], ims[start:start + grid_seeds]))
        rows.append(picks)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        _write_grid(rows, names, tmp / "grid.png")
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        (tmp / "report.md").write_text(render_markdown(report))
    return report


def _unique(name: str, taken: list[str]) -> str:
    k, base = 2, name
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def _write_grid(rows_per_model, names, path: Path) -> None:
    """Rows = prompts; column blocks = models (same seeds): the first thing a person looks at."""
    import torch

    n_prompts = len(rows_per_model[0])
    per = rows_per_model[0][0][1].shape[0]
    tiles, labels = [], []
    for r in range(n_prompts):
        labels.append(rows_per_model[0][r][0])
        for m in range(len(names)):
            tiles.append(rows_per_model[m][r][1])
    images = to_pil(torch.cat(tiles))
    col_labels = [names[m] if k == 0 else "" for m in range(len(names)) for k in range(per)]
    grid(images, cols=per * len(names), scale=3, row_labels=labels, col_labels=col_labels).save(path)


def render_markdown(report: dict) -> str:
    lines = [f"# Concept audit: {report['concept']}", "",
             f"Classifier: {report['classifier']}. FID features: {report['fid_features']}.", "",
             "| model | UA | concept rate | synonym rate | held-out phrasing rate | retain acc | FID (retain) |",
             "|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m['UA']:.1%} | {m['forget_rate']:.1%} | {m['synonym_rate']:.1%} | "
                     f"{m['heldout_rate']:.1%} | {m['retain_acc']:.1%} | {m['fid_retain']:.2f} |")
    lines += ["", "Retain accuracy per class:", "",
              "| model | " + " | ".join(next(iter(report["models"].values()))["retain_per_class"]) + " |",
              "|---|" + "---|" * len(next(iter(report["models"].values()))["retain_per_class"])]
    for name, m in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.1%}" for v in m["retain_per_class"].values()) + " |")
    lines += ["", "![before/after](grid.png)", ""]
    return "\n".join(lines)
