"""How well a toy pipeline draws what it is asked for, as judged by the toy judge."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..defaults import TOY_SAMPLING_GUIDANCE as DEFAULT_GUIDANCE, TOY_SAMPLING_STEPS as DEFAULT_STEPS
from ..toy import attribute as A
from ..toy import shapes as S
from ..core.stats import rate_ci
from ..toy.judge import classify, detect_attribute, judge_images, load_judge, require_reject


def concept_prompts(shapes, colours, per_pair: int, template: str = "a {colour} {shape}", synonym: int = 0,
                    seed: int = 0):
    """Every shape x colour ``per_pair`` times, with fixed seeds; returns prompts, seeds, labels."""
    prompts, seeds, ys, yc = [], [], [], []
    for s in shapes:
        for c in colours:
            for k in range(per_pair):
                prompts.append(S.caption(s, c, template, synonym))
                seeds.append(seed + k)
                ys.append(list(S.SHAPES).index(s))
                yc.append(list(S.COLOURS).index(c))
    return prompts, seeds, np.array(ys), np.array(yc)


def judge_rates(judge, images, shape_ids, colour_ids, shapes) -> dict:
    """Shape accuracy (a rejected image counts as wrong when the judge has the reject head), colour accuracy,
    per-shape accuracy and, with the reject head, the share rejected; rates carry Wilson 95% intervals."""
    ps, pc = classify(judge, images)
    rej = judge.reject_score(images) > float(judge.reject_threshold) if judge.reject_head is not None else \
        np.zeros(len(ps), dtype=bool)
    ok = (ps == shape_ids) & ~rej
    per_shape = {s: float(ok[shape_ids == list(S.SHAPES).index(s)].mean()) for s in shapes}
    out = {"shape_acc": float(ok.mean()), "colour_acc": float((pc == colour_ids).mean()),
           "per_shape": per_shape, "n": int(len(ps)), "shape_acc_ci": list(rate_ci(ok))}
    if judge.reject_head is not None:
        out["reject_rate"], out["reject_rate_ci"] = float(rej.mean()), list(rate_ci(rej))
    return out


def attribute_templates(group: str) -> list[str]:
    """The prompt templates of one attribute group ("explicit", "implicit", "heldout_implicit"), with
    "{subject}" left to fill; explicit ones cycle through both of the attribute's words."""
    if group in ("explicit", "tuning_explicit"):
        pool = A.EXPLICIT_TEMPLATES if group == "explicit" else A.TUNING_EXPLICIT_TEMPLATES
        return [t.replace("{word}", w) for t in pool for w in A.EXPLICIT_WORDS]
    return list({"implicit": A.IMPLICIT_TEMPLATES, "heldout_implicit": A.HELDOUT_IMPLICIT_TEMPLATES,
                 "tuning_implicit": A.TUNING_IMPLICIT_TEMPLATES}[group])


def attribute_prompts(group: str, shapes, colours, per_pair: int, seed: int = 0):
    """Every shape x colour ``per_pair`` times in one attribute group's phrasings (cycling), fixed seeds."""
    templates = attribute_templates(group)
    prompts, seeds = [], []
    for s in shapes:
        for c in colours:
            for k in range(per_pair):
                t = templates[len(prompts) % len(templates)]
                prompts.append(" ".join(t.format(subject=S.subject(s, c)).split()))
                seeds.append(seed + k)
    return prompts, seeds


def attribute_rates(pipe, judge, shapes, colours, per_pair: int = 2, steps: int = DEFAULT_STEPS,
                    guidance: float = DEFAULT_GUIDANCE, seed: int = 0) -> dict:
    """Share of images showing the frame for explicit, implicit and held-out implicit prompts."""
    from .generate import generate

    out = {}
    for group in ("explicit", "implicit", "heldout_implicit"):
        prompts, seeds = attribute_prompts(group, shapes, colours, per_pair, seed)
        images = generate(pipe, prompts, seeds, steps=steps, guidance=guidance, progress=False)
        kinds, _ = detect_attribute(judge, images)
        framed = kinds > 0
        out[group] = {"rate": float(framed.mean()), "rate_ci": list(rate_ci(framed)), "n": len(prompts),
                      "example_prompt": prompts[0]}
    return out


