#!/usr/bin/env python
"""FID(retain) of toy models after erasing a shape: the other shapes' images, on the judge's features.

    python scripts/fid_retain.py --concept circle --model pipelines/toy-sdxl --model erased-sdxl

The retain images are those of ``bench_toy_erase.py`` and ``bench_erasure.py``: the five other shapes x
five colours x 8 seeds from 1000, 25 steps, guidance 5. They are compared with 200 fresh drawings of the
same shapes (seed 4242); the judge's penultimate layer stands in for Inception on the toy world.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from erase.core.fid import frechet_distance, judge_features
    from erase.diffusion.generate import as_uint8, generate
    from erase.diffusion.pipeline import load_pipeline
    from erase.toy import TOY_JUDGE, shapes as S
    from erase.toy.judge import load_judge
    from erase.diffusion.toy_quality import concept_prompts

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", default="circle", choices=list(S.SHAPES), help="the erased shape")
    p.add_argument("--model", action="append", required=True, help="a pipeline folder (repeatable)")
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    others = [s for s in S.SHAPES if s != a.concept]
    prompts, seeds, _, _ = concept_prompts(others, list(S.COLOURS), 8, seed=1000)
    judge = load_judge(a.judge)
    ref = judge_features(judge, S.draw_set(len(prompts), seed=4242, shapes=others).images)
    out = {}
    for model in a.model:
        images = generate(load_pipeline(model), prompts, seeds, progress=False)
        out[model] = frechet_distance(judge_features(judge, as_uint8(images).transpose(0, 2, 3, 1)), ref)
        print(f"{model}: FID(retain) {out[model]:.3f} ({len(prompts)} images)", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
