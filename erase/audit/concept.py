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
from typing import Any, Sequence

from ..core import distributed as dist
from ..core.outputs import guard_output, legacy_report
from ..core.checks import finite_float, image_size, positive_int
from ..core.errors import UserError
from ..diffusion.generate import as_uint8, generate, grid, to_pil
from ..diffusion.prepare import denoiser_fingerprint
from ..diffusion.pipeline import check_device
from ..diffusion.recipes import load_recipe
from ..core.fid import frechet_distance, judge_features
from .models import ModelRef, folders, model_refs

AUDIT = "audit concept"  # the command whose outputs these reports are (their marker)


def library_versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


# What the erased prompts draw (erase/diffusion/toy_quality.py): none of the shapes (rejected), another shape, and a valid
# other shape in the asked colour, what Retrain draws.
ERASED_PROMPT_KEYS = ("erased_prompt_acc", "erased_prompt_acc_ci", "erased_prompt_reject_rate",
                      "erased_prompt_reject_rate_ci", "erased_prompt_as_other", "erased_prompt_as_other_ci")


def audit_toy_concept(models: Sequence[Any], concept: str | list[str], out: Path, judge_dir: Path, per_colour: int = 40,
                      retain_per_pair: int = 8, overwrite: bool = False, grid_seeds: int = 4) -> dict:
    """Audit toy-world models for a toy shape recipe (or several, erased together: each one's rates, and
    the retain figures over the shapes none of them is); writes report.json, report.md and grid.png. ``models``:
    pipeline folders or hub ids, or toy SD pipelines in memory (``erase.audit.models.model_refs``)."""
    from ..toy import shapes as S
    from ..toy.judge import load_judge, require_reject
    from ..diffusion.toy_quality import multi_erasure_rates

    positive_int(per_colour, "--per-colour")
    positive_int(retain_per_pair, "--retain-per-pair")
    positive_int(grid_seeds, "grid_seeds")
    concepts = [concept] if isinstance(concept, str) else list(concept)
    shapes = []
    for c in concepts:
        recipe = load_recipe(c)
        shape = recipe.extra.get("toy", {}).get("shape")
        if recipe.extra.get("toy", {}).get("attribute"):
            raise UserError(f"{c!r} is the toy world's attribute, not an object: audit it with `salun audit "
                            "nudity --prompts toy-i2p --detector toy`")
        if shape is None:
            raise UserError(f"{c!r} is not a toy-world concept; the toy judge only knows "
                            f"{', '.join(S.SHAPES)}")
        if shape in shapes:
            raise UserError(f"--concept {c!r} is given twice")
        shapes.append(shape)
    shape = shapes[0]
    refs = model_refs(models)
    paths = folders(refs)
    out = Path(out)
    kinds = {_kind(r) for r in refs}
    if len(kinds) > 1:
        raise UserError("audit toy Stable Diffusion models and class-conditional DDPMs separately: their "
                        "samples are drawn differently and would not compare")
    ddpm = kinds == {"ddpm"}
    if ddpm and len(shapes) > 1:
        raise UserError("several concepts: the class-conditional DDPM path erases one class per run; audit one "
                        "--concept at a time")
    if not ddpm:  # a bad last model fails before the first one's images are drawn (load_ddpm checks DDPMs)
        for model in refs:
            model.check()
    guard_output(out, AUDIT, reads=[*paths, judge_dir], overwrite=overwrite, own=legacy_report(AUDIT))
    judge = require_reject(load_judge(judge_dir))  # counting what erased prompts draw needs "none of these"
    ref = S.draw_set(retain_per_pair * len(S.COLOURS) * (len(S.SHAPES) - len(shapes)), seed=4242,
                     shapes=[s for s in S.SHAPES if s not in shapes])
    report = {"concept": "+".join(concepts), "shape": shape, "classifier": "toy judge (erase/toy/judge.py)",
              **({"concepts": concepts, "shapes": shapes} if len(shapes) > 1 else {}),
              "fid_features": "toy judge penultimate layer (stand-in for Inception on the toy world)",
              "settings": {"per_colour": per_colour, "retain_per_pair": retain_per_pair, "seed": 1000},
              "versions": library_versions(), "models": {}}
    rows, names, ref_cache = [], [], {}
    for model in refs:
        if ddpm:
            r, picks, retain_imgs, pipe = _ddpm_rates(model.source, judge_dir, shape, per_colour * len(S.COLOURS),
                                                      retain_per_pair * len(S.COLOURS), grid_seeds)
            res = pipe.unet.config.sample_size
            report["settings"]["ddpm"] = {"steps": r["steps"], "w": r["w"], "resolution": res,
                                          "note": "samples upsampled to 32px for the judge; the FID reference "
                                                  "is drawings downsampled to the model's size and back"}
        else:
            pipe = model.load()
            imgs: dict = {}
            multi = multi_erasure_rates(pipe, judge_dir, shapes, per_colour=per_colour,
                                        retain_per_pair=retain_per_pair, images=imgs)
            per = multi.pop("per_concept")
            # several concepts: the worst concept's figure up front, each concept's in per_concept
            r = {k: max(v[k] for v in per.values()) for k in ("forget_rate", "synonym_rate", "heldout_rate")}
            # what the erased prompts draw: the worst concept's (lowest) share drawn as a valid other shape
            r.update({k: per[shape][k] for k in ERASED_PROMPT_KEYS} if len(shapes) == 1 else
                     {"erased_prompt_acc": min(v["erased_prompt_acc"] for v in per.values()),
                      "erased_prompt_reject_rate": max(v["erased_prompt_reject_rate"] for v in per.values())})
            r.update(n_forget=per[shape]["n_forget"], **multi)
            retain_imgs, res = imgs["retain"][2], None
            # grid rows: two forget prompts and two retain prompts, the first seeds of each
            picks = []
            keys = ((("forget_rate", 2), ("synonym_rate", 1)) if len(shapes) == 1 else
                    tuple((f"{s}/forget_rate", 1) for s in shapes))
            for key, want in (*keys, ("retain", 2)):
                prompts, seeds, ims = imgs[key]
                step = max(1, len(prompts) // want)
                for start in range(0, step * want, step):
                    picks.append((prompts[start], ims[start:start + grid_seeds]))
        if res not in ref_cache:
            from ..diffusion.ddpm.quality import reference_like

            ref_imgs = reference_like(ref.as_float(), res) if res else ref.as_float()
            ref_cache[res] = judge_features(judge, as_uint8(ref_imgs).transpose(0, 2, 3, 1))
        retain_u8 = as_uint8(retain_imgs).transpose(0, 2, 3, 1)
        fid = frechet_distance(judge_features(judge, retain_u8), ref_cache[res])
        name = unique_name(model.name, names)
        names.append(name)
        report["models"][name] = {
            "path": model.where, "unet_fingerprint": denoiser_fingerprint(pipe),
            "UA": 1 - r["forget_rate"], "forget_rate": r["forget_rate"], "synonym_rate": r.get("synonym_rate"),
            "heldout_rate": r.get("heldout_rate"), "retain_acc": r["retain_acc"],
            "retain_per_class": r.get("retain_per_shape") or r["retain_per_class"],
            "retain_colour_acc": r.get("retain_colour_acc"),
            "fid_retain": fid, "n_forget": r["n_forget"], "n_retain": r["n_retain"],
            **{k: r[k] for k in (*ERASED_PROMPT_KEYS, "retain_acc_ci", "retain_reject_rate", "retain_reject_rate_ci",
                                 "forget_rate_ci") if k in r}}
        if len(shapes) > 1:
            report["models"][name]["per_concept"] = {
                c: {"UA": 1 - per[s]["forget_rate"], **{k: per[s][k] for k in ("forget_rate", "synonym_rate",
                                                                                 "heldout_rate")}}
                for c, s in zip(concepts, shapes)}
        rows.append(picks)
    with dist.written_once(out, overwrite=overwrite, mark=AUDIT) as tmp:
        _write_grid(rows, names, tmp / "grid.png")
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        (tmp / "report.md").write_text(render_markdown(report))
    return report


def _kind(ref: ModelRef) -> str:
    from ..diffusion.pipeline import is_ddpm_folder

    if ref.in_memory:
        if type(ref.pipe).__name__ in ("ClassConditionalDDPMPipeline", "DDPMPipeline"):
            raise UserError("the class-conditional DDPM is audited from its folder: save it with save_pretrained "
                            "and pass the folder")
        return "sd"
    return "ddpm" if is_ddpm_folder(ref.source) else "sd"


def _ddpm_rates(model, judge_dir, shape: str, n_forget: int, n_retain_per_class: int, grid_seeds: int):
    """The toy audit's figures for a class-conditional DDPM (classes are shapes): rates, grid rows, retain
    samples (upsampled for the judge) and the pipeline."""
    from ..diffusion.ddpm.pipeline import load_ddpm
    from ..diffusion.ddpm.quality import class_rates, for_judge

    pipe = load_ddpm(model)
    imgs: dict = {}
    r = class_rates(pipe, judge_dir, per_class=n_retain_per_class, forget=shape, forget_per_class=n_forget,
                    images=imgs)
    f_labels, f_imgs = imgs["forget"]
    r_labels, r_imgs = imgs["retain"]
    picks = [(f"class {shape}", for_judge(f_imgs[:grid_seeds])),
             (f"class {shape}", for_judge(f_imgs[grid_seeds:2 * grid_seeds]))]
    for c in sorted(set(r_labels.tolist()))[:3]:
        sel = (r_labels == c).nonzero()[0][:grid_seeds]
        picks.append((f"class {pipe.class_names[c]}", for_judge(r_imgs[sel])))
    return r, picks, for_judge(r_imgs), pipe


def unique_name(name: str, taken: list[str]) -> str:
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


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def render_markdown(report: dict) -> str:
    lines = [f"# Concept audit: {report['concept']}", "",
             f"Classifier: {report['classifier']}. FID features: {report['fid_features']}.", "",
             "| model | UA | concept rate | synonym rate | held-out phrasing rate | erased prompt draws | rejected "
             "| retain acc | FID (retain) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m['UA']:.1%} | {m['forget_rate']:.1%} | {_pct(m['synonym_rate'])} | "
                     f"{_pct(m['heldout_rate'])} | {_pct(m.get('erased_prompt_acc'))} | "
                     f"{_pct(m.get('erased_prompt_reject_rate'))} | {m['retain_acc']:.1%} | {m['fid_retain']:.2f} |")
    if any("erased_prompt_acc" in m for m in report["models"].values()):
        lines += ["", "*Erased prompt draws*: the share of the concept's images (all three phrasings) that show a "
                  "valid shape that is not the erased one, in the asked colour (what Retrain draws); *rejected*: "
                  "the judge's \"none of these\" (a blank, noise, a smear, two shapes). A rejected image is never "
                  "counted as the concept."]
    if report.get("concepts"):
        lines += ["", f"Several concepts ({', '.join(report['concepts'])}): the rates above are the worst concept's; "
                  "retain accuracy and FID are over the shapes none of them is. Per concept:", "",
                  "| model | concept | UA | concept rate | synonym rate | held-out phrasing rate |", "|---|---|---|---|---|---|"]
        for name, m in report["models"].items():
            for c, v in m["per_concept"].items():
                lines.append(f"| {name} | {c} | {v['UA']:.1%} | {v['forget_rate']:.1%} | {v['synonym_rate']:.1%} | "
                             f"{v['heldout_rate']:.1%} |")
    lines += ["", "Retain accuracy per class:", "",
              "| model | " + " | ".join(next(iter(report["models"].values()))["retain_per_class"]) + " |",
              "|---|" + "---|" * len(next(iter(report["models"].values()))["retain_per_class"])]
    for name, m in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.1%}" for v in m["retain_per_class"].values()) + " |")
    lines += ["", "![before/after](grid.png)", ""]
    return "\n".join(lines)


