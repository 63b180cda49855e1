#!/usr/bin/env python
"""Measure how well a toy pipeline draws every shape x colour, as judged by the toy judge.

This is the script behind the "How well it draws" table in the toy model's card:

    python scripts/eval_toy_quality.py --model pipelines/toy-sd --json quality.json --grid grid.png

With --update-card it rewrites the card's table (and build_info.json) in the model folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erase.toy import TOY_JUDGE, TOY_SD  # noqa: E402
from erase.diffusion.toy_quality import DEFAULT_GUIDANCE, DEFAULT_STEPS, evaluate_quality  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=TOY_SD)
    p.add_argument("--judge", type=Path, default=TOY_JUDGE)
    p.add_argument("--per-pair", type=int, default=8, help="seeds per shape x colour (default %(default)s)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--shapes", nargs="+", default=None, help="default: the shapes the model was trained on")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--grid", type=Path, default=None, help="write a grid PNG of the name prompts here")
    p.add_argument("--update-card", action="store_true", help="rewrite the model card with these figures")
    a = p.parse_args()
    info_path = a.model / "build_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    shapes = a.shapes or (info and [s for s in info["config"]["shapes"] if s not in info["config"]["exclude"]])
    q = evaluate_quality(a.model, a.judge, shapes=shapes, per_pair=a.per_pair, steps=a.steps,
                         guidance=a.guidance, grid_path=a.grid)
    print(f"{'prompts':<18}{'shape':>8}{'colour':>8}{'n':>6}   example")
    for key in ("name", "synonym", "heldout_phrasing"):
        r = q[key]
        print(f"{key:<18}{r['shape_acc']:>8.1%}{r['colour_acc']:>8.1%}{r['n']:>6}   {r['example_prompt']}")
    print("per shape (name):", ", ".join(f"{k} {v:.0%}" for k, v in q["name"]["per_shape"].items()))
    if a.json:
        a.json.write_text(json.dumps(q, indent=2))
    if a.update_card:
        if info is None:
            sys.exit(f"{info_path} is missing: --update-card works on folders written by salun toy build")
        from erase.toy.card import write_toy_card

        info["quality"] = q
        info_path.write_text(json.dumps(info, indent=2))
        write_toy_card(a.model, info)


if __name__ == "__main__":
    main()
