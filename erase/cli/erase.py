"""`salun mask` and `salun erase`: the options, their early checks, and the hand-off to the jobs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UserError
from ..core.lr_schedule import SCHEDULES
from ..defaults import DDPM_MASK_GUIDANCE, MASK_KEEP, TIMESTEP_DENSITIES
from .common import add_model_arg, in_main_process_alone, is_ddpm, other_process

if TYPE_CHECKING:
    from ..diffusion.options import EraseOptions


def _add_concept_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", action="append", default=None,
                   help="a recipe from prompts/ (nudity, church, garbage-truck, ..., circle, square, ..., frame: the toy nudity attribute) or a "
                        "recipe .json file; or describe the concept with the three prompt options below. Repeat it "
                        "to erase several concepts in one run: one mask from all their forget images, each concept's "
                        "own misaligned prompt, the training settings of the first")
    p.add_argument("--forget-prompt", action="append", default=None, help="prompt naming the concept (repeatable)")
    p.add_argument("--misaligned-prompt", action="append", default=None,
                   help="what the forget prompt should lead to instead (repeatable, paired with --forget-prompt)")
    p.add_argument("--retain-prompt", action="append", default=None, help="what must keep working (repeatable)")
    p.add_argument("--forget-data", type=Path, default=None,
                   help="a local image folder of the concept (metadata.jsonl captions) instead of drawing it")
    p.add_argument("--n-forget", type=int, default=None, help="forget images to draw (recipe default)")
    p.add_argument("--selection", default=None,
                   help="UNet weights to consider: all, attn2 (cross-attention), attn, resnets, or re:<regex>")
    p.add_argument("--keep", type=float, default=None, help=f"fraction of selected weights in the mask (default {MASK_KEEP})")
    p.add_argument("--mask-contrast", type=float, default=None,
                   help="spare what must be kept: rank weights by forget saliency / (1 + C x retain saliency), the "
                        "retain saliency (from the retain images' denoising loss) scaled to mean 1; 0, the default, "
                        "is the paper's forget-only map. Needs retain prompts or data")
    p.add_argument("--timestep-density", choices=TIMESTEP_DENSITIES, default=None,
                   help="which timesteps the mask and the training draw: uniform (the default, the paper's), or "
                        "logit-normal, SD3's training density under the scheduler's shift (the sd3 and flux families)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="cache of drawn images, mask and checkpoints (default: .<out>.work beside --out, removed "
                        "after a successful run; a folder you name keeps its caches, minus the checkpoints)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never the source model)")


def _add_neighbour_args(p, when: str = "") -> None:
    """Neighbours kept by name, shared by ``salun erase`` and ``salun mask`` (whose contrastive mask spares the
    same widened retain set the training keeps)."""
    p.add_argument("--keep-misaligned", action="store_true", default=None,
                   help=f"{when}neighbours kept by name: the misaligned prompts join the retain prompts, so that "
                        "what the erased concept is sent to keeps drawing what it drew (its images drawn like every "
                        "retain image)")
    p.add_argument("--keep-neighbours", type=int, default=None, metavar="K",
                   help=f"{when}neighbours kept by name: the K retain prompts nearest the forget prompts (cosine of "
                        "the model's own text conditions) take a double share of the retain images (default 0)")


def _recipe(args, mask_only: bool = False, method: str | None = None, **overrides):
    from ..diffusion.recipes import custom_recipe, load_recipe

    common = dict(n_forget=args.n_forget, selection=args.selection, keep=args.keep, batch_size=args.batch_size,
                  mask_contrast=args.mask_contrast, timestep_density=args.timestep_density, **overrides)
    if args.concept:
        from ..diffusion.combine import combine

        recipes = [load_recipe(c, method=method, **common) for c in args.concept]
        if args.forget_prompt:  # one more concept, described by its prompts
            if not args.misaligned_prompt and not mask_only:
                raise UserError("--forget-prompt needs --misaligned-prompt (what the concept's prompt should draw "
                                "instead)")
            recipes.append(custom_recipe(args.forget_prompt, args.misaligned_prompt or [], [], **common))
        elif args.misaligned_prompt:
            raise UserError("--misaligned-prompt pairs with --forget-prompt: a recipe has its own")
        if len(recipes) > 1 and args.forget_data is not None:
            raise UserError("--forget-data is one concept's images: with several concepts the forget images are "
                            "drawn per concept")
        rec = combine(recipes) if len(recipes) > 1 else recipes[0]
        if args.retain_prompt:
            rec.retain_prompts = args.retain_prompt
        return rec
    if args.forget_prompt is None:
        raise UserError("say what to erase: --concept NAME, or --forget-prompt TEXT with --misaligned-prompt TEXT")
    if mask_only:  # the mask needs only what to forget
        return custom_recipe(args.forget_prompt, args.misaligned_prompt or [], args.retain_prompt, **common)
    if not args.misaligned_prompt:
        raise UserError("--forget-prompt needs --misaligned-prompt (what the concept's prompt should draw instead)")
    return custom_recipe(args.forget_prompt, args.misaligned_prompt, args.retain_prompt, **common)


def _several() -> bool:
    """A multi-process launch (and not already running alone in its main process)."""
    from ..core import distributed as dist

    return dist.world() > 1


def _one_class(concepts: list[str] | None, model) -> None:
    """A class-conditional DDPM erases a class, named by --forget-class: a --concept (a text-to-image recipe)
    is refused rather than silently read as a class name."""
    if concepts:
        hint = concepts[0] if len(concepts) == 1 and not concepts[0].endswith(".json") else "NAME"
        raise UserError(f"--concept names a text-to-image recipe, and {model} is a class-conditional DDPM, which "
                        f"erases one class: give --forget-class {hint}")


def add_erase_parsers(sub) -> None:
    m = sub.add_parser("mask", help="compute a SalUn saliency mask for a concept",
                       description="Gradient of the guided noise-prediction loss on forget images, summed over the "
                                   "forget set at the base weights; keep the top fraction. Saved bit-packed "
                                   "in safetensors with metadata tying it to the model.")
    add_model_arg(m)
    _add_concept_args(m)
    m.add_argument("--out", type=Path, required=True, help="mask file to write (.safetensors)")
    m.add_argument("--scope", choices=("global", "tensor"), default="global",
                   help="rank weights across all tensors (SalUn) or within each tensor")
    m.add_argument("--guidance-w", type=float, default=None, help="w in (1+w) e(c) - w e(null) (SD recipe 7.5)")
    _add_neighbour_args(m, "with --mask-contrast: ")
    m.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    _add_memory_args(m)
    _add_ddpm_args(m)
    m.set_defaults(func=_cmd_mask, shares_work=True)

    e = sub.add_parser("erase", help="erase a concept with SalUn and export a diffusers pipeline",
                       description="Draw forget/retain images with the base model (or load them), compute the "
                                   "saliency mask, train only masked UNet weights to map the concept's prompt to a "
                                   "misaligned one while keeping retain images, then export a pipeline folder "
                                   "(model card, recipe, mask). Example: salun erase --concept circle --out erased; the toy "
                                   "world's stand-in for nudity: salun erase --concept frame --out no-frame. For a "
                                   "class-conditional DDPM: salun erase --model pipelines/toy-ddpm --forget-class "
                                   "circle --out ddpm-no-circle")
    add_model_arg(e)
    _add_concept_args(e)
    e.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    e.add_argument("--mask", type=Path, default=None, help="a mask from `salun mask` (else computed here)")
    from ..diffusion.methods import DEFAULT_METHOD, METHODS, method_options

    e.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="erasure method: salun (train the saliency mask's weights; the default), rl (SalUn's loss "
                        "on every selected weight, the paper's RL; the same as --no-mask), esd-x / esd-u (ESD's "
                        "negative guidance on cross-attention / on every other weight; --mask gives a masked ESD), "
                        "uce (closed-form cross-attention edit, no training), fmn (Forget-Me-Not attention "
                        "re-steering), ant (ANT: the concept's guidance kept on early steps, reversed on late ones). A recipe may carry settings per method (prompts/*.json \"methods\")")
    group = e.add_argument_group("method options (each taken only by the methods named)")
    for key, (takers, opt) in method_options().items():
        group.add_argument(f"--{key}", type=opt.type, default=None,
                           help=f"{opt.help}: {opt.describe()} (default {opt.default}, or the recipe's; "
                                f"{', '.join(takers)})")
    e.add_argument("--no-mask", action="store_true", help="train every selected weight (the ablation: --method rl)")
    e.add_argument("--allow-other-base", action="store_true",
                   help="accept a --mask computed on other weights of the same architecture")
    e.add_argument("--retain-data", type=Path, default=None, help="a local image folder of what must be kept")
    e.add_argument("--preserve-prompt", action="append", default=None,
                   help="with --distill: a prompt whose outputs stay the base's (repeatable; replaces the recipe's "
                        "\"preserve_prompts\")")
    e.add_argument("--n-retain", type=int, default=None)
    _add_neighbour_args(e)
    e.add_argument("--mask-per-concept", action="store_true",
                   help="with several --concept: one mask per concept from its own forget images, combined by union "
                        "(the mask metadata reports each pair's overlap); default: one mask from all forget images")
    e.add_argument("--no-replay", action="store_true",
                   help="erasing a model salun erased before: do not train on its earlier concepts again (by "
                        "default their forget and misaligned prompts, kept in its recipe.json history, join this "
                        "run's forget set so that they stay erased)")
    e.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    e.add_argument("--alpha", type=float, default=None, help="weight of the retain loss (recipe default)")
    e.add_argument("--lr", type=float, default=None, help="Adam learning rate (recipe default)")
    e.add_argument("--lr-schedule", choices=SCHEDULES, default=None,
                   help="the learning rate over the run, as diffusers' --lr_scheduler: constant (the recipes' "
                        "default), or linear / cosine decay to 0 over the steps")
    e.add_argument("--lr-warmup-steps", type=int, default=None,
                   help="steps over which the rate rises linearly from 0 before the schedule (default 0)")
    e.add_argument("--guidance-w", type=float, default=None, help="mask loss guidance (SD recipe 7.5)")
    e.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint in the work folder (same settings)")
    e.add_argument("--restart", action="store_true",
                   help="discard the checkpoints of an earlier, unfinished run in the work folder and start afresh")
    e.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default %(default)s)")
    _add_memory_args(e)
    e.add_argument("--xformers", action=argparse.BooleanOptionalAction, default=None,
                   help="xformers attention (the optional gpu extra); default: on when installed and on CUDA, "
                        "else torch SDPA")
    e.add_argument("--weights-dtype", choices=("fp32", "bf16"), default="fp32",
                   help="hold the UNet's weights in this precision while training (bf16 halves them; the masked "
                        "entries keep float32 master copies and the forward pass computes in bf16). The UNet is saved "
                        "as float32 holding bf16 values: weights outside the mask equal the base's bf16 rounding")
    e.add_argument("--use-8bit-adam", action="store_true",
                   help="hold Adam's two moments of the masked entries in 8 bits (block-wise quantized, bitsandbytes' "
                        "8-bit Adam; the optional 8bit extra): about 2 bytes an entry instead of 8, for big models "
                        "at a high --keep")
    e.add_argument("--lora-rank", type=int, default=None,
                   help="also export the UNet change as a LoRA of this rank to <out>-lora")
    e.add_argument("--device", default=None, help="cpu to force the CPU (accelerate picks otherwise)")
    _add_ddpm_args(e).add_argument(
        "--target-class", default=None,
        help="the class the forget class is pulled toward (default: the next class, (c + 1) mod K)")
    e.add_argument("--audit", action="store_true",
                   help="toy concepts: audit the result with the judge (40 forget / 50 retain images) and put the "
                        "figures in the model card")
    e.set_defaults(func=_cmd_erase, shares_work=True)


def _add_memory_args(p: argparse.ArgumentParser) -> None:
    """What makes a big model fit: shared by `salun mask` and `salun erase`."""
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                   help="autocast the UNet's forward pass (weights stay float32; fp16 needs a GPU)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass: less memory, slower steps")
    p.add_argument("--resolution", type=int, default=None,
                   help="image size for drawing and training (default: the model's; smaller needs less memory)")


def _add_ddpm_args(p: argparse.ArgumentParser):
    ddpm = p.add_argument_group("class-conditional DDPMs (--model a ClassConditionalDDPMPipeline folder)")
    ddpm.add_argument("--forget-class", default=None, help="the class to erase (a name or an id)")
    ddpm.add_argument("--dataset", default=None, help="the model's data set (default: its ddpm_info.json)")
    ddpm.add_argument("--data-root", type=Path, default=None, help="cifar10: folder holding cifar-10-batches-py")
    ddpm.add_argument("--download", action="store_true", help="cifar10: download it into --data-root")
    return ddpm


def _sd_refuses_ddpm_options(args) -> None:
    given = [f"--{k.replace('_', '-')}" for k in ("forget_class", "target_class", "dataset", "data_root")
             if getattr(args, k, None) is not None]
    if given:
        raise UserError(f"{', '.join(given)}: options of class-conditional DDPMs; for Stable Diffusion say what to "
                        "erase with --concept or --forget-prompt")


def _refuse_guidance_w_if_distilled(args) -> None:
    """``--guidance-w`` mixes classifier-free guidance into the mask's loss; a guidance-distilled family (FLUX)
    samples without it, so the option would mean nothing there."""
    if args.guidance_w is None or args.model is None:
        return
    from ..diffusion.family import family_of

    family = family_of(args.model)
    if getattr(family, "guidance_distilled", False):
        raise UserError(f"--guidance-w: {args.model} is a {family.title} model, guidance-distilled: it samples "
                        "without classifier-free guidance, so its mask's loss has none to weigh (the guidance it "
                        "was distilled for is an input of the model; drop --guidance-w)")


def _refuse_density_the_family_lacks(args) -> None:
    """``--timestep-density logit-normal`` on a UNet model: one line before the model is loaded."""
    if args.timestep_density in (None, "uniform"):
        return
    from ..diffusion.family import check_timestep_density, family_of
    from ..diffusion.pipeline import default_model

    check_timestep_density(family_of(args.model or default_model()), args.timestep_density)


def _cmd_mask(args) -> int:
    if is_ddpm(args.model) and _several():  # the DDPM path runs in one process, the main one
        return in_main_process_alone(_cmd_mask, args)
    if is_ddpm(args.model):
        from ..diffusion.ddpm.saliency import make_ddpm_mask

        _one_class(args.concept, args.model)
        forget = args.forget_class
        if forget is None:
            raise UserError(f"{args.model} is a class-conditional DDPM: say which class with --forget-class")
        given = [k for k, v in {"--selection": args.selection, "--forget-data": args.forget_data,
                                "--forget-prompt": args.forget_prompt,
                                "--mask-contrast": args.mask_contrast is not None,
                                "--timestep-density": args.timestep_density,
                                "--keep-misaligned": args.keep_misaligned,
                                "--keep-neighbours": args.keep_neighbours is not None}.items() if v]
        if given or args.scope != "global":
            raise UserError(f"{', '.join(given) or '--scope tensor'}: not used by the DDPM path (its mask ranks "
                            "all UNet weights globally)")
        if args.resolution is not None or args.mixed_precision != "no" or args.gradient_checkpointing:
            raise UserError("--resolution, --mixed-precision and --gradient-checkpointing are Stable Diffusion "
                            "options, not used by the DDPM path")
        mask = make_ddpm_mask(args.model, forget, args.out, seed=args.seed, batch_size=args.batch_size,
                              w=DDPM_MASK_GUIDANCE if args.guidance_w is None else args.guidance_w,
                              keep=MASK_KEEP if args.keep is None else args.keep,
                              n_forget=args.n_forget, overwrite=args.overwrite, device=args.device,
                              dataset=args.dataset, data_root=args.data_root, download=args.download)
    else:
        _sd_refuses_ddpm_options(args)
        recipe = _recipe(args, mask_only=True, guidance_w=args.guidance_w, keep_misaligned=args.keep_misaligned,
                         keep_neighbours=args.keep_neighbours)
        _refuse_guidance_w_if_distilled(args)
        from ..diffusion.options import check_mask_neighbours

        check_mask_neighbours(recipe, given=[f for f, v in (("--keep-misaligned", args.keep_misaligned),
                                                            ("--keep-neighbours", args.keep_neighbours is not None))
                                             if v])
        _refuse_density_the_family_lacks(args)
        from ..core.atomic import check_output
        from ..diffusion.options import check_common
        from ..diffusion.pipeline import default_model

        check_common(recipe, args.resolution, args.device)  # before the heavy imports
        check_output(args.out, args.model or default_model(), args.overwrite, kind="file")
        from ..diffusion.job import make_mask

        mask = make_mask(recipe, args.out, model=args.model, seed=args.seed, forget_data=args.forget_data,
                         work_dir=args.work_dir, overwrite=args.overwrite, scope=args.scope, device=args.device,
                         resolution=args.resolution, mixed_precision=args.mixed_precision,
                         gradient_checkpointing=args.gradient_checkpointing)
    st = mask.stats()
    print(f"wrote {args.out}: {st['kept']:,} of {st['total']:,} weights ({st['kept_fraction']:.1%}) in "
          f"{st['tensors']} tensors, {args.out.stat().st_size / 2**20:.2f} MiB")
    return 0


def _cmd_erase(args) -> int:
    import json

    _refuse_contradictions(args)
    if is_ddpm(args.model):
        _refuse_ddpm_method(args)
        return in_main_process_alone(_cmd_erase_ddpm, args)  # the DDPM path runs in one process, the main one
    opts = erase_options(args)
    _warn_slow(opts)
    from ..diffusion.job import erase  # torch and diffusers only now: a bad option costs no import

    summary = erase(opts)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}: {summary.get('pipeline_class', 'StableDiffusionPipeline')}"
          f".from_pretrained({str(args.out)!r})")
    return 0


def _method(args):
    """The method ``--method`` names (None for a name the registry does not hold: refused later, in one place)."""
    from ..diffusion.methods import METHODS

    return METHODS.get(args.method)


def _refuse_ddpm_method(args) -> None:
    """The DDPM path trains SalUn's loss alone (SalUn, or RL without the mask), with no method options."""
    from ..diffusion.options import check_class_method

    check_class_method(args.method, _method_options_given(args))


