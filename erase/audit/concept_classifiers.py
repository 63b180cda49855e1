"""The concept audit's classifiers for real models, behind one registry: ImageNet ResNet-50 for the Imagenette
recipes (the SalUn paper's object audit), CLIP zero-shot for any other concept.

A classifier reads generated images and names, for each, which of the audit's labels it shows (its index, or -1
for none of them). A ``ClassifierKind`` says when ``--classifier auto`` picks it, what it must check before any
model is loaded, and how the audit makes it; a new classifier is one ``ClassifierKind`` and one
``register_classifier`` call, as the nudity audit's detectors (``detectors.py``). Nothing here imports torch: the
command line lists and checks the kinds before paying for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..core.errors import UserError
from ..core.registry import Registry


@dataclass(frozen=True)
class ClassifierContext:
    """What a classifier may use: the audit's labels, the recipe, the device, ``--classifier-weights``, and the
    CLIP model the audit loaded when ``--clip-weights`` is given (for CLIP score; None otherwise)."""

    labels: list[str]
    recipe: Any
    device: str | None
    weights: str
    clip: Any = None


def _fits_any(recipe) -> bool:
    return True


def _no_check(recipe, clip_weights: str | None) -> None:
    return None


@dataclass(frozen=True)
class ClassifierKind:
    """A classifier ``salun audit concept --classifier NAME`` can use, told without loading it."""

    name: str
    description: str
    make: Callable[[ClassifierContext], Callable]  # images in [-1, 1] (N, 3, H, W) -> label index per image, -1: none
    fits: Callable[[Any], bool] = _fits_any  # --classifier auto takes the first registered kind that fits the recipe
    check: Callable[[Any, str | None], None] = _no_check  # (recipe, --clip-weights): refuse in one line, before loading


CLASSIFIERS: Registry[ClassifierKind] = Registry("concept classifier")


def register_classifier(kind: ClassifierKind) -> ClassifierKind:
    """Add ``kind`` to the registry; a second classifier under a taken name is refused (the same one again is a
    no-op). ``auto`` is not a name a classifier can take."""
    if kind.name == "auto":
        raise ValueError("'auto' is --classifier's choice of a registered classifier, not a classifier's name")
    return CLASSIFIERS.register(kind.name, kind)


def classifier_kind(name: str, recipe) -> ClassifierKind:
    """The classifier ``name`` (``auto``: the first registered one that fits ``recipe``), or a one-line refusal."""
    if name == "auto":
        for kind in CLASSIFIERS.values():
            if kind.fits(recipe):
                return kind
        raise UserError(f"no concept classifier fits {recipe.name!r}: choose --classifier "
                        f"{' or '.join(CLASSIFIERS)}")
    if name not in CLASSIFIERS:
        raise UserError(f"unknown --classifier {name!r}: auto, {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name]


def classifier_names() -> tuple[str, ...]:
    """``auto`` and the registered classifiers, for the command line's help."""
    return ("auto", *CLASSIFIERS)


# ---------------------------------------------------------------- ImageNet ResNet-50 (Imagenette recipes)
def _imagenette(recipe) -> bool:
    return recipe.extra.get("imagenet_class") is not None


def _check_resnet(recipe, clip_weights: str | None) -> None:
    if not _imagenette(recipe):
        raise UserError("the ResNet-50 classifier knows ImageNet classes: use it with an Imagenette recipe")


def _make_resnet(ctx: ClassifierContext) -> Callable:
    import torch

    from .classifiers import IMAGENETTE_TO_IMAGENET, ImageNetResNet50

    resnet = ImageNetResNet50(ctx.weights, ctx.device)
    ids = torch.tensor([IMAGENETTE_TO_IMAGENET[c] for c in ctx.labels])

    def classify(images):
        pred = resnet.predict(images)
        hit = pred[:, None] == ids[None, :]
        return torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(pred, -1))
    return classify


RESNET50 = register_classifier(ClassifierKind(
    name="resnet50", description="ImageNet ResNet-50 (torchvision), the Imagenette classes", make=_make_resnet,
    fits=_imagenette, check=_check_resnet))


# ---------------------------------------------------------------- CLIP zero-shot (any other concept)
def _check_clip(recipe, clip_weights: str | None) -> None:
    if not clip_weights:
        raise UserError("CLIP zero-shot needs --clip-weights: an open_clip tag such as openai (downloaded) or a "
                        "local checkpoint file")


def _make_clip(ctx: ClassifierContext) -> Callable:
    labels = ctx.labels

    def classify(images):
        return ctx.clip.zero_shot(images, labels)
    return classify


CLIP = register_classifier(ClassifierKind(
    name="clip", description="CLIP zero-shot over the recipe's forget and retain prompts (open_clip)",
    make=_make_clip, check=_check_clip))