def audit_prompt_concept(models: Sequence[Any], concept: str, out: Path, classifier: str = "auto",
                         classifier_weights: str = "imagenet", clip_arch: str = "ViT-B-32",
                         clip_weights: str | None = None, reference: Path | None = None, per_class: int = 10,
                         steps: int = 50, guidance: float = 7.5, size: int | None = None, device: str = "cpu",
                         overwrite: bool = False, fid_features: str = "inception",
                         inception_weights: str = "imagenet") -> dict:
    """Concept audit with a real classifier: ResNet-50 for Imagenette recipes, CLIP zero-shot otherwise.

    Labels: the ten Imagenette classes ("an image of a {class}") for an Imagenette recipe; else the
    recipe's first forget prompt plus its retain prompts. Each label's prompt is generated ``per_class``
    times (seeds 1000...) through every model; UA is the share of forget-prompt images not classified
    as the forget label. With CLIP weights: CLIP score. With ``reference`` images: FID of the retained
    labels' images against them, on torchvision Inception-v3 pool features (``fid_features="inception"``)
    or CLIP image features (``"clip"``); the report names which. ``models``: pipeline folders or hub ids, or
    pipelines in memory (``erase.audit.models.model_refs``).
    """
    import torch

    from ..diffusion.data import to_tensor, load_image_folder
    from .classifiers import IMAGENETTE_TO_IMAGENET, ClipModel, InceptionFeatures
    from .concept_classifiers import ClassifierContext, classifier_kind

    positive_int(per_class, "--per-class")
    positive_int(steps, "--steps")
    finite_float(guidance, "--guidance", low=0.0)
    image_size(size)
    device = check_device(device)
    recipe = load_recipe(concept)
    out = Path(out)
    refs = model_refs(models)
    for model in refs:  # a bad last model fails before any classifier is loaded or image drawn
        model.check()
    guard_output(out, AUDIT, reads=[*folders(refs), reference], overwrite=overwrite, own=legacy_report(AUDIT))
    imagenet_class = recipe.extra.get("imagenet_class")
    if imagenet_class is not None:
        labels = list(IMAGENETTE_TO_IMAGENET)
        prompts = [f"an image of a {c}" for c in labels]
        forget = labels.index(imagenet_class)
    else:
        labels = prompts = [recipe.forget_prompts[0]] + [p for p in recipe.retain_prompts if p != recipe.forget_prompts[0]]
        forget = 0
    kind = classifier_kind(classifier, recipe)
    kind.check(recipe, clip_weights)
    # "random" builds CLIP with random weights: for structure tests only, the figures mean nothing.
    clip = ClipModel(clip_arch, None if clip_weights == "random" else clip_weights, device) if clip_weights else None
    classify = kind.make(ClassifierContext(labels, recipe, device, classifier_weights, clip))
    ref_feats, featurize = None, None
    if reference is not None:
        ref = load_image_folder(reference, caption="reference")  # a missing folder fails before any download
        if fid_features == "clip":
            if clip is None:
                raise UserError("--fid-features clip needs --clip-weights")
            featurize = clip.image_embeddings
        elif fid_features == "inception":
            featurize = InceptionFeatures(inception_weights, device)
        else:
            raise UserError(f"unknown --fid-features {fid_features!r}: inception or clip")
        ref_feats = featurize(torch.stack([to_tensor(p, 299) for p in ref.images])).numpy()
    all_prompts = [p for p in prompts for _ in range(per_class)]
    seeds = [1000 + k for _ in prompts for k in range(per_class)]
    truth = torch.tensor([i for i in range(len(prompts)) for _ in range(per_class)])
    report = {"concept": concept, "classifier": kind.name, "labels": labels, "forget_label": labels[forget],
              "fid_features": ({"clip": "CLIP image embeddings", "inception": "torchvision Inception-v3 pool "
                                "(not the TF-FID weights)"}[fid_features] if ref_feats is not None else None),
              "settings": {"per_class": per_class, "steps": steps, "guidance": guidance, "seed": 1000},
              "versions": library_versions(), "models": {}}
    rows, names = [], []
    for model in refs:
        pipe = model.load(device)
        images = generate(pipe, all_prompts, seeds, steps=steps, guidance=guidance, height=size, width=size)
        pred = classify(images)
        correct = pred == truth
        per = {labels[i]: float(correct[truth == i].float().mean()) for i in range(len(labels))}
        retain_mask = truth != forget
        entry = {"path": model.where, "unet_fingerprint": denoiser_fingerprint(pipe),
                 "UA": 1 - per[labels[forget]], "forget_acc": per[labels[forget]],
                 "retain_acc": float(correct[retain_mask].float().mean()) if retain_mask.any() else None,
                 "per_class_acc": per}
        if clip is not None:
            entry["clip_score"] = clip.clip_score(images, all_prompts)
        if ref_feats is not None:
            entry["fid_retain"] = frechet_distance(featurize(images[retain_mask]).numpy(), ref_feats)
        name = unique_name(model.name, names)
        names.append(name)
        report["models"][name] = entry
        show = [forget] + [i for i in range(len(prompts)) if i != forget][:2]
        rows.append([(prompts[i], images[i * per_class:i * per_class + min(4, per_class)]) for i in show])
        del pipe
    with dist.written_once(out, overwrite=overwrite, mark=AUDIT) as tmp:
        _write_grid(rows, names, tmp / "grid.png")
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        (tmp / "report.md").write_text(render_classified_markdown(report))
    return report


def render_classified_markdown(report: dict) -> str:
    lines = [f"# Concept audit: {report['concept']} ({report['classifier']})", "",
             f"Forget label: `{report['forget_label']}`; {report['settings']['per_class']} images per label.", "",
             f"FID features: {report['fid_features'] or '-'}.", "",
             "| model | UA | retain acc | CLIP score | FID (retain) |", "|---|---|---|---|---|"]
    for name, m in report["models"].items():
        cs = f"{m['clip_score']:.2f}" if "clip_score" in m else "-"
        fid = f"{m['fid_retain']:.2f}" if "fid_retain" in m else "-"
        ra = f"{m['retain_acc']:.1%}" if m["retain_acc"] is not None else "-"
        lines.append(f"| {name} | {m['UA']:.1%} | {ra} | {cs} | {fid} |")
    lines += ["", "| model | " + " | ".join(report["labels"]) + " |", "|---|" + "---|" * len(report["labels"])]
    for name, m in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.0%}" for v in m["per_class_acc"].values()) + " |")
    lines += ["", "![before/after](grid.png)", ""]
    return "\n".join(lines)
