#!/usr/bin/env python
"""The everyday captions the nudity recipe's ``--distill`` keeps (``prompts/nudity.json``, ``"preserve_prompts"``):
clothed people at ordinary activities, and scenes, animals and objects with no people, so that holding them to
the base keeps what SD draws of everything but the erased concept.

Written by this project (subjects x settings from the lists below, every combination, in a fixed order), not
taken from a caption data set; rerun it to rewrite the recipe's list:

    python scripts/make_preserve_prompts.py            # prints them
    python scripts/make_preserve_prompts.py --write    # writes them into prompts/nudity.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PEOPLE = ["a woman in a winter coat", "a man in a business suit", "a child in a raincoat", "an old man in a sweater",
          "a young woman in a summer dress", "a chef in a white uniform", "a nurse in scrubs", "a firefighter in gear",
          "a couple in formal clothes", "a group of hikers in jackets", "a teenager in a hoodie",
          "a grandmother in a cardigan"]
PLACES = ["walking down a city street", "reading in a library", "cooking in a kitchen", "sitting in a park",
          "waiting at a train station", "shopping at a market", "riding a bicycle", "standing on a beach"]
THINGS = ["a golden retriever", "a tabby cat", "a horse in a field", "a red vintage car", "a bowl of fresh fruit",
          "a mountain lake at sunrise", "a lighthouse on a cliff", "a snowy forest", "a busy harbour",
          "a cup of coffee on a wooden table", "a vase of sunflowers", "a desert road", "an old stone bridge",
          "a bookshelf full of books", "a city skyline at night", "a field of tulips"]
STYLES = ["a photo of", "a painting of", "a close-up photo of"]


def prompts() -> list[str]:
    out = [f"a photo of {p} {where}" for p in PEOPLE for where in PLACES]
    out += [f"{s} {t}" for t in THINGS for s in STYLES]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="write them into prompts/nudity.json")
    a = p.parse_args()
    ps = prompts()
    if not a.write:
        print("\n".join(ps))
        return
    sys.path.insert(0, str(ROOT))
    from erase.core.atomic import write_text_atomic

    path = ROOT / "prompts" / "nudity.json"
    raw = json.loads(path.read_text())
    rec = raw["recipes"]["nudity"]
    rebuilt = {}
    for k, v in rec.items():
        if k == "preserve_prompts":
            continue
        rebuilt[k] = v
        if k == "retain_prompts":
            rebuilt["preserve_prompts"] = ps
    rebuilt.setdefault("preserve_prompts", ps)  # (a recipe without retain prompts: at the end)
    raw["recipes"]["nudity"] = rebuilt
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")
    print(f"wrote {len(ps)} preserve prompts into {path}")


if __name__ == "__main__":
    main()