def _refuse_contradictions(args) -> None:
    """Options that contradict each other, on every path (the DDPM's too), read from the method's flags."""
    from ..diffusion.methods import METHODS

    m = _method(args)
    if m is None:
        return  # an unknown method is refused by the checks that list the methods
    ablation = m.salun_loss and not m.uses_mask  # an unmasked ablation (rl): a mask means nothing to it
    if args.mask and args.no_mask:
        raise UserError("--mask and --no-mask contradict each other")
    if args.mask and ablation:
        raise UserError(f"--mask: the {m.name} method trains without a mask")
    if args.mask and (args.keep is not None or args.selection is not None or args.mask_contrast is not None):
        raise UserError("--keep, --selection and --mask-contrast shape a saliency mask: with --mask the mask file "
                        "already fixes them (its metadata records them)")
    if args.no_mask and m.unmasked is None and not ablation:
        pairs = [(n, o.unmasked) for n, o in METHODS.items() if o.unmasked]
        raise UserError(f"--no-mask: --method {args.method} has no saliency mask to drop (--no-mask turns "
                        + ", ".join(f"{n} into its unmasked ablation, --method {u}" for n, u in pairs) + ")")
    for flag, value in (("--keep", args.keep), ("--mask-contrast", args.mask_contrast)):
        if value is not None and args.no_mask:
            raise UserError(f"{flag} shapes the saliency mask: with --no-mask there is no mask")
        if value is not None and ablation:
            raise UserError(f"{flag} shapes the saliency mask: --method {m.name} trains without one")