def evaluate_quality(model, judge_dir, shapes=None, colours=None, per_pair: int = 8,
                     steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 0,
                     grid_path: str | Path | None = None, attribute: bool = False) -> dict:
    """Generate every shape x colour ``per_pair`` times and let the judge say what it sees.

    Three prompt sets: the concept's name ("a red circle"), its trained synonym ("a red disk") and
    a phrasing training never saw. ``attribute``: also the frame's rate for explicit, implicit and held-out
    implicit prompts, and (``neutral``) on the name prompts, which never mention it.
    """
    from .generate import generate, grid, to_pil
    from .pipeline import load_pipeline

    shapes, colours = S.check_shapes(shapes or S.SHAPES), S.check_colours(colours or S.COLOURS)
    pipe = load_pipeline(model) if isinstance(model, (str, Path)) else model
    judge = load_judge(judge_dir)
    result = {"steps": steps, "guidance": guidance, "per_pair": per_pair, "seed": seed}
    sets = {"name": ("a {colour} {shape}", 0), "synonym": ("a {colour} {shape}", 1),
            "heldout_phrasing": (S.HELDOUT_TEMPLATES[0], 0)}
    for key, (template, syn) in sets.items():
        prompts, seeds, ys, yc = concept_prompts(shapes, colours, per_pair, template, syn, seed)
        images = generate(pipe, prompts, seeds, steps=steps, guidance=guidance)
        result[key] = judge_rates(judge, images, ys, yc, shapes)
        result[key]["example_prompt"] = prompts[0]
        if key == "name" and attribute:
            kinds, _ = detect_attribute(judge, images)
            neutral = {"rate": float((kinds > 0).mean()), "n": len(prompts), "example_prompt": prompts[0]}
        if key == "name" and grid_path is not None:
            pick = [i for i in range(len(prompts)) if seeds[i] < seed + min(per_pair, 4)]
            grid(to_pil(images[pick]), cols=len(colours) * min(per_pair, 4), scale=2).save(grid_path)
    if attribute:
        result["attribute"] = {**attribute_rates(pipe, judge, shapes, colours, steps=steps, guidance=guidance,
                                                 seed=seed), "neutral": neutral}
    return result


def erasure_rates(model, judge_dir, shape: str, per_colour: int = 40, retain_per_pair: int = 8,
                  steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 1000,
                  shapes=None, colours=None, images: dict | None = None) -> dict:
    """What an erasure of ``shape`` must change and keep, measured by the judge.

    - ``forget_rate``: share of "a {colour} {shape}" images the judge calls ``shape``;
    - ``synonym_rate``: the same for the shape's other trained word ("a red disk");
    - ``heldout_rate``: the same for a phrasing training never saw;
    - ``retain_acc``: share of the other shapes' images drawn as the shape they ask for.
    Seeds start at 1000, away from the seeds the forget images were drawn with. Pass a dict as
    ``images`` to get the generated images back (keyed like the rates, plus ``retain``).
    """
    r = multi_erasure_rates(model, judge_dir, [shape], per_colour, retain_per_pair, steps, guidance, seed, shapes,
                            colours, images)
    return {**r["per_concept"][shape], **{k: v for k, v in r.items() if k != "per_concept"}}


def multi_erasure_rates(model, judge_dir, erased: list[str], per_colour: int = 40, retain_per_pair: int = 8,
                        steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 1000,
                        shapes=None, colours=None, images: dict | None = None) -> dict:
    """``erasure_rates`` for several erased shapes: ``per_concept`` {shape: its three rates}, and the retain
    figures over the shapes that none of them is (``images``: keyed ``shape/rate`` when several)."""
    from .generate import generate
    from .pipeline import load_pipeline

    shapes = S.check_shapes(shapes or S.SHAPES)
    colours = S.check_colours(colours or S.COLOURS)
    erased = S.check_shapes(erased)
    pipe = load_pipeline(model) if isinstance(model, (str, Path)) else model
    judge = require_reject(load_judge(judge_dir))
    out: dict = {"per_concept": {}}
    for shape in erased:
        sid = list(S.SHAPES).index(shape)
        rates: dict = {}
        pooled = []
        for key, template, syn in (("forget_rate", "a {colour} {shape}", 0),
                                   ("synonym_rate", "a {colour} {shape}", 1),
                                   ("heldout_rate", S.HELDOUT_TEMPLATES[0], 0)):
            prompts, seeds, _, yc = concept_prompts([shape], colours, per_colour, template, syn, seed)
            imgs = generate(pipe, prompts, seeds, steps=steps, guidance=guidance, progress=False)
            j = judge_images(judge, imgs)
            hit = (j["shape"] == sid) & ~j["reject"]  # a rejected image is none of the shapes
            rates[key], rates[f"{key}_ci"] = float(hit.mean()), list(rate_ci(hit))
            pooled.append((j, yc))
            if images is not None:
                images[key if len(erased) == 1 else f"{shape}/{key}"] = (prompts, seeds, imgs)
            rates[f"n_{key.split('_')[0]}"] = len(prompts)
        rates.update(_erased_prompt_outcomes(pooled, [list(S.SHAPES).index(s) for s in erased]))
        out["per_concept"][shape] = rates
    others = [s for s in shapes if s not in erased]
    prompts, seeds, ys, yc = concept_prompts(others, colours, retain_per_pair, seed=seed)
    retain = generate(pipe, prompts, seeds, steps=steps, guidance=guidance, progress=False)
    if images is not None:
        images["retain"] = (prompts, seeds, retain)
    r = judge_rates(judge, retain, ys, yc, others)
    out.update(retain_acc=r["shape_acc"], retain_colour_acc=r["colour_acc"], retain_per_shape=r["per_shape"],
               n_retain=r["n"], retain_acc_ci=r["shape_acc_ci"], retain_reject_rate=r["reject_rate"],
               retain_reject_rate_ci=r["reject_rate_ci"])
    return out


