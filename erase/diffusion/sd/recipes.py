"""Erasure recipes: what to forget, what to pull it toward, what to keep, and the training settings.

Recipes live as JSON in ``prompts/`` (nudity, the ten Imagenette classes, the toy world's shapes);
``--forget-prompt/--misaligned-prompt/--retain-prompt`` make one on the spot.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ...core import checks
from ...core.errors import UserError

PROMPTS_DIR = Path(__file__).resolve().parents[3] / "prompts"


@dataclass
class Recipe:
    name: str
    forget_prompts: list[str]
    misaligned_prompts: list[str]
    retain_prompts: list[str]
    description: str = ""
    n_forget: int = 800
    n_retain: int = 800
    alpha: float = 0.1  # weight of the retain denoising loss
    lr: float = 1e-5
    steps: int | None = None  # if None, ``epochs`` over the forget set
    epochs: float = 1.0
    batch_size: int = 8
    guidance_w: float = 7.5  # the mask loss's guidance: pred = (1 + w) e(c) - w e(null)
    selection: str = "all"
    keep: float = 0.5
    gen_steps: int = 50  # sampler steps when the base model draws the forget/retain images
    gen_guidance: float = 7.5
    forget_dataset: dict | None = None
    retain_dataset: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A recipe for `salun mask` needs only what to forget; `check_for_erasure` adds what training needs.
        if not self.forget_prompts or any(not str(v).strip() for v in self.forget_prompts):
            raise UserError(f"recipe {self.name!r}: forget prompts must be a non-empty list of non-empty prompts")
        if any(not str(v).strip() for v in self.misaligned_prompts):
            raise UserError(f"recipe {self.name!r}: misaligned prompts must be a non-empty list of non-empty prompts")
        if any(not str(v).strip() for v in self.retain_prompts):
            raise UserError(f"recipe {self.name!r}: an empty retain prompt")
        checks.fraction(self.keep, "--keep")

    def check_for_erasure(self, retain_data: bool = False, uses_retain: bool = True) -> None:
        """What training needs beyond the mask: a misaligned prompt, and retain prompts (or a retain image
        folder, ``retain_data``) when alpha > 0."""
        if not self.misaligned_prompts:
            raise UserError(f"recipe {self.name!r}: misaligned prompts must be a non-empty list of non-empty "
                            "prompts (--misaligned-prompt: what the forget prompt should draw instead)")
        if uses_retain and self.alpha > 0 and not self.retain_prompts and not self.retain_dataset and not retain_data:
            raise UserError(f"recipe {self.name!r}: alpha > 0 needs retain prompts or a retain dataset "
                            "(--retain-prompt, or set --alpha 0)")

    def misaligned_for(self, forget_prompt: str) -> str:
        """The misaligned prompt paired with a forget prompt (same index, cycling)."""
        try:
            i = self.forget_prompts.index(forget_prompt)
        except ValueError:
            i = 0
        return self.misaligned_prompts[i % len(self.misaligned_prompts)]

    def to_dict(self) -> dict:
        return asdict(self)


def _files() -> list[Path]:
    return sorted(PROMPTS_DIR.glob("*.json"))


def available() -> dict[str, Path]:
    out = {}
    for f in _files():
        for name in json.loads(f.read_text())["recipes"]:
            out[name] = f
    return out


def load_recipe(name: str, method: str | None = None, **overrides) -> Recipe:
    """A named recipe from ``prompts/``, with ``overrides`` (``None`` values ignored) applied.

    A recipe may hold settings per erasure method (``"methods": {"esd-x": {"lr": ..., "steps": ...}}``, each
    method's tuned or published settings for this concept); ``method`` applies them beneath ``overrides``."""
    known = available()
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        raw = json.loads(path.read_text())
        raw.setdefault("name", path.stem)
    elif name in known:
        raw = {"name": name, **json.loads(known[name].read_text())["recipes"][name]}
    else:
        raise UserError(f"unknown concept {name!r}: choose a recipe ({', '.join(known)}), give a recipe .json "
                        "file, or describe it with --forget-prompt/--misaligned-prompt/--retain-prompt")
    listed = raw.get("concepts")
    if isinstance(listed, list) and listed and all(isinstance(c, str) for c in listed):
        # a recipe that names several concepts erased together ({"concepts": ["circle", "triangle"]}),
        # with its own settings over theirs
        from ..concepts import combine

        if name in listed:
            raise UserError(f"recipe {name!r} lists itself among its concepts")
        own = {k: v for k, v in raw.items() if k in {f.name for f in fields(Recipe)} and k != "name"}
        rec = combine([load_recipe(c, method=method, **{**own, **{k: v for k, v in overrides.items()
                                                                 if v is not None}}) for c in listed])
        return replace(rec, name=raw["name"])
    return _build(raw, overrides, method)


def custom_recipe(forget: list[str], misaligned: list[str], retain: list[str] | None, name: str = "custom",
                  **overrides) -> Recipe:
    description = (f"A custom concept, given by its prompts: forget {', '.join(repr(p) for p in forget)}"
                   + (f", drawn instead as {', '.join(repr(p) for p in misaligned)}" if misaligned else "")
                   + (f", keeping {len(retain)} retain prompts." if retain else "."))
    return _build({"name": name, "forget_prompts": forget, "misaligned_prompts": misaligned or [],
                   "retain_prompts": retain or [], "description": description}, overrides)


def _build(raw: dict, overrides: dict, method: str | None = None) -> Recipe:
    names = {f.name for f in fields(Recipe)}
    extra = {k: v for k, v in raw.items() if k not in names}
    base = {k: v for k, v in raw.items() if k in names}
    per_method = raw.get("methods", {}).get(method, {}) if method else {}
    if per_method.get("epochs") is not None and "steps" not in per_method:
        base.pop("steps", None)  # the method's epochs replace the recipe's step count
    base.update({k: v for k, v in per_method.items() if k in names})
    base.update({k: v for k, v in overrides.items() if v is not None})
    base.setdefault("extra", {}).update(extra)
    return Recipe(**base)