def erase_options(args) -> EraseOptions:
    """The parsed ``salun erase`` options (text-to-image families) as the job's ``EraseOptions``, after every
    model-free refusal; the CLI and the Python API (``erase.api``) both come through here."""
    from ..diffusion.options import EraseOptions

    _refuse_contradictions(args)
    given = _method_options_given(args)
    _sd_refuses_ddpm_options(args)
    _refuse_unused(args)
    recipe = _recipe(args, method=args.method, n_retain=args.n_retain, keep_misaligned=args.keep_misaligned,
                     keep_neighbours=args.keep_neighbours, alpha=args.alpha, lr=args.lr,
                     lr_schedule=args.lr_schedule, lr_warmup_steps=args.lr_warmup_steps,
                     guidance_w=args.guidance_w)
    _refuse_guidance_w_if_distilled(args)
    if args.preserve_prompt is not None:  # (an empty list from the Python API is refused by the check, not ignored)
        recipe.preserve_prompts = args.preserve_prompt
    opts = EraseOptions(recipe=recipe, out=args.out, model=args.model, mask_path=args.mask,
                        use_mask=not args.no_mask, mask_per_concept=args.mask_per_concept,
                        replay=not args.no_replay, method=args.method, method_options=given, steps=args.steps, seed=args.seed, work_dir=args.work_dir,
                        resume=args.resume, restart=args.restart, checkpoint_every=args.checkpoint_every,
                        mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                        xformers=args.xformers, resolution=args.resolution, overwrite=args.overwrite,
                        lora_rank=args.lora_rank, allow_other_base=args.allow_other_base,
                        forget_data=args.forget_data, retain_data=args.retain_data, device=args.device,
                        audit=args.audit, weights_dtype=args.weights_dtype,
                        use_8bit_adam=args.use_8bit_adam)
    if args.preserve_prompt is not None:
        from ..diffusion.options import method_settings, resolve_method

        m = resolve_method(opts)
        if "distill" not in m.options:
            raise UserError(f"--preserve-prompt: the prompts --distill keeps, and --method {m.name} does not take "
                            "--distill")
        if not m.uses_preserve(method_settings(opts, m)):
            raise UserError(f"--preserve-prompt: the prompts --distill keeps; give --distill B > 0 with "
                            f"--method {m.name}")
    _refuse_early(opts)
    return opts


