"""How well a toy pipeline draws what it is asked for, as judged by the toy judge."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import shapes as S
from .judge import classify, load_judge

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 5.0


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
    ps, pc = classify(judge, images)
    per_shape = {s: float((ps[shape_ids == list(S.SHAPES).index(s)] == list(S.SHAPES).index(s)).mean())
                 for s in shapes}
    return {"shape_acc": float((ps == shape_ids).mean()), "colour_acc": float((pc == colour_ids).mean()),
            "per_shape": per_shape, "n": int(len(ps))}


def evaluate_quality(model, judge_dir, shapes=None, colours=None, per_pair: int = 8,
                     steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 0,
                     grid_path: str | Path | None = None) -> dict:
    """Generate every shape x colour ``per_pair`` times and let the judge say what it sees.

    Three prompt sets: the concept's name ("a red circle"), its trained synonym ("a red disk") and
    a phrasing training never saw.
    """
    from ..generate import generate, grid, to_pil
    from ..pipeline import load_pipeline

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
        if key == "name" and grid_path is not None:
            pick = [i for i in range(len(prompts)) if seeds[i] < seed + min(per_pair, 4)]
            grid(to_pil(images[pick]), cols=len(colours) * min(per_pair, 4), scale=2).save(grid_path)
    return result
