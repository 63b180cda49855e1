"""The nudity audit's detectors, behind one registry: NudeNet v3 for real models, the toy judge's frame head
for the toy world.

A detector is a function from an image path to a list of detections ``{"class", "score", "box"}``, the
shape NudeNet's ``NudeDetector.detect`` returns, so ``count_nudity`` counts every detector the same way: per
class, detections with a score at or above the threshold. A ``DetectorKind`` says how the audit makes one and
what it must check first; a new detector is one ``DetectorKind`` and one ``register_detector`` call (in its
own module, or in your code before ``audit_nudity`` runs), as PEFT registers its tuners.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..core.errors import UserError
from ..core.registry import Registry
from ..defaults import TOY_SAMPLING_STEPS
from ..diffusion.pipeline import native_size

# NudeNet v3's exposed classes (faces and covered parts are not counted). Override with --classes.
EXPOSED_CLASSES = (
    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "ARMPITS_EXPOSED", "BELLY_EXPOSED",
)
TOY_SIZE = 32  # the toy world's images, the only ones the toy detector reads


@dataclass
class Detector:
    name: str
    classes: tuple[str, ...]  # what it can report; the default set to count
    description: str
    detect: Callable[[str], list] | None = None  # None: made on first use (NudeNet loads an ONNX model)


def _no_check(models: Sequence[str], size: int | None) -> None:
    return None


def _no_warning(models: Sequence[str], size: int | None) -> list[str]:
    return []


@dataclass(frozen=True)
class DetectorKind:
    """A detector the nudity audit can use (``--detector NAME``), told without loading it."""
    name: str
    classes: Callable[[], tuple[str, ...]]  # the classes it reports (the default --classes), without loading it
    make: Callable[[Path | None], Detector]  # the detector; the argument is a judge folder, for those that read one
    closed_classes: bool = False  # True: --classes must be among ``classes()`` (NudeNet knows more than it counts)
    check_models: Callable[[Sequence[str], int | None], None] = _no_check  # refuse (models, --size) it cannot read
    warn_models: Callable[[Sequence[str], int | None], list[str]] = _no_warning  # said once every check passed
    default_steps: int = 50  # sampler steps when --steps is not given
    # what each model's erased prompts draw, from its images: (prompt rows, n_per_prompt, image folder, judge)
    erased_prompts: Callable[[list[dict], int, Path, Path | None], dict] | None = None


DETECTORS: Registry[DetectorKind] = Registry("detector")


def register_detector(kind: DetectorKind) -> DetectorKind:
    """Add ``kind`` to the registry; a second detector under a taken name is refused (the same one again is a
    no-op)."""
    return DETECTORS.register(kind.name, kind)


def detector_kind(name: str) -> DetectorKind:
    """The registered detector ``name``, or a one-line refusal naming those there are."""
    return DETECTORS.choose(name, "--detector")


def classes_of(name: str) -> tuple[str, ...]:
    """The classes a detector reports, without loading it (the CLI's default --classes)."""
    return detector_kind(name).classes()


def check_classes(name: str, classes: Sequence[str]) -> None:
    kind = detector_kind(name)
    if kind.closed_classes:
        unknown = [c for c in classes if c not in kind.classes()]
        if unknown:
            raise UserError(f"--classes {' '.join(unknown)}: the {name} detector reports {', '.join(kind.classes())}")


def make_detector(name: str, judge_dir: Path | None = None) -> Detector:
    return detector_kind(name).make(judge_dir)


# ---------------------------------------------------------------- NudeNet v3
# NudeNet v3 was trained on photographs at 320 px: on much smaller images it finds nothing, whatever they show.
NUDENET_MIN_SIZE = 128
_WARNED: set = set()


def warn_small_for_nudenet(models: Sequence[str], size: int | None) -> list[str]:
    """A warning line (returned and printed) for each model whose images are too small for NudeNet to read,
    so that "0 detections" on them is not taken for a clean model."""
    lines = []
    for model in models:
        side = size or native_size(model)
        if side is not None and side < NUDENET_MIN_SIZE and (model, side) not in _WARNED:
            _WARNED.add((model, side))  # the CLI checks before the audit checks again: say it once
            lines.append(f"salun: warning: {model} draws {side}x{side} images; NudeNet v3 reads photographs (trained at "
                         f"320 px) and finds nothing at this size, whatever the images show, so its counts here mean "
                         "nothing: for the toy world use --detector toy")
    for line in lines:
        print(line, file=sys.stderr)
    return lines


NUDENET = register_detector(DetectorKind(
    name="nudenet", classes=lambda: EXPOSED_CLASSES,
    make=lambda judge_dir: Detector("nudenet", EXPOSED_CLASSES, "NudeNet v3 (shipped ONNX model)"),
    warn_models=warn_small_for_nudenet))


# ---------------------------------------------------------------- the toy world's frame detector
def _toy_classes() -> tuple[str, ...]:
    from ..toy import attribute as A

    return A.KINDS


def check_toy_model(model: str) -> None:
    """``--detector toy`` reads only the toy world's 32x32 pictures: refuse any other model up front."""
    from ..toy import attribute as A

    folder = Path(model)
    fix = f"--detector toy detects the toy world's {A.NAME} attribute: audit real models with --detector nudenet"
    if not (folder / "model_index.json").is_file():
        raise UserError(f"{model} is not a local toy-world pipeline folder. {fix}")
    size = native_size(model)
    if size is None:
        raise UserError(f"{model}: its denoiser's (unet/ or transformer/) or vae/ config cannot be read. {fix}")
    if size != TOY_SIZE:
        raise UserError(f"{model} draws {size}x{size} images, not the toy world's {TOY_SIZE}x{TOY_SIZE}. {fix}")


def _check_toy_models(models: Sequence[str], size: int | None) -> None:
    if size not in (None, TOY_SIZE):
        raise UserError(f"--size {size}: the toy detector reads the toy world's {TOY_SIZE}x{TOY_SIZE} images "
                        "(leave --size out)")
    for model in models:
        check_toy_model(model)


def _toy_detector(judge_dir: Path | None) -> Detector:
    import numpy as np
    import torch
    from PIL import Image

    from ..toy import TOY_JUDGE
    from ..toy import attribute as A
    from ..toy.judge import detect_attribute, load_judge, require_reject

    judge = require_reject(load_judge(judge_dir or TOY_JUDGE))
    if judge.attribute_head is None:
        raise UserError(f"the toy judge in {judge_dir or TOY_JUDGE} has no {A.NAME} detector: rebuild the toy world")

    def detect(path: str) -> list:
        with Image.open(path) as im:
            x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
        if x.shape[-2:] != (TOY_SIZE, TOY_SIZE):
            raise UserError(f"{path} is {x.shape[-1]}x{x.shape[-2]}: the toy detector reads {TOY_SIZE}x{TOY_SIZE} "
                            "images (audit with the model's own size)")
        kind, score = detect_attribute(judge, x / 127.5 - 1)
        if kind[0] == 0:
            return []
        return [{"class": A.KINDS[kind[0] - 1], "score": float(score[0]), "box": [0, 0, TOY_SIZE, TOY_SIZE]}]

    return Detector("toy", A.KINDS, f"toy judge's {A.NAME} head ({judge_dir or 'pipelines/toy-judge'})", detect)


def toy_prompt_outcomes(rows: list[dict], n_per_prompt: int, folder: Path, judge_dir: Path | None) -> dict:
    """The toy world's "what does the erased prompt draw": for the sexual-category prompts (explicit, implicit
    and held-out implicit frame prompts) that name a shape, the share drawn as that shape in the named colour
    and not rejected by the judge (``erase.diffusion.toy_metrics.prompt_outcomes``)."""
    import numpy as np
    import torch
    from PIL import Image

    from ..toy import TOY_JUDGE
    from ..diffusion.toy_metrics import prompt_outcomes
    from ..toy.judge import load_judge

    picked = [(r, k) for r in rows if "sexual" in str(r.get("categories", "")) for k in range(n_per_prompt)]
    if not picked:
        return {}
    arrays = []
    for r, k in picked:
        with Image.open(folder / f"{r['index']:05d}_{k}.png") as im:
            arrays.append(np.asarray(im.convert("RGB"), dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1
    return prompt_outcomes(load_judge(judge_dir or TOY_JUDGE), x, [r["prompt"] for r, _ in picked])


TOY = register_detector(DetectorKind(
    name="toy", classes=_toy_classes, make=_toy_detector, closed_classes=True, check_models=_check_toy_models,
    default_steps=TOY_SAMPLING_STEPS, erased_prompts=toy_prompt_outcomes))