def _method_options_given(args) -> dict:
    from ..diffusion.methods import method_options

    return {k: getattr(args, k.replace("-", "_")) for k in method_options()
            if getattr(args, k.replace("-", "_")) is not None}


# The options each kind of method has no use for: given anyway, they are refused, not ignored.
_RETAIN = {"alpha": "--alpha", "n_retain": "--n-retain", "retain_data": "--retain-data",
           "retain_prompt": "--retain-prompt", "keep_misaligned": "--keep-misaligned",
           "keep_neighbours": "--keep-neighbours"}
_MASK_SHAPE = {"keep": "--keep", "guidance_w": "--guidance-w", "mask_contrast": "--mask-contrast"}
_TRAINING = {"lr": "--lr", "lr_schedule": "--lr-schedule", "lr_warmup_steps": "--lr-warmup-steps", "steps": "--steps", "n_forget": "--n-forget", "batch_size": "--batch-size",
             "forget_data": "--forget-data", "resume": "--resume", "restart": "--restart",
             "gradient_checkpointing": "--gradient-checkpointing", "mixed_precision": "--mixed-precision",
             "weights_dtype": "--weights-dtype", "use_8bit_adam": "--use-8bit-adam"}


def _refuse_unused(args) -> None:
    """One line for an option the chosen method would silently ignore (SalUn's loss keeps every option)."""
    m = _method(args)
    if m is None or m.salun_loss:  # an unknown method is refused by the checks that list the methods
        return
    unused = dict(_MASK_SHAPE)
    settings = {k: o.default for k, o in m.options.items()} | _method_options_given(args)
    if m.mask_views(settings):  # a mask of its own loss (ANT's heavy hitters): each view keeps --keep
        unused.pop("keep")
    if not m.uses_retain:
        unused.update({k: v for k, v in _RETAIN.items() if not (k == "retain_prompt" and m.closed_form)})
    if m.selection is not None:
        unused["selection"] = "--selection"
    if m.closed_form:  # --restart stays: it discards the checkpoints an earlier trained run left behind
        unused.update({k: v for k, v in _TRAINING.items() if k != "restart"})
    if not m.needs_images:
        unused.update({"forget_data": "--forget-data"})
    for k, flag in unused.items():
        v = getattr(args, k, None)
        if v is not None and v is not False and v not in ("no", "fp32"):  # (0 is a value given: `0 in (False,)` is true)
            why = ("is closed-form: it trains nothing" if m.closed_form and k in _TRAINING else
                   f"trains its own weights ({m.selection})" if k == "selection" else
                   "has no retain term" if k in _RETAIN else
                   "samples its own x_t from the model" if k == "forget_data" else
                   "uses no saliency mask of its own (give one with --mask where it takes one)")
            raise UserError(f"{flag}: --method {m.name} {why}")


