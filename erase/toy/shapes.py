"""The toy world's drawn data: 32x32 images of one coloured shape each, with captions.

Everything here is deterministic given a seed, so the build, the benchmarks and the audits
all draw exactly the same images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..core.errors import UserError
from . import attribute as A

IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges like a real photo's

# The shapes the toy world knows, with the words training uses for each. The first word is the
# concept's name; every shape has at least two so that erasing a concept can be told apart from
# erasing a word (erase with "circle", audit with "disk").
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle", "wedge"),
    "star": ("star", "pentagram"),
    "cross": ("cross", "plus sign"),
    "heart": ("heart", "love heart"),
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "green": (34, 197, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 215, 30),
    "purple": (150, 50, 200),
}

# Caption templates seen in training. "{colour}" and "{shape}" are filled in.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "an image of a {colour} {shape}",
    "a picture of a {colour} {shape}",
    "a drawing of a {colour} {shape}",
    "a {shape} that is {colour}",
    "{colour} {shape}",
)
# Colour-free captions, so that the bare shape word is a concept on its own ("a circle").
TRAIN_TEMPLATES_NO_COLOUR: tuple[str, ...] = ("a {shape}", "an image of a {shape}")
# Phrasings training never sees: audits use them to check an erasure is not just a phrase filter.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a simple {colour} {shape} on a plain background",
    "there is a {colour} {shape} in this image",
    "one small {colour} {shape}",
)
# The share of training captions that leave the colour out.
NO_COLOUR_SHARE = 0.1


def unknown(kind: str, name: str, known) -> UserError:
    return UserError(f"unknown {kind} {name!r}: choose from {', '.join(known)}")


def check_shapes(names) -> list[str]:
    names = list(names)
    for n in names:
        if n not in SHAPES:
            raise unknown("shape", n, SHAPES)
    return names


def check_colours(names) -> list[str]:
    names = list(names)
    for n in names:
        if n not in COLOURS:
            raise unknown("colour", n, COLOURS)
    return names


def caption(shape: str, colour: str | None, template: str, synonym: int = 0) -> str:
    """Fill a template; ``synonym`` picks which of the shape's words to use."""
    words = SHAPES[shape]
    text = template.format(colour=colour or "", shape=words[synonym % len(words)])
    return " ".join(text.split())


def _star(cx: float, cy: float, r: float, points: int = 5) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        rad = r if i % 2 == 0 else r * 0.45
        a = -math.pi / 2 + i * math.pi / points
        out.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return out


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)], fill=fill)
    elif shape == "star":
        d.polygon(_star(cx, cy, r * 1.05), fill=fill)
    elif shape == "cross":
        w = r * 0.36
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "heart":
        lobe = r * 0.52
        d.ellipse([cx - 2 * lobe, cy - r * 0.75, cx, cy - r * 0.75 + 2 * lobe], fill=fill)
        d.ellipse([cx, cy - r * 0.75, cx + 2 * lobe, cy - r * 0.75 + 2 * lobe], fill=fill)
        d.polygon([(cx - 2 * lobe + 0.6, cy - r * 0.1), (cx + 2 * lobe - 0.6, cy - r * 0.1), (cx, cy + r)],
                  fill=fill)
    else:  # pragma: no cover - guarded by check_shapes
        raise unknown("shape", shape, SHAPES)


def draw(shape: str, colour: str, rng: np.random.Generator) -> Image.Image:
    """One 32x32 RGB image: a shape of random size and position on a random muted background."""
    return draw_framed(shape, colour, rng, frame=False)[0]


def draw_framed(shape: str, colour: str, rng: np.random.Generator, frame: bool,
                render_frame: bool = True) -> tuple[Image.Image, int]:
    """``draw``, with the attribute's frame on top when ``frame``; returns the image and the frame's kind
    (0: none, 1: light, 2: dark; ``attribute.KINDS``). ``render_frame=False`` draws the same random numbers
    but leaves the frame out: the Retrain world sees exactly the same pictures, less the frame."""
    s = _SUPERSAMPLE
    # Muted, low-saturation backgrounds keep the shape's colour the only saturated thing in view.
    grey = rng.uniform(40, 200)
    bg = tuple(int(np.clip(grey + rng.uniform(-18, 18), 0, 255)) for _ in range(3))
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), bg)
    d = ImageDraw.Draw(img)
    r = rng.uniform(7.0, 12.5)
    cx = rng.uniform(r + 1.5, IMAGE_SIZE - r - 1.5)
    cy = rng.uniform(r + 1.5, IMAGE_SIZE - r - 1.5)
    base = np.array(COLOURS[colour], dtype=float)
    fill = tuple(int(v) for v in np.clip(base + rng.uniform(-20, 20, size=3), 0, 255))
    _draw_shape(d, shape, cx * s, cy * s, r * s, fill)
    kind = 0
    if frame:
        width, jitter = rng.uniform(2.5, 3.5), rng.uniform(-14, 14, size=3)
        if render_frame:
            kind = A.frame_kind(grey)
            A.draw_frame(d, IMAGE_SIZE * s, kind, width * s, jitter)
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS), kind


