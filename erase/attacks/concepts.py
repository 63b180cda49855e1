"""What an attack audit attacks, and who says whether an image shows the concept.

Torch-free at import (the CLI refuses a concept without a classifier before paying for torch). Concepts
with a classifier: the toy world's shapes (the toy judge's shape head) and its frame attribute (the
judge's frame detector, ``detect_attribute`` > 0).

The attacked prompts: for a shape, its name in the training phrasings over every colour ("a red circle",
"an image of a green circle", ...); for the frame, explicit phrasings that name it ("a framed red
circle") alternating with implicit ones that never do ("a blue square in a gallery", the toy stand-in
for I2P's implicit nudity prompts). Each prompt's kind is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.errors import UserError

EXPLICIT, IMPLICIT = "explicit", "implicit"


@dataclass
class AttackConcept:
    """The attacked prompts (the explicit ones naming the concept with ``word``), the word a learned token
    replaces in them (concept inversion), the word that token starts from, and the classifier's description.

    ``kinds``: per prompt, ``explicit`` (names the concept) or ``implicit`` (calls it up without naming
    it). ``control_words``: the words of the prompts that call the concept up, which the positive control
    filters out of the text encoder (``erase/audit/attack_control.py``)."""

    name: str
    prompts: list[str]
    word: str
    init_word: str
    classifier: str
    kind: str  # "shape" or "attribute"
    target: str  # the shape name, or the attribute's name
    generic: tuple[str, str] = ("a", "")  # the caption of a concept image from a folder: before, after the token
    kinds: list[str] = field(default_factory=list)
    control_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.kinds:
            self.kinds = [EXPLICIT] * len(self.prompts)
        if not self.control_words:
            self.control_words = (self.word,)

    @property
    def explicit_prompts(self) -> list[str]:
        return [p for p, k in zip(self.prompts, self.kinds) if k == EXPLICIT]

    def split(self, prompt: str) -> tuple[str, str]:
        """(text before, text after) the concept word in one of the prompts."""
        words = prompt.split(" ")
        for i, w in enumerate(words):
            if w.strip(",") == self.word:
                after = w[len(self.word):] + " " + " ".join(words[i + 1:])
                return " ".join(words[:i]), after.strip()
        raise ValueError(f"{prompt!r} does not name {self.word!r}")

    def slot(self, prompt: str) -> tuple[str, str]:
        """Where concept inversion's learned token goes in an attacked prompt: in place of the concept word,
        or in front of a prompt that does not name it (an implicit one)."""
        try:
            return self.split(prompt)
        except ValueError:
            return "", prompt


def _implicit_cue_words() -> tuple[str, ...]:
    """The words of the frame's implicit phrasings that training uses nowhere else ("in", "gallery",
    "museum", "on", "exhibit"): in the toy world they call the frame up as much as its name does."""
    import re

    from ..toy import attribute as A
    from ..toy import shapes as S

    def words(templates) -> list[str]:
        return [w for t in templates for w in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", t))]

    neutral = set(words((*S.TRAIN_TEMPLATES, *S.TRAIN_TEMPLATES_NO_COLOUR)))
    return tuple(dict.fromkeys(w for w in words(A.IMPLICIT_TEMPLATES) if w not in neutral))


def attack_concept(name: str, n_prompts: int = 10) -> AttackConcept:
    """The attack concept of a recipe, or a one-line refusal when the audit has no classifier for it."""
    from ..diffusion.recipes import load_recipe
    from ..toy import attribute as A
    from ..toy import shapes as S

    toy = load_recipe(name).extra.get("toy", {})
    colours = list(S.COLOURS)
    if toy.get("shape"):
        shape = toy["shape"]
        # every colour in the first phrasing, then in the next: "a red circle", ..., "an image of a red circle"
        prompts = [S.caption(shape, colours[i % len(colours)],
                             S.TRAIN_TEMPLATES[(i // len(colours)) % len(S.TRAIN_TEMPLATES)])
                   for i in range(n_prompts)]
        return AttackConcept(name, prompts, S.SHAPES[shape][0], "thing",
                             "toy judge, shape head (erase/toy/judge.py classify)", "shape", shape)
    if toy.get("attribute") == A.NAME:
        # Explicit phrasings ("a framed red circle") alternating with implicit ones ("a blue square in a
        # gallery"), over every shape and colour.
        shapes = list(S.SHAPES)
        prompts, kinds = [], []
        for i in range(n_prompts):
            j = i // 2
            if i % 2 == 0:
                subject = S.subject(shapes[j % len(shapes)], colours[j % len(colours)])
                template = A.EXPLICIT_TEMPLATES[j % len(A.EXPLICIT_TEMPLATES)]
                prompts.append(A.explicit_caption(subject, A.EXPLICIT_WORDS[0], template))
                kinds.append(EXPLICIT)
            else:
                subject = S.subject(shapes[(j + 3) % len(shapes)], colours[(j + 2) % len(colours)])
                template = A.IMPLICIT_TEMPLATES[j % len(A.IMPLICIT_TEMPLATES)]
                prompts.append(" ".join(template.format(subject=subject).split()))
                kinds.append(IMPLICIT)
        return AttackConcept(name, prompts, A.EXPLICIT_WORDS[0], "thing",
                             "toy judge, frame detector (erase/toy/judge.py detect_attribute > 0)", "attribute",
                             A.NAME, ("a picture of a", A.GENERIC_SUBJECT), kinds,
                             (A.EXPLICIT_WORDS[0], *_implicit_cue_words()))
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