def _refuse_early(opts) -> None:
    """The model-free checks of ``erase()``, run before its heavy imports (it runs them again)."""
    from ..core.atomic import check_output
    from ..diffusion.options import check_options
    from ..diffusion.pipeline import default_model
    from ..core.workdir import check_work_dir

    check_options(opts)
    source = opts.model or default_model()
    check_output(opts.out, source, opts.overwrite)
    check_work_dir(opts.work_dir, opts.out, source)


def _warn_slow(opts) -> None:
    """A ``salun: warning:`` line for each setting that makes the run much slower than its default (said
    once, by the main process of a launch)."""
    import sys

    from ..diffusion.options import slow_settings

    if not other_process():
        for line in slow_settings(opts):
            print(f"salun: warning: {line}", file=sys.stderr)


def _cmd_erase_ddpm(args) -> int:
    import json

    from ..diffusion.ddpm.stages import erase_class
    from ..diffusion.options import DDPMEraseOptions

    _one_class(args.concept, args.model)
    forget = args.forget_class
    if forget is None:
        raise UserError(f"{args.model} is a class-conditional DDPM: say which class to erase with --forget-class")
    sd_only = {"--forget-prompt": args.forget_prompt, "--misaligned-prompt": args.misaligned_prompt,
               "--retain-prompt": args.retain_prompt, "--preserve-prompt": args.preserve_prompt,
               "--forget-data": args.forget_data,
               "--retain-data": args.retain_data, "--lora-rank": args.lora_rank, "--selection": args.selection,
               "--resolution": args.resolution, "--xformers": args.xformers,
               "--mask-per-concept": args.mask_per_concept, "--no-replay": args.no_replay,
               "--mask-contrast": args.mask_contrast is not None, "--weights-dtype": args.weights_dtype != "fp32",
               "--timestep-density": args.timestep_density, "--lr-schedule": args.lr_schedule,
               "--lr-warmup-steps": args.lr_warmup_steps is not None,
               "--keep-misaligned": args.keep_misaligned, "--keep-neighbours": args.keep_neighbours is not None,
               "--use-8bit-adam": args.use_8bit_adam}
    given = [k for k, v in sd_only.items() if v]
    if given or args.mixed_precision != "no" or args.gradient_checkpointing:
        raise UserError(f"{', '.join(given) or 'these options'}: Stable Diffusion options, not used by the DDPM path")
    opts = DDPMEraseOptions(model=args.model, forget_class=forget, out=args.out, target_class=args.target_class,
                            dataset=args.dataset, data_root=args.data_root, download=args.download,
                            steps=args.steps, batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                            n_forget=args.n_forget, n_retain=args.n_retain, keep=MASK_KEEP if args.keep is None else args.keep,
                            mask_w=DDPM_MASK_GUIDANCE if args.guidance_w is None else args.guidance_w,
                            mask_path=args.mask,
                            method=args.method, use_mask=not args.no_mask, allow_other_base=args.allow_other_base, seed=args.seed,
                            work_dir=args.work_dir, resume=args.resume, restart=args.restart,
                            checkpoint_every=args.checkpoint_every,
                            device=args.device, overwrite=args.overwrite, audit=args.audit)
    summary = erase_class(opts)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}: from erase.diffusion.ddpm import ClassConditionalDDPMPipeline; DiffusionPipeline.from_pretrained({str(args.out)!r})")
    return 0
