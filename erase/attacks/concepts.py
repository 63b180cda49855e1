"""What an attack audit attacks, and who says whether an image shows the concept.

Torch-free at import (the CLI refuses a concept without a classifier before paying for torch). Concepts
with a classifier: the toy world's shapes (the toy judge's shape head) and its frame attribute (the
judge's frame detector, ``detect_attribute`` > 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.errors import UserError


@dataclass
class AttackConcept:
    """The attacked prompts (each naming the concept with ``word``), the word a learned token replaces
    in them (concept inversion), the word that token starts from, and the classifier's description."""

    name: str
    prompts: list[str]
    word: str
    init_word: str
    classifier: str
    kind: str  # "shape" or "attribute"
    target: str  # the shape name, or the attribute's name
    generic: tuple[str, str] = ("a", "")  # the caption of a concept image from a folder: before, after the token

    def split(self, prompt: str) -> tuple[str, str]:
        """(text before, text after) the concept word in one of the prompts."""
        words = prompt.split(" ")
        for i, w in enumerate(words):
            if w.strip(",") == self.word:
                after = w[len(self.word):] + " " + " ".join(words[i + 1:])
                return " ".join(words[:i]), after.strip()
        raise ValueError(f"{prompt!r} does not name {self.word!r}")


def attack_concept(name: str, n_prompts: int = 5) -> AttackConcept:
    """The attack concept of a recipe, or a one-line refusal when the audit has no classifier for it."""
    from ..diffusion.sd.recipes import load_recipe
    from ..toy import attribute as A
    from ..toy import shapes as S

    toy = load_recipe(name).extra.get("toy", {})
    colours = list(S.COLOURS)
    if toy.get("shape"):
        shape = toy["shape"]
        prompts = [S.caption(shape, colours[i % len(colours)], "a {colour} {shape}") for i in range(n_prompts)]
        return AttackConcept(name, prompts, S.SHAPES[shape][0], "thing",
                             "toy judge, shape head (erase/toy/judge.py classify)", "shape", shape)
    if toy.get("attribute") == A.NAME:
        # Explicit phrasings ("a framed red circle"): the concept named outright, over every shape and colour.
        shapes = list(S.SHAPES)
        prompts = []
        for i in range(n_prompts):
            template = A.EXPLICIT_TEMPLATES[i % len(A.EXPLICIT_TEMPLATES)]
            word = A.EXPLICIT_WORDS[0]
            subject = S.subject(shapes[i % len(shapes)], colours[i % len(colours)])
            prompts.append(A.explicit_caption(subject, word, template))
        return AttackConcept(name, prompts, A.EXPLICIT_WORDS[0], "thing",
                             "toy judge, frame detector (erase/toy/judge.py detect_attribute > 0)", "attribute",
                             A.NAME, ("a picture of a", A.GENERIC_SUBJECT))
    raise UserError(f"concept {name!r} has no classifier in the attack audit: it judges the toy world's shapes "
                    f"({', '.join(S.SHAPES)}) with the toy judge and the toy attribute ({A.NAME}) with its frame "
                    "detector")


def make_judge(concept: AttackConcept, judge_dir: Path) -> Callable:
    """``shows(images in [-1, 1]) -> bool array``: whether each image shows the concept."""
    from ..toy import shapes as S
    from ..toy.judge import classify, detect_attribute, load_judge

    judge = load_judge(judge_dir)
    if concept.kind == "shape":
        sid = list(S.SHAPES).index(concept.target)
        return lambda images: classify(judge, images)[0] == sid
    if judge.attribute_head is None:
        raise UserError(f"the judge in {judge_dir} has no frame detector: give --judge a judge of the rebuilt toy "
                        "world (salun toy build)")
    return lambda images: detect_attribute(judge, images)[0] > 0
