"""What ``salun erase`` is asked to do, and every check of it that needs no model.

Kept free of torch and diffusers so that the CLI refuses a bad option in a fraction of a second,
before the heavy job module is even imported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import checks
from ..core.errors import UserError
from ..defaults import DDPM_MASK_GUIDANCE, MASK_KEEP
from .pipeline import check_device
from .recipes import Recipe

if TYPE_CHECKING:
    from .methods import Method


@dataclass(kw_only=True)
class JobOptions:
    """What every erase job takes, whatever the family: where to write, what to start from, how to run."""
    out: Path
    model: str | None = None  # a pipeline folder or hub id (None: the text-to-image default, the toy SD)
    mask_path: Path | None = None  # a precomputed mask (salun mask); else computed here
    use_mask: bool = True  # False: the method's unmasked ablation (salun's: rl), every selected weight trains
    method: str = "salun"  # an erasure method of erase.diffusion.methods.METHODS
    method_options: dict = field(default_factory=dict)  # the method's own options given (name -> value)
    steps: int | None = None  # None: the recipe's
    seed: int = 0
    work_dir: Path | None = None
    resume: bool = False
    restart: bool = False  # discard an earlier run's checkpoints in the work folder
    checkpoint_every: int = 50
    allow_other_base: bool = False  # a given mask made from another base model's weights is accepted
    device: str | None = None
    overwrite: bool = False
    progress: bool = True
    audit: bool = False  # quick toy-judge audit of the result, written into the model card


@dataclass(kw_only=True)
class EraseOptions(JobOptions):
    """A text-to-image erasure (SD 1.x/2.x, SDXL, SD3): a recipe of prompts, a method, and how to train."""
    recipe: Recipe
    mask_per_concept: bool = False  # several concepts: one mask each, combined by union (else one from all)
    replay: bool = True  # erasing an erased model: its earlier concepts join the forget set (kept erased)
    mixed_precision: str = "no"  # no | fp16 | bf16
    weights_dtype: str = "fp32"  # fp32 | bf16: the UNet's weights while training (bf16: float32 masters, bf16 compute)
    use_8bit_adam: bool = False  # Adam's moments of the masked entries in 8 bits (bitsandbytes, the 8bit extra)
    gradient_checkpointing: bool = False
    xformers: bool | None = None  # None: use xformers when installed and on CUDA, else torch SDPA
    resolution: int | None = None
    lora_rank: int | None = None
    forget_data: Path | None = None
    retain_data: Path | None = None
    extra_card: dict = field(default_factory=dict)


# The class erasure's settings per data set. "cifar10" is the paper's (1000 steps, batch 128, Adam 1e-4, alpha
# 1e-3). "toy-shapes" fits 2 CPU cores in < 3 min and uses alpha 1.0. Measured on the toy DDPM (erase circle, 400
# steps; scripts/bench_toy_ddpm.py --alpha A): alpha 1e-3 collapses the UNet (every class drawn as noise, other
# classes 100% -> 15%, FID 1.95 -> 110), alpha 0.1 erases with other classes at 99.0% but FID 16.1, alpha 1.0
# erases with other classes at 100% and FID 3.2. The forget term alone is minimised by a network that ignores its
# input; the retain term is what stops it, and this small UNet needs more.
DDPM_RECIPES = {
    "cifar10": dict(steps=1000, batch_size=128, lr=1e-4, alpha=1e-3, n_forget=None, n_retain=None),
    "toy-shapes": dict(steps=400, batch_size=64, lr=1e-4, alpha=1.0, n_forget=500, n_retain=2500),
}


@dataclass(kw_only=True)
class DDPMEraseOptions(JobOptions):
    """A class erasure from a class-conditional DDPM: SalUn's loss with the paper's DDPM settings."""
    forget_class: str
    target_class: str | None = None  # default: (forget + 1) mod K, as in the paper
    dataset: str | None = None  # default: the model's ddpm_info.json
    data_root: Path | None = None
    download: bool = False
    batch_size: int | None = None  # None (this and the four below): the data set's (DDPM_RECIPES)
    lr: float | None = None
    alpha: float | None = None
    n_forget: int | None = None
    n_retain: int | None = None
    keep: float = MASK_KEEP
    mask_w: float = DDPM_MASK_GUIDANCE
    mask_clip: float = 1.0
    grad_clip: float = 1.0

    def resolved(self, dataset: str) -> dict:
        """The data set's settings, with the ones given here in their place."""
        rec = dict(DDPM_RECIPES.get(dataset, DDPM_RECIPES["cifar10"]))
        for k in rec:
            if getattr(self, k) is not None:
                rec[k] = getattr(self, k)
        return rec


