"""Erasure recipes: what to forget, what to pull it toward, what to keep, and the training settings.

Recipes live as JSON in ``prompts/`` (nudity, the ten Imagenette classes, the toy world's shapes);
``--forget-prompt/--misaligned-prompt/--retain-prompt`` make one on the spot.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from ..core import checks
from ..defaults import MASK_KEEP
from ..core.errors import UserError

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


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
    # the rate over the run (erase.core.lr_schedule: constant, linear, cosine) and its linear warm-up steps
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    steps: int | None = None  # if None, ``epochs`` over the forget set
    epochs: float = 1.0
    batch_size: int = 8
    guidance_w: float = 7.5  # the mask loss's guidance: pred = (1 + w) e(c) - w e(null)
    selection: str = "all"
    keep: float = MASK_KEEP
    # SalUn's mask: how much the retain loss's saliency counts against a weight (0: the paper's forget-only map)
    mask_contrast: float = 0.0
    # which timesteps the mask and the training draw: uniform (the paper's), or SD3's logit-normal (flow families)
    timestep_density: str = "uniform"
    # neighbours kept by name (erase.diffusion.neighbours): the misaligned prompts join the retain prompts, and
    # the K retain prompts nearest the forget prompts by the text encoder take a double share of the retain images
    keep_misaligned: bool = False
    keep_neighbours: int = 0
    gen_steps: int = 50  # sampler steps when the base model draws the forget/retain images
    gen_guidance: float = 7.5
    forget_dataset: dict | None = None
    retain_dataset: dict | None = None
    # prompts whose predictions the frozen base keeps (SalUn/RL's --distill): what must not change, no images needed
    preserve_prompts: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A recipe for `salun mask` needs only what to forget; `check_for_erasure` adds what training needs.
        if not self.forget_prompts or any(not str(v).strip() for v in self.forget_prompts):
            raise UserError(f"recipe {self.name!r}: forget prompts must be a non-empty list of non-empty prompts")
        if any(not str(v).strip() for v in self.misaligned_prompts):
            raise UserError(f"recipe {self.name!r}: misaligned prompts must be a non-empty list of non-empty prompts")
        if any(not str(v).strip() for v in self.retain_prompts):
            raise UserError(f"recipe {self.name!r}: an empty retain prompt")
        if any(not str(v).strip() for v in self.preserve_prompts):
            raise UserError(f"recipe {self.name!r}: an empty preserve prompt")
        checks.fraction(self.keep, "--keep")
        checks.finite_float(self.mask_contrast, "--mask-contrast", low=0)
        _density(self.timestep_density, "--timestep-density")
        _schedule(self.lr_schedule, "--lr-schedule")
        for value, label in ((self.lr_warmup_steps, "--lr-warmup-steps"), (self.keep_neighbours, "--keep-neighbours")):
            if value is None:  # (a recipe file's null: only steps may be null)
                raise UserError(f"{label} must be a whole number of at least 0, got null")
            checks.nonnegative_int(value, label)
        _flag(self.keep_misaligned, "--keep-misaligned")

    def check_preserve(self) -> None:
        """Preserve prompts are what must not change: one that is also a forget prompt would ask for both."""
        from .combine import norm_prompt, parts, prompt_words

        if not self.preserve_prompts:
            raise UserError(f"recipe {self.name!r} has no preserve prompts: --distill keeps the base's predictions "
                            "on them (add \"preserve_prompts\": [...] to a recipe file, or --preserve-prompt)")
        if any(not isinstance(p, str) or not p.strip() for p in self.preserve_prompts):
            raise UserError(f"recipe {self.name!r}: preserve prompts must be non-empty strings")
        forget = {norm_prompt(p) for p in self.forget_prompts}
        both = [p for p in self.preserve_prompts if norm_prompt(p) in forget]
        if both:
            raise UserError(f"recipe {self.name!r}: the preserve prompt {both[0]!r} is also a forget prompt; a prompt "
                            "cannot be both erased and kept")
        shapes = {p["toy"]["shape"] for p in parts(self) if "shape" in (p.get("toy") or {})}
        named = [p for p in self.preserve_prompts if shapes & prompt_words(p)]
        if named:
            raise UserError(f"recipe {self.name!r}: the preserve prompt {named[0]!r} names the erased "
                            f"{sorted(shapes & prompt_words(named[0]))[0]}; a concept cannot be both erased and kept")

    def check_for_erasure(self, retain_data: bool = False, uses_retain: bool = True) -> None:
        """What training needs beyond the mask: a misaligned prompt, and retain prompts (or a retain image
        folder, ``retain_data``) when alpha > 0."""
        if not self.misaligned_prompts:
            raise UserError(f"recipe {self.name!r}: misaligned prompts must be a non-empty list of non-empty "
                            "prompts (--misaligned-prompt: what the forget prompt should draw instead)")
        if uses_retain and self.alpha > 0 and not self.retain_prompts and not self.retain_dataset and not retain_data:
            raise UserError(f"recipe {self.name!r}: alpha > 0 needs retain prompts or a retain dataset "
                            "(--retain-prompt or a recipe file's \"retain_prompts\", or set --alpha 0)")

    def misaligned_for(self, forget_prompt: str) -> str:
        """The misaligned prompt paired with a forget prompt (same index, cycling)."""
        try:
            i = self.forget_prompts.index(forget_prompt)
        except ValueError:
            i = 0
        return self.misaligned_prompts[i % len(self.misaligned_prompts)]

    def length_fields(self, share: float) -> dict:
        """A share of this recipe's training length, in the unit it counts it in: ``{"steps": n}`` or
        ``{"epochs": e}`` (for ``dataclasses.replace`` or a recipe file's ``"methods"``)."""
        if self.steps is not None:
            return {"steps": max(1, round(self.steps * share))}
        return {"epochs": self.epochs * share}

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
    """A named recipe from ``prompts/``, or a recipe .json file, with ``overrides`` (``None`` values ignored)
    applied.

    A recipe may hold settings per erasure method (``"methods": {"esd-x": {"lr": ..., "steps": ...}}``, each
    method's tuned or published settings for this concept); ``method`` applies them beneath ``overrides``.
    ``method`` is given by an erasure (``salun mask`` gives none): a recipe file erased with one needs its
    misaligned prompts."""
    known = available()
    path = Path(name)
    if name not in known and path.suffix.lower() == ".json":
        raw = read_recipe_file(path)
        if method is not None and "concepts" not in raw and not raw.get("misaligned_prompts"):
            raise UserError(f"recipe file {path} has no \"misaligned_prompts\": erasing needs what its forget prompts "
                            "should draw instead (add \"misaligned_prompts\": [...] to the file)")
        raw.setdefault("name", path.stem)
        if "concepts" not in raw:  # (a recipe listing concepts takes their prompts)
            raw.setdefault("misaligned_prompts", [])  # a mask needs only what to forget
            raw.setdefault("retain_prompts", [])  # check_for_erasure says when the method's retain term needs them
    elif name in known:
        raw = {"name": name, **json.loads(known[name].read_text())["recipes"][name]}
    else:
        raise UserError(f"unknown concept {name!r}: choose a recipe ({', '.join(known)}), give a recipe .json "
                        "file, or describe it with --forget-prompt/--misaligned-prompt/--retain-prompt")
    listed = raw.get("concepts")
    if isinstance(listed, list) and listed and all(isinstance(c, str) for c in listed):
        # a recipe that names several concepts erased together ({"concepts": ["circle", "triangle"]}),
        # with its own settings over theirs
        from .combine import combine

        if name in listed:
            raise UserError(f"recipe {name!r} lists itself among its concepts")
        # (its description is the joint recipe's, not each concept's)
        own = {k: v for k, v in raw.items()
               if k in {f.name for f in fields(Recipe)} and k not in ("name", "description")}
        rec = combine([load_recipe(c, method=method, **{**own, **{k: v for k, v in overrides.items()
                                                                 if v is not None}}) for c in listed])
        return replace(rec, name=raw["name"], **({"description": raw["description"]} if "description" in raw else {}))
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


# ---------------------------------------------------------------- recipe files
# A recipe file is read whole and checked against this schema before anything uses it, so that a mistake
# in it is one line naming the file and the key, not a traceback from deep in a run.

# The training settings: a recipe's, a method's within its "methods", and a recipe listing concepts may set them.
SETTINGS = ("n_forget", "n_retain", "alpha", "lr", "lr_schedule", "lr_warmup_steps", "steps", "epochs", "batch_size", "guidance_w", "selection",
            "keep", "mask_contrast", "timestep_density", "keep_misaligned", "keep_neighbours", "gen_steps", "gen_guidance")
# Every key a recipe may have, in the order the shipped recipes write them.
RECIPE_KEYS = ("name", "description", "concepts", "forget_prompts", "misaligned_prompts", "retain_prompts",
               "preserve_prompts", "forget_dataset", "retain_dataset", *SETTINGS, "imagenet_class", "toy", "tuned", "methods",
               "methods_tuned")
# What a recipe listing concepts may set besides them: each concept brings its own prompts, data and notes.
CONCEPTS_KEYS = ("name", "description", "concepts", "retain_prompts", "preserve_prompts", *SETTINGS)
# A "forget_dataset" / "retain_dataset": erase.diffusion.data.load_hub_dataset's spec.
DATASET_KEYS = ("path", "name", "split", "image_column", "label_column", "label_prompts", "max_per_label")
TOY_KEYS = ("shape", "attribute")


def _show(value: object) -> str:
    """A value as the file wrote it, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def json_kind(value: object) -> str:
    """What JSON value ``value`` is, in words."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {list: "a list", str: "a string", dict: "an object"}.get(type(value), "a number")


def _number(value: object, label: str) -> float:
    """A JSON number (not a boolean, not a string holding one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{label} must be a number, got {_show(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer literal too large for a float
        raise UserError(f"{label} must be a finite number, got {_show(value)}") from None


def _text(value: object, label: str, empty: bool = False) -> str:
    if not isinstance(value, str) or not (empty or value.strip()):
        raise UserError(f"{label} must be a {'' if empty else 'non-empty '}string, got {_show(value)}")
    return value


def _prompts(value: object, label: str, empty: bool = True) -> list[str]:
    """A list of non-empty strings (``empty``: the list may be empty)."""
    what = f"a {'' if empty else 'non-empty '}list of non-empty prompts (strings)"
    if isinstance(value, str):
        raise UserError(f"{label} must be {what}, got a string: write it as a list, [{_show(value)}]")
    if not isinstance(value, list) or not (empty or value):
        raise UserError(f"{label} must be {what}, got {_show(value)}")
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"{label} must be {what}, got {_show(v)} in it")
    return value


def _dict(value: object, label: str) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{label} must be a JSON object ({{...}}), got {_show(value)}")
    return value


def _keys(value: dict, known: tuple[str, ...], label: str) -> None:
    """Refuse keys nothing reads (a misspelt one would be silently ignored)."""
    unknown = [k for k in value if k not in known]
    if unknown:
        raise UserError(f"{label}: unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(repr(k) for k in unknown)}: the known keys are {', '.join(known)}")


def _setting(key: str, value: object, label: str) -> None:
    """One training setting, in its type and range (the command line's options are checked alike)."""
    if key == "steps" and value is None:
        return  # null: epochs over the forget set
    if key in ("n_forget", "n_retain", "batch_size", "gen_steps", "steps"):
        checks.positive_int(value, label)  # refuses booleans, floats and strings too
    elif key == "selection":
        _text(value, label)
    elif key == "timestep_density":
        _density(value, label)
    elif key == "lr_schedule":
        _schedule(value, label)
    elif key in ("lr_warmup_steps", "keep_neighbours"):
        checks.nonnegative_int(value, label)
    elif key == "keep_misaligned":
        _flag(value, label)
    elif key in ("lr", "epochs"):
        checks.positive_float(_number(value, label), label)
    elif key in ("alpha", "mask_contrast"):
        checks.finite_float(_number(value, label), label, low=0)
    elif key == "keep":
        checks.fraction(_number(value, label), label)
    else:  # guidance_w, gen_guidance
        checks.finite_float(_number(value, label), label)


def _flag(value: object, label: str) -> None:
    if not isinstance(value, bool):
        raise UserError(f"{label}: {value!r} is not true or false")


def _density(value: object, label: str) -> None:
    from ..defaults import TIMESTEP_DENSITIES as DENSITIES  # (no torch: recipes are checked before the heavy imports)

    if value not in DENSITIES:
        raise UserError(f"{label}: {value!r} is not a timestep density; choose {' or '.join(DENSITIES)}")


def _schedule(value: object, label: str) -> None:
    from ..core.lr_schedule import SCHEDULES

    if value not in SCHEDULES:
        raise UserError(f"{label}: {value!r} is not a learning-rate schedule; choose {', '.join(SCHEDULES)}")


def _dataset(value: object, label: str) -> None:
    if value is None:
        return
    spec = _dict(value, label)
    _keys(spec, DATASET_KEYS, label)
    if "path" not in spec or "label_prompts" not in spec:
        raise UserError(f"{label} needs \"path\" (a datasets name) and \"label_prompts\" ({{\"label\": \"prompt\"}})")
    _text(spec["path"], f'{label} "path"')
    for k in ("split", "image_column", "label_column"):
        if k in spec:
            _text(spec[k], f'{label} "{k}"')
    if spec.get("name") is not None:
        _text(spec["name"], f'{label} "name"')
    if spec.get("max_per_label") is not None:
        checks.positive_int(spec["max_per_label"], f'{label} "max_per_label"')
    prompts = _dict(spec["label_prompts"], f'{label} "label_prompts"')
    if not prompts:
        raise UserError(f'{label} "label_prompts" must map at least one label to its prompt')
    for k, v in prompts.items():
        if not k.strip().lstrip("-").isdigit():
            raise UserError(f'{label} "label_prompts" keys must be label numbers ("4"), got {_show(k)}')
        _text(v, f'{label} "label_prompts" {_show(k)}')


def _toy(value: object, label: str) -> None:
    toy = _dict(value, label)
    _keys(toy, TOY_KEYS, label)
    if "shape" in toy:
        from ..toy.shapes import SHAPES

        if not isinstance(toy["shape"], str) or toy["shape"] not in SHAPES:
            raise UserError(f'{label} "shape" must be one of the toy shapes ({", ".join(SHAPES)}), '
                            f"got {_show(toy['shape'])}")
    if "attribute" in toy:
        _text(toy["attribute"], f'{label} "attribute"')


def _methods(value: object, label: str) -> None:
    """Settings per method: each a method's name, holding training settings and that method's options."""
    from .methods import METHODS

    for m, settings in _dict(value, label).items():
        if m not in METHODS:
            raise UserError(f"{label}: unknown method {m!r}: the methods are {', '.join(METHODS)}")
        where = f'{label} "{m}"'
        options = METHODS[m].options
        _keys(_dict(settings, where), (*SETTINGS, *options), where)
        for k, v in settings.items():
            if k not in options:
                _setting(k, v, f'{where} "{k}"')
            elif hasattr(options[k], "check"):  # the option's own type and range, as on the command line
                options[k].check(v, f'{where} "{k}"')
            elif options[k].type is int:
                checks.positive_int(v, f'{where} "{k}"')
            else:
                checks.finite_float(_number(v, f'{where} "{k}"'), f'{where} "{k}"')


def check_recipe(raw: object, source: str) -> dict:
    """``raw`` (a recipe as JSON gave it) if it is one: every key known, every value of its type and in its
    range; else a ``UserError`` naming ``source`` (``"recipe file x.json"``) and the key. The concepts a
    recipe lists must be shipped recipes (a recipe file cannot list another file: no file paths to resolve,
    no cycles)."""
    if not isinstance(raw, dict):
        raise UserError(f"{source} must hold a JSON object of a recipe's keys ({{\"forget_prompts\": [...], "
                        f"\"misaligned_prompts\": [...], ...}}), not {json_kind(raw)}")

    def label(key: str) -> str:
        return f'{source}: "{key}"'

    if "concepts" in raw:
        _keys(raw, RECIPE_KEYS, source)
        own = [k for k in raw if k not in CONCEPTS_KEYS]
        if own:
            raise UserError(f"{source}: {', '.join(repr(k) for k in own)} cannot go with \"concepts\": each concept "
                            "brings its own prompts, data and method settings (a recipe listing concepts may set "
                            f"{', '.join(k for k in CONCEPTS_KEYS if k != 'concepts')})")
        listed = raw["concepts"]
        if isinstance(listed, str):
            raise UserError(f"{label('concepts')} must be a list of shipped recipes, got a string: write it as a "
                            f"list, [{_show(listed)}]")
        if not isinstance(listed, list) or not listed:
            raise UserError(f"{label('concepts')} must be a non-empty list of shipped recipes, got {_show(listed)}")
        known = available()
        for c in listed:
            if not isinstance(c, str) or c not in known:
                raise UserError(f"{label('concepts')}: concepts must name shipped recipes ({', '.join(known)}), got "
                                f"{_show(c)}; give another recipe file as a --concept of its own")
            if listed.count(c) > 1:
                raise UserError(f"{label('concepts')} names {c!r} twice: list each concept once")
    else:
        _keys(raw, RECIPE_KEYS, source)
        if "forget_prompts" not in raw:
            raise UserError(f"{source} has no \"forget_prompts\": a recipe needs \"forget_prompts\" (prompts naming "
                            "the concept) and \"misaligned_prompts\" (what they should draw instead), or \"concepts\" "
                            "(a list of shipped recipes erased together)")
        _prompts(raw["forget_prompts"], label("forget_prompts"), empty=False)
        if "misaligned_prompts" in raw:
            _prompts(raw["misaligned_prompts"], label("misaligned_prompts"))
    # each other key's own check, in the order a reader meets them
    value_checks: dict[str, Callable[[object, str], object]] = {
        "retain_prompts": _prompts, "preserve_prompts": _prompts, "name": _text, "description": lambda v, where: _text(v, where, empty=True),
        **{k: (lambda v, where, k=k: _setting(k, v, where)) for k in SETTINGS},
        "forget_dataset": _dataset, "retain_dataset": _dataset, "imagenet_class": _text, "toy": _toy,
        "methods": _methods,
        "tuned": _dict, "methods_tuned": _dict}  # notes of how the settings were tuned: kept, not read
    for k, check in value_checks.items():
        if k in raw:
            check(raw[k], label(k))
    return raw


def read_recipe_file(path: Path) -> dict:
    """A recipe .json file, read and checked whole (``check_recipe``) before anything uses it."""
    if not path.exists():
        raise UserError(f"recipe file {path} does not exist (or name a shipped recipe: {', '.join(available())})")
    if not path.is_file():
        raise UserError(f"recipe file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark some editors write is no error
    except UnicodeDecodeError:
        raise UserError(f"recipe file {path} is not UTF-8 text: a recipe is a JSON object of its keys") from None
    except OSError as e:
        raise UserError(f"cannot read recipe file {path}: {e.strerror or e}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"recipe file {path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
                        "fix it (a recipe file is one JSON object of a recipe's keys, as each entry of "
                        "prompts/*.json's \"recipes\" is)") from None
    except RecursionError:
        raise UserError(f"recipe file {path} nests too deeply to be a recipe") from None
    return check_recipe(raw, f"recipe file {path}")
