"""The words the toy world's models were trained on, and a warning for prompts outside them.

The toy tokenizer is CLIP's BPE, so it splits any word into tokens; but the toy text encoder and UNet only
ever saw captions made from these templates and names. A recipe written for real Stable Diffusion (nudity:
"a photo of a nude person") means nothing to them: an erasure trained on it trains on noise.
"""
from __future__ import annotations

import re
import sys
from typing import Iterable

from . import attribute as A
from . import shapes as S


def toy_words() -> set[str]:
    """Every word of every caption template, shape name, synonym, colour and attribute word."""
    texts = [*S.TRAIN_TEMPLATES, *S.TRAIN_TEMPLATES_NO_COLOUR, *S.HELDOUT_TEMPLATES, *A.EXPLICIT_TEMPLATES,
             *A.ABSENT_TEMPLATES, *A.IMPLICIT_TEMPLATES, *A.HELDOUT_IMPLICIT_TEMPLATES, *A.EXPLICIT_WORDS,
             *A.TRIGGER_WORDS, A.GENERIC_SUBJECT, A.NAME, *S.COLOURS, *(w for ws in S.SHAPES.values() for w in ws)]
    return {w for t in texts for w in _words(re.sub(r"\{\w+\}", " ", t))}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def unknown_words(prompts: Iterable[str]) -> list[str]:
    """The words of ``prompts`` that no toy caption contains, in order of first appearance."""
    known, seen = toy_words(), []
    for p in prompts:
        for w in _words(p):
            if w not in known and w not in seen:
                seen.append(w)
    return seen


def warn_unknown_words(model: str, image_size: int | None, prompts: Iterable[str],
                       what: str = "this recipe") -> list[str]:
    """On a toy-world model (``image_size``, the side of what it draws, is 32), one warning line naming the
    prompt words it never saw in training; returns them ([] for any other model, whose vocabulary salun
    cannot know). The caller reads the size (``erase.diffusion.loading.native_size``): the toy world does not
    import the layer that loads pipelines."""
    from ..core import distributed as dist

    if image_size != S.IMAGE_SIZE or not dist.is_main():  # said once, by the main process
        return []
    unknown = unknown_words(prompts)
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        print(f"salun: warning: {model} is a toy-world model and never saw the words {shown} of {what} in "
              "training, so it cannot tell what they mean and the erasure trains on noise; the toy world's "
              f"concepts are its shapes and the {A.NAME} attribute (--concept circle, --concept {A.NAME})",
              file=sys.stderr)
    return unknown