def check_class_method(method: str, given: dict) -> None:
    """A class erasure trains SalUn's loss alone (SalUn, or RL without the mask), with no method options."""
    from .methods import METHODS

    if method not in METHODS or not METHODS[method].salun_loss:
        takes = " or ".join(n for n, o in METHODS.items() if o.salun_loss)
        raise UserError(f"--method {method}: the class-conditional DDPM path takes {takes}")
    if given:
        raise UserError(f"--{next(iter(given))}: not an option of the DDPM path")


def check_ddpm_settings(rec: dict, opts: DDPMEraseOptions) -> None:
    """A class erasure's bad numbers, refused before any work is done or any folder is made."""
    for k in ("steps", "batch_size", "n_forget", "n_retain"):
        checks.positive_int(rec[k], "--" + k.replace("_", "-"))
    checks.positive_float(rec["lr"], "--lr")
    checks.finite_float(rec["alpha"], "--alpha", low=0)
    checks.fraction(opts.keep, "--keep")
    checks.finite_float(opts.mask_w, "--guidance-w")


def check_common(recipe: Recipe, resolution: int | None, device: str | None, retain_data: bool = False) -> None:
    """Checks shared by ``salun mask`` and ``salun erase``, before any model is loaded."""
    checks.positive_int(recipe.batch_size, "--batch-size")
    checks.positive_int(recipe.n_forget, "--n-forget")
    checks.fraction(recipe.keep, "--keep")
    checks.finite_float(recipe.mask_contrast, "--mask-contrast", low=0)
    if recipe.mask_contrast > 0 and not (recipe.retain_prompts or recipe.retain_dataset or retain_data):
        raise UserError(f"--mask-contrast {recipe.mask_contrast:g} spares the weights the retain images need: "
                        f"recipe {recipe.name!r} has none (give --retain-prompt, or 0 for the paper's mask)")
    checks.finite_float(recipe.guidance_w, "--guidance-w")
    checks.image_size(resolution, "--resolution")
    check_device(device)


def resolve_method(opts: JobOptions) -> "Method":
    """Settle the method, once, and return it: ``--no-mask`` turns a masked method into its unmasked ablation
    (SalUn into RL: SalUn's loss on every selected weight); ``use_mask`` then says whether it trains under a
    mask. Idempotent: the job and the CLI may both call it."""
    from .methods import METHODS

    if opts.method not in METHODS:
        raise UserError(f"--method {opts.method!r}: choose one of {', '.join(METHODS)}")
    method = METHODS[opts.method]
    if not opts.use_mask and method.uses_mask:
        if method.unmasked is None:
            raise UserError(f"--no-mask: the {opts.method} method needs its mask")
        opts.method = method.unmasked
        method = METHODS[opts.method]
    opts.use_mask = method.uses_mask
    for key in opts.method_options:
        if key not in method.options:
            takers = [m.name for m in METHODS.values() if key in m.options]
            raise UserError(f"--{key}: an option of {', '.join(takers) or 'no method'}; --method {opts.method} "
                            "does not take it")
    return method


def check_warmup(warmup: int, steps: int | None) -> None:
    """A warm-up as long as the run would never reach the learning rate it names."""
    if warmup and steps is not None and warmup >= steps:
        raise UserError(f"--lr-warmup-steps {warmup}: the run has {steps} steps; a warm-up must end before the last "
                        "one (the rate would never reach --lr)")


def check_neighbours(opts: EraseOptions, method) -> None:
    """``--keep-misaligned`` / ``--keep-neighbours`` widen the drawn retain images: refused where none are drawn."""
    r = opts.recipe
    if not (r.keep_neighbours or r.keep_misaligned):
        return
    flag = "--keep-neighbours" if r.keep_neighbours else "--keep-misaligned"
    if method.closed_form or not method.uses_retain:
        raise UserError(f"{flag}: --method {method.name} has no retain term (it draws no retain images to widen; a "
                        "recipe file sets it for SalUn and RL alone under \"methods\")")
    contrast = opts.use_mask and opts.mask_path is None and r.mask_contrast > 0
    if r.alpha == 0 and not contrast:
        raise UserError(f"{flag} widens the retain images, and with --alpha 0 none are drawn (no retain term, no "
                        "--mask-contrast)")
    _refuse_given_retain_images(flag, r, opts.retain_data)
    _check_widened_count(r, flag)