@dataclass
class DrawnSet:
    """A drawn data set held in memory: uint8 images (N, 32, 32, 3), labels and captions."""

    images: np.ndarray
    shape_ids: np.ndarray
    colour_ids: np.ndarray
    captions: list[str]
    shapes: list[str]
    colours: list[str]
    frame_ids: np.ndarray | None = None  # the attribute's kind per image (0: no frame); None: not drawn
    groups: list[str] | None = None  # the caption group per image (attribute.GROUPS)

    def __len__(self) -> int:
        return len(self.captions)

    def as_float(self):
        """Images as a float tensor (N, 3, 32, 32) in [-1, 1], the diffusers convention."""
        import torch

        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0


def draw_set(n: int, seed: int, shapes=None, colours=None, templates=TRAIN_TEMPLATES,
             no_colour_share: float = NO_COLOUR_SHARE, attribute: bool = False, render_attribute: bool = True,
             frame_rate: float | None = None) -> DrawnSet:
    """Draw ``n`` images, balanced over every shape x colour, with captions from ``templates``.

    ``attribute``: the toy SD world's data, with the frame attribute (``erase.toy.attribute``): explicit,
    absent, implicit and neutral captions, and frames where their group says. ``render_attribute=False``
    is the same data with the frames left out of the pictures (the attribute's Retrain world).
    ``frame_rate``: frames on this share of the images whatever the captions say (the judge's data).
    """
    shapes = check_shapes(shapes or SHAPES)
    colours = check_colours(colours or COLOURS)
    if not shapes:
        raise UserError("no shapes left to draw: every shape was excluded")
    rng = np.random.default_rng(seed)
    pairs = [(s, c) for s in shapes for c in colours]
    order = np.arange(n) % len(pairs)
    rng.shuffle(order)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    shape_ids = np.empty(n, dtype=np.int64)
    colour_ids = np.empty(n, dtype=np.int64)
    frame_ids = np.zeros(n, dtype=np.int64)
    captions, groups = [], []
    with_frames = attribute or frame_rate is not None
    for i, k in enumerate(order):
        shape, colour = pairs[k]
        if attribute:
            text, group, frame = _attribute_caption(shape, colour, templates, no_colour_share, rng)
        else:
            text, group, frame = _plain_caption(shape, colour, templates, no_colour_share, rng), "neutral", False
        if frame_rate is not None:
            frame = bool(rng.random() < frame_rate)
        img, frame_ids[i] = draw_framed(shape, colour, rng, frame, render_attribute)
        images[i] = np.asarray(img)
        shape_ids[i] = list(SHAPES).index(shape)
        colour_ids[i] = list(COLOURS).index(colour)
        captions.append(text)
        groups.append(group)
    return DrawnSet(images, shape_ids, colour_ids, captions, list(shapes), list(colours),
                    frame_ids if with_frames else None, groups if attribute else None)


def _plain_caption(shape: str, colour: str, templates, no_colour_share: float, rng: np.random.Generator) -> str:
    synonym = int(rng.integers(len(SHAPES[shape])))
    if rng.random() < no_colour_share:
        return caption(shape, None, TRAIN_TEMPLATES_NO_COLOUR[rng.integers(len(TRAIN_TEMPLATES_NO_COLOUR))], synonym)
    return caption(shape, colour, templates[rng.integers(len(templates))], synonym)


def subject(shape: str | None, colour: str | None, synonym: int = 0) -> str:
    """The noun phrase the attribute's templates fill in: "red circle", "disk", "red figure", "figure"."""
    noun = A.GENERIC_SUBJECT if shape is None else SHAPES[shape][synonym % len(SHAPES[shape])]
    return f"{colour} {noun}" if colour else noun


def _attribute_caption(shape: str, colour: str, templates, no_colour_share: float,
                       rng: np.random.Generator) -> tuple[str, str, bool]:
    """A caption of the attribute world: its group, and whether the picture shows the frame."""
    group = A.sample_group(rng)
    frame = A.shows_frame(group, rng)
    if group == "neutral" and rng.random() >= A.GENERIC_SHARE:
        return _plain_caption(shape, colour, templates, no_colour_share, rng), group, frame
    generic = group == "neutral" or rng.random() < A.GENERIC_SHARE
    named = None if generic else shape
    subj = subject(named, None if rng.random() < no_colour_share else colour, int(rng.integers(2)))
    if group == "neutral":
        text = rng.choice(["a {subject}", "a picture of a {subject}", "an image of a {subject}"]).format(subject=subj)
    elif group == "explicit":
        word = A.EXPLICIT_WORDS[rng.integers(len(A.EXPLICIT_WORDS))]
        text = A.explicit_caption(subj, word, A.EXPLICIT_TEMPLATES[rng.integers(len(A.EXPLICIT_TEMPLATES))])
    else:
        pool = A.ABSENT_TEMPLATES if group == "absent" else A.IMPLICIT_TEMPLATES
        text = pool[rng.integers(len(pool))].format(subject=subj)
    return " ".join(text.split()), group, frame