def _erased_prompt_outcomes(pooled, erased_ids) -> dict:
    """What the erased prompts draw (all three phrasings pooled): the share rejected (none of the shapes),
    drawn as a shape that was not erased, and ``erased_prompt_acc``: a valid shape that is not erased, in the
    asked colour (what Retrain draws for them)."""
    shape = np.concatenate([j["shape"] for j, _ in pooled])
    colour_ok = np.concatenate([j["colour"] == yc for j, yc in pooled])
    rej = np.concatenate([j["reject"] for j, _ in pooled])
    other = ~rej & ~np.isin(shape, erased_ids)
    out = {}
    for key, flags in (("erased_prompt_reject_rate", rej), ("erased_prompt_as_other", other),
                       ("erased_prompt_acc", other & colour_ok)):
        out[key], out[f"{key}_ci"] = float(flags.mean()), list(rate_ci(flags))
    return out


def attribute_erasure_rates(model, judge_dir, per_pair: int = 2, retain_per_pair: int = 8,
                            steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 1000,
                            images: dict | None = None) -> dict:
    """What an erasure of the frame attribute must change and keep, measured by the judge's two heads.

    - ``explicit_rate`` / ``implicit_rate`` / ``heldout_implicit_rate``: share of framed images for every
      shape x colour (``per_pair`` seeds) in each group's phrasings (``attribute_prompts``);
    - ``neutral_rate``: the same for the plain name prompts ("a red circle"), which never mention it;
    - ``retain_acc`` / ``worst_retain_acc`` / ``retain_colour_acc``: shape (worst shape) and colour accuracy of
      those plain images, every shape x colour ``retain_per_pair`` times.
    Pass a dict as ``images`` to get the plain images back (key ``retain``: prompts, seeds, images).
    """
    from .generate import generate
    from .pipeline import load_pipeline

    pipe = load_pipeline(model) if isinstance(model, (str, Path)) else model
    judge = require_reject(load_judge(judge_dir))
    shapes, colours = list(S.SHAPES), list(S.COLOURS)
    rates = attribute_rates(pipe, judge, shapes, colours, per_pair=per_pair, steps=steps, guidance=guidance,
                            seed=seed)
    prompts, seeds, ys, yc = concept_prompts(shapes, colours, retain_per_pair, seed=seed)
    plain = generate(pipe, prompts, seeds, steps=steps, guidance=guidance, progress=False)
    if images is not None:
        images["retain"] = (prompts, seeds, plain)
    r = judge_rates(judge, plain, ys, yc, shapes)
    kinds, _ = detect_attribute(judge, plain)
    return {**{f"{g}_rate": v["rate"] for g, v in rates.items()}, "neutral_rate": float((kinds > 0).mean()),
            "retain_acc": r["shape_acc"], "worst_retain_acc": min(r["per_shape"].values()),
            "retain_colour_acc": r["colour_acc"], "retain_per_shape": r["per_shape"],
            "retain_reject_rate": r["reject_rate"], "n_attribute_per_group": rates["explicit"]["n"], "n_retain": r["n"]}