def _refuse_given_retain_images(flag: str, r: Recipe, retain_data: Path | None = None) -> None:
    """Neighbours are chosen among retain prompts: retain images given instead leave nothing to widen."""
    if retain_data is not None or r.retain_dataset is not None:
        given = "--retain-data" if retain_data is not None else "the recipe's retain_dataset"
        raise UserError(f"{flag} draws retain images from prompts, and {given} gives the retain images: use one")


def _check_widened_count(r: Recipe, flag: str, count: str = "--n-retain") -> None:
    """``count``: how the user sets the number of retain images (``salun mask`` has no option for it)."""
    widened = len(set(r.retain_prompts)) + (len(set(r.misaligned_prompts)) if r.keep_misaligned else 0) + \
        r.keep_neighbours
    if r.n_retain < widened:  # image i is drawn from prompt i mod len(prompts): the added ones come last
        raise UserError(f"{flag}: {count} {r.n_retain} draws fewer retain images than the up to {widened} "
                        f"prompts it widens the retain set to (the added ones would get none): raise {count}")


def check_mask_neighbours(r: Recipe, given: list[str]) -> None:
    """``salun mask --keep-*``: only a contrastive mask draws retain images to widen. A recipe file's own
    ``keep_*`` (set for the erasure) is left alone by a plain mask; the options ``given`` on the command line
    are not."""
    if not (r.keep_neighbours or r.keep_misaligned):
        return
    flag = given[0] if given else "--keep-neighbours" if r.keep_neighbours else "--keep-misaligned"
    if r.mask_contrast <= 0:
        if given:
            raise UserError(f"{flag} widens the retain images a contrastive mask spares, and this mask draws none: "
                            "give --mask-contrast C > 0 (or pass it to `salun erase`, whose training keeps them)")
        return
    _refuse_given_retain_images(flag, r)
    if "--keep-misaligned" in given and not r.misaligned_prompts:
        raise UserError("--keep-misaligned: there is no misaligned prompt to keep (give --misaligned-prompt)")
    _check_widened_count(r, flag, "the recipe's n_retain")


def check_options(opts: EraseOptions) -> "Method":
    """Every number and combination checkable without the model, said in one line before any work; returns
    the method, settled (``resolve_method``)."""
    r = opts.recipe
    no_mask = not opts.use_mask
    method = resolve_method(opts)
    check_common(r, opts.resolution, opts.device, retain_data=opts.retain_data is not None)
    checks.positive_int(opts.steps, "--steps")
    checks.positive_int(r.steps, "--steps")
    checks.positive_float(r.epochs, "--epochs")
    checks.positive_int(r.n_retain, "--n-retain")
    checks.positive_float(r.lr, "--lr")
    check_warmup(r.lr_warmup_steps, opts.steps or r.steps)
    checks.finite_float(r.alpha, "--alpha", low=0)
    checks.positive_int(opts.lora_rank, "--lora-rank")
    checks.positive_int(opts.checkpoint_every, "--checkpoint-every")
    checks.positive_int(r.gen_steps, "the recipe's gen_steps")
    r.check_for_erasure(retain_data=opts.retain_data is not None, uses_retain=method.uses_retain)
    check_neighbours(opts, method)
    checks.finite_float(opts.seed, "--seed", low=0, high=2**63 - 1)
    if opts.mask_path is not None and not opts.use_mask and not method.accepts_mask:
        raise UserError("--mask and --no-mask contradict each other" if no_mask
                        else f"--mask: the {opts.method} method "
                        + ("is closed-form and trains nothing" if method.closed_form
                           else "trains without a mask"))
    if opts.resume and opts.restart:
        raise UserError("--resume and --restart contradict each other")
    for name, (_, opt, value) in given_method_settings(opts, method).items():
        opt.check(value, name)
    own = [name for name, (k, _, v) in given_method_settings(opts, method).items() if method.mask_views({k: v})]
    if opts.mask_path is not None and own:  # a given mask replaces the method's own: its setting would be ignored
        raise UserError(f"{own[0]} shapes {method.name}'s own mask: a given --mask replaces it")
    if method.uses_preserve(method_settings(opts, method)):
        r.check_preserve()
    check_xformers(opts.xformers, opts.device)
    check_weights_dtype(opts, method)
    check_8bit_adam(opts, method)
    if method.closed_form:
        _closed_form_work_dir(opts)
    if opts.mask_per_concept:
        if len(r.extra.get("concepts") or []) < 2:
            raise UserError("--mask-per-concept combines the masks of several concepts: give --concept twice or more")
        if opts.mask_path is not None or not opts.use_mask:
            raise UserError("--mask-per-concept: " + ("a given --mask is used as it is" if opts.mask_path is not None
                                                      else f"the {opts.method} method trains without a mask"))
    return method


def given_method_settings(opts: EraseOptions, method: "Method") -> dict:
    """``{how to name it: (option key, Option, value)}`` for each method option given on the command line
    (``--name``) or by the recipe for this method: the one reading of both sources."""
    from_recipe = opts.recipe.extra.get("methods", {}).get(method.name, {})
    out = {}
    for key, opt in method.options.items():
        if key in opts.method_options:
            out[f"--{key}"] = (key, opt, opts.method_options[key])
        elif key in from_recipe:
            out[f"the recipe's {key!r} for {method.name}"] = (key, opt, from_recipe[key])
    return out


def method_settings(opts: EraseOptions, method: "Method") -> dict:
    """The method's own options: given on the command line, else the recipe's for this method, else the
    method's default (its paper's)."""
    given = {key: value for key, _, value in given_method_settings(opts, method).values()}
    return {k: given.get(k, o.default) for k, o in method.options.items()}


def slow_settings(opts: EraseOptions) -> list[str]:
    """One line for each method option set so high that the run is much slower than with its default
    (allowed: said, not refused)."""
    lines = []
    for name, (_, opt, value) in given_method_settings(opts, resolve_method(opts)).items():
        if opt.warn_above is not None and value > opt.warn_above:
            lines.append(f"{name} {value} is {value / opt.default:.0f}x the default {opt.default}: each training "
                         f"step takes roughly {value / opt.default:.0f}x as long")
    return lines


def check_weights_dtype(opts: EraseOptions, method: "Method") -> None:
    """``--weights-dtype bf16`` computes in bf16 (autocast follows the weights): it refuses what contradicts that,
    and a LoRA, whose delta from the float32 base would carry every weight's bf16 rounding."""
    if opts.weights_dtype not in ("fp32", "bf16"):
        raise UserError(f"--weights-dtype {opts.weights_dtype!r}: choose fp32 or bf16")
    if opts.weights_dtype == "fp32":
        return
    if method.closed_form:
        raise UserError(f"--weights-dtype: --method {method.name} is closed-form: it trains nothing")
    if opts.mixed_precision == "fp16":
        raise UserError("--weights-dtype bf16 computes in bf16: drop --mixed-precision fp16 (or give bf16)")
    if opts.lora_rank is not None:
        raise UserError("--lora-rank with --weights-dtype bf16: the adapter would hold every weight's bf16 rounding, "
                        "not only the erasure; export a LoRA from an fp32 run")


def check_8bit_adam(opts: EraseOptions, method: "Method") -> None:
    """``--use-8bit-adam`` needs a method that trains and bitsandbytes installed (its device is checked once the
    job knows it)."""
    if not opts.use_8bit_adam:
        return
    if method.closed_form:
        raise UserError(f"--use-8bit-adam: --method {method.name} is closed-form: it trains nothing")
    from ..core.eight_bit import bitsandbytes_functional

    bitsandbytes_functional()


def check_xformers(xformers: bool | None, device: str | None) -> None:
    """``--xformers`` asks for a package salun does not require, which works on CUDA only."""
    import importlib.util

    if not xformers:
        return
    if importlib.util.find_spec("xformers") is None:
        raise UserError('--xformers: xformers is not installed; it is the optional gpu extra, for CUDA machines '
                        '(pip install -e ".[gpu]"); without --xformers torch SDPA is used')
    if device is not None and device.split(":")[0] != "cuda":
        raise UserError(f"--xformers works on CUDA only, not with --device {device}")


def _closed_form_work_dir(opts: EraseOptions) -> None:
    """A closed-form method has no checkpoints: ``--resume`` means nothing, and an earlier trained run's
    checkpoints in its work folder can only be discarded (``--restart``), not continued."""
    from ..core.workdir import checkpoints_in, default_work_dir

    if opts.resume:
        raise UserError(f"--resume: --method {opts.method} is closed-form: it has no checkpoints to continue")
    work = (Path(opts.work_dir).expanduser() if opts.work_dir is not None
            else default_work_dir(Path(opts.out).expanduser().resolve()))
    ckpts = checkpoints_in(work) if work.is_dir() else []
    if ckpts and not opts.restart:
        raise UserError(f"{work.resolve()} holds checkpoints of an earlier run (last: {ckpts[-1].name}), which "
                        f"--method {opts.method} (closed-form) cannot continue: pass --restart to discard them")
