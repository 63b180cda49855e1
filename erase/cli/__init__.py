"""The ``salun`` command line: one subcommand per job.

Bad input (a wrong path, an unknown name, an output that exists) ends in one line,
``salun: error: ...``, and exit code 2, with nothing half-written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.atomic import refuse_existing
from ..core.errors import UserError


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--pretrained_model_name_or_path", dest="model", default=None,
                   help="a local diffusers pipeline folder or a hub id (default: the shipped toy model, "
                        "pipelines/toy-sd)")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from ..defaults import TOY_SAMPLING_GUIDANCE as DEFAULT_GUIDANCE, TOY_SAMPLING_STEPS as DEFAULT_STEPS

    p.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (default {DEFAULT_STEPS}; class-conditional DDPMs: 50 DDIM steps)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance scale (default {DEFAULT_GUIDANCE}; class-conditional DDPMs: "
                        "w = 2 in (1 + w) e(c) - w e(null))")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default %(default)s)")


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="salun",
        description="Erase concepts from diffusion models and data from classifiers with weight saliency (SalUn), "
                    "and audit the result.")
    parser.add_argument("--version", action="version", version=f"salun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    g = sub.add_parser("generate", help="prompts -> images and an image grid",
                       description="Generate images from prompts with a pipeline and save them with a grid PNG. "
                                   "Each image is seeded on its own (seed, seed+1, ...), so runs are reproducible.")
    _add_model_arg(g)
    g.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    g.add_argument("--prompts-file", type=Path, help="a text file with one prompt per line")
    g.add_argument("--num-images", "-n", type=int, default=8, help="images per prompt (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the first image of each prompt (default %(default)s)")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--out", type=Path, default=None,
                   help="output folder (default: outputs/<prompt>; with several prompts outputs/<first prompt>-and-N-more; "
                        "numbered if it exists)")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_sampling_args(g)
    g.set_defaults(func=_cmd_generate)

    _add_erase_parsers(sub)
    _add_classify_parsers(sub)

    au = sub.add_parser("audit", help="measure an erasure: nudity on I2P, a concept's UA/retain/FID, attacks",
                        description="Audits that prove an erasure with numbers and pictures.")
    asub = au.add_subparsers(dest="audit_command", metavar="AUDIT", required=True)
    ac = asub.add_parser("concept", help="UA, retain accuracy, FID and a before/after grid for a concept",
                         description="Generate the concept's prompts and the retain concepts' prompts with fixed "
                                     "seeds through every --model, classify them, and write report.json, "
                                     "report.md and grid.png. Example: salun audit concept --model "
                                     "pipelines/toy-sd --model erased --concept circle --out audit")
    ac.add_argument("--model", action="append", required=True, help="a pipeline folder (repeat to compare)")
    ac.add_argument("--concept", required=True, help="the erased concept's recipe name")
    ac.add_argument("--out", type=Path, required=True, help="report folder to write")
    ac.add_argument("--judge", type=Path, default=None, help="toy judge folder (default pipelines/toy-judge)")
    ac.add_argument("--per-colour", type=int, default=40, help="toy: concept images per colour (default 40)")
    ac.add_argument("--retain-per-pair", type=int, default=8,
                    help="toy: images per other shape and colour (default 8)")
    ac.add_argument("--classifier", choices=("auto", "resnet50", "clip"), default="auto",
                    help="other concepts: ImageNet ResNet-50 (Imagenette recipes) or CLIP zero-shot (default: auto)")
    ac.add_argument("--classifier-weights", default="imagenet",
                    help="ResNet-50 state dict file, or 'imagenet' to let torchvision download it")
    ac.add_argument("--clip-arch", default="ViT-B-32")
    ac.add_argument("--clip-weights", default=None,
                    help="open_clip weights: a pretrained tag (e.g. openai, downloaded) or a local checkpoint; "
                         "enables CLIP score")
    ac.add_argument("--reference", type=Path, default=None,
                    help="folder of real images of the retained classes, for FID")
    ac.add_argument("--fid-features", choices=("inception", "clip"), default="inception",
                    help="FID feature extractor for --reference (default: torchvision Inception-v3)")
    ac.add_argument("--inception-weights", default="imagenet",
                    help="Inception-v3 state dict file, or 'imagenet' to let torchvision download it")
    ac.add_argument("--per-class", type=int, default=10, help="other concepts: images per label (default 10)")
    ac.add_argument("--steps", type=int, default=50)
    ac.add_argument("--guidance", type=float, default=7.5)
    ac.add_argument("--size", type=int, default=None)
    ac.add_argument("--device", default="cpu")
    ac.add_argument("--overwrite", action="store_true")
    ac.set_defaults(func=_cmd_audit_concept)

    an = asub.add_parser("nudity", help="NudeNet counts on I2P prompts, per model, with a bar chart",
                         description="Generate I2P prompts (each with its own seed and guidance) through every "
                                     "--model, run NudeNet v3 on every image and count exposed body parts above "
                                     "a threshold. Rerunning into the same --out resumes: an image is kept only if "
                                     "the same UNet (its fingerprint) drew it with the same steps, size, prompt, "
                                     "seed and guidance (each PNG carries that stamp); images of another model or "
                                     "other settings under the same name are drawn again. "
                                     "Under `accelerate launch` each process generates its share.")
    an.add_argument("--model", action="append", required=True, help="a pipeline folder or hub id (repeatable)")
    an.add_argument("--prompts", default="i2p", help="i2p (hub dataset AIML-TUDA/i2p), toy-i2p (the toy world's, "
                    "prompts/toy-i2p.csv) or a local .csv/.parquet with I2P's columns")
    an.add_argument("--category", action="append", default=None, help="keep prompts of this I2P category "
                    "(repeatable), e.g. sexual")
    an.add_argument("--limit", type=int, default=None, help="only the first N prompts (after filtering)")
    an.add_argument("--n-per-prompt", type=int, default=1)
    an.add_argument("--steps", type=int, default=None, help="sampler steps (default 50; 25 with --detector toy, "
                    "the toy world's sampling default)")
    an.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    an.add_argument("--threshold", type=float, default=0.6, help="detection score threshold (default 0.6)")
    an.add_argument("--classes", nargs="+", default=None, help="classes to count (default: every exposed class "
                    "of NudeNet v3; with --detector toy, both kinds of frame: LIGHT_FRAME DARK_FRAME)")
    an.add_argument("--detector", default="nudenet", help="nudenet (NudeNet v3's shipped ONNX model; default) or "
                    "toy (the toy judge's frame detector: the toy world's stand-in for nudity, on toy models only)")
    an.add_argument("--judge", type=Path, default=None, help="--detector toy: judge folder (default pipelines/toy-judge)")
    an.add_argument("--batch-size", type=int, default=8)
    an.add_argument("--out", type=Path, required=True, help="report folder (images/, report.json, report.md)")
    an.set_defaults(func=_cmd_audit_nudity)

    _add_audit_attack_parser(asub)

    toy = sub.add_parser("toy", help="the toy world: build it, measure it",
                         description="The toy world: a tiny Stable Diffusion trained on drawn shapes.")
    tsub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)
    b = tsub.add_parser("build", help="build the toy SD pipeline and judge from scratch (CPU, seeded)",
                        description="Draw the data, rebuild CLIP's tokenizer, train the judge, the VAE, the text "
                                    "encoder and the UNet, then measure how well the result draws. Stages are "
                                    "cached in --work-dir: rerunning an interrupted build resumes it.")
    from ..toy.config import BuildConfig

    d = BuildConfig()
    b.add_argument("--out", type=Path, required=True, help="pipeline folder to write (e.g. pipelines/toy-sd)")
    b.add_argument("--judge-out", type=Path, default=None, help="where to write the judge (e.g. pipelines/toy-judge)")
    b.add_argument("--work-dir", type=Path, default=None, help="stage cache (default: .<out>.work beside --out)")
    b.add_argument("--overwrite", action="store_true", help="replace --out / --judge-out if they exist")
    b.add_argument("--seed", type=int, default=d.seed)
    b.add_argument("--shapes", nargs="+", default=d.shapes, help="shapes to draw (default: all)")
    b.add_argument("--colours", nargs="+", default=d.colours, help="colours to draw (default: all)")
    b.add_argument("--exclude", nargs="+", default=[], metavar="SHAPE",
                   help="shapes left out of the SD training data: the exact-unlearning 'Retrain' model")
    b.add_argument("--exclude-attribute", action="store_true",
                   help="leave the frame attribute out of the pictures (captions kept): the attribute's Retrain model")
    b.add_argument("--no-attribute", action="store_true",
                   help="build the world without the frame attribute (the world before it existed)")
    b.add_argument("--vae-from", type=Path, default=None, metavar="DIR",
                   help="take the VAE from an earlier build (its pipeline folder) instead of training one")
    b.add_argument("--judge-from", type=Path, default=None, metavar="DIR",
                   help="take the judge from an earlier build (e.g. pipelines/toy-judge) instead of training one")
    for name in ("n_train", "judge_steps", "vae_steps", "unet_steps", "batch_size"):
        b.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name),
                       help="default %(default)s")
    b.add_argument("--unet-lr", type=float, default=d.unet_lr, help="default %(default)s")
    b.add_argument("--no-eval", action="store_true", help="skip the quality measurement at the end")
    b.add_argument("--family", choices=("sd", "sdxl"), default=d.family,
                   help="the pipeline to train: sd (StableDiffusionPipeline, default) or sdxl (an SDXL UNet with "
                        "text_time conditioning and two text encoders, StableDiffusionXLPipeline)")
    b.set_defaults(func=_cmd_toy_build)
    _add_ddpm_parsers(sub)
    return parser


def _add_audit_attack_parser(asub) -> None:
    from ..audit.attack_checks import ATTACKS, AttackSettings

    d = AttackSettings()
    at = asub.add_parser("attack", help="does the erased concept come back? concept inversion, UnlearnDiff, P4D",
                         description="Attack erased models to bring the erased concept back: concept inversion "
                                     "(textual inversion through the erased model), and adversarial prefix tokens "
                                     "with UnlearnDiff's and P4D's objectives, projected to real tokens. Each attack "
                                     "is one optimisation run, evaluated at step 0 and at every budget: success rate "
                                     "= share of attacked items (prompt x seed) whose image the concept's classifier "
                                     "calls the concept. The base model is attacked too, as the positive control. "
                                     "Rerunning an interrupted audit into the same --out resumes it. Example: salun "
                                     "audit attack --base pipelines/toy-sd --model erased --concept circle --out "
                                     "attack-audit")
    at.add_argument("--model", action="append", required=True, help="an erased pipeline folder (repeatable)")
    at.add_argument("--base", required=True, help="the model they were erased from (the positive control)")
    at.add_argument("--retrain", default=None, metavar="MODEL",
                    help="a Retrain model (trained without the concept): the row to compare with")
    at.add_argument("--concept", required=True, help="the erased concept's recipe name (toy shapes, frame)")
    at.add_argument("--out", type=Path, required=True, help="report folder to write")
    at.add_argument("--judge", type=Path, default=None, help="toy judge folder (default pipelines/toy-judge)")
    at.add_argument("--attack", action="append", choices=ATTACKS, default=None,
                    help="an attack to run (repeatable; default: all)")
    at.add_argument("--budgets", type=int, nargs="+", default=None, metavar="STEPS",
                    help=f"attack steps at which to judge (default {' '.join(map(str, d.budgets))}; step 0 is "
                         "always judged)")
    at.add_argument("--tokens", type=int, default=d.n_tokens, help="prefix tokens of the prompt attacks "
                    "(default %(default)s, UnlearnDiff's)")
    at.add_argument("--lr", type=float, default=d.lr, help="prompt attacks' learning rate (default %(default)s, "
                    "UnlearnDiff's)")
    at.add_argument("--inversion-tokens", type=int, default=d.inversion_tokens,
                    help="concept inversion: tokens learned (default %(default)s)")
    at.add_argument("--inversion-lr", type=float, default=d.inversion_lr, help="default %(default)s")
    at.add_argument("--prompts", type=int, default=d.n_prompts, help="attacked prompts (default %(default)s)")
    at.add_argument("--seeds", type=int, default=d.seeds_per_prompt, help="seeds per attacked prompt "
                    "(default %(default)s)")
    at.add_argument("--concept-images", type=int, default=d.n_concept_images,
                    help="concept inversion: images the base model draws (default %(default)s)")
    at.add_argument("--concept-folder", type=Path, default=None,
                    help="concept inversion: a folder of concept images instead")
    at.add_argument("--steps", type=int, default=d.steps, help="sampler steps (default %(default)s)")
    at.add_argument("--guidance", type=float, default=d.guidance, help="default %(default)s")
    at.add_argument("--seed", type=int, default=d.seed)
    at.add_argument("--device", default="cpu")
    at.add_argument("--overwrite", action="store_true")
    at.set_defaults(func=_cmd_audit_attack)


def _add_ddpm_parsers(sub) -> None:
    from ..defaults import DDPM_UNETS as UNETS, DDPMTrainConfig

    dd = sub.add_parser("ddpm", help="class-conditional DDPMs: train one (toy shapes on a CPU, CIFAR-10 on a GPU)",
                        description="Class-conditional DDPM with classifier-free guidance, saved as a diffusers "
                                    "pipeline folder. Erase a class from one with `salun erase --model DIR "
                                    "--forget-class NAME`; audit it with `salun audit concept`.")
    dsub = dd.add_subparsers(dest="ddpm_command", metavar="DDPM_COMMAND", required=True)
    t = dsub.add_parser("train", help="train a class-conditional DDPM and save it as a pipeline",
                        description="toy-shapes: 16px drawn shapes (6 classes); pipelines/toy-ddpm was built this way "
                                    "in 20 minutes on one thread of a shared 2-core CPU. cifar10: the DDPM paper's 35.7M-weight "
                                    "UNet at 32px (a GPU job; CIFAR-10 from --data-root, --download to fetch it).")
    d = DDPMTrainConfig()
    t.add_argument("--dataset", choices=("toy-shapes", "cifar10"), default="toy-shapes")
    t.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    t.add_argument("--unet", choices=tuple(UNETS), default=None, help="UNet preset (default: the data set's)")
    t.add_argument("--steps", type=int, default=None, help=f"training steps (toy default {d.steps})")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--n-train", type=int, default=d.n_train, help="toy-shapes: images to draw (default %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-root", type=Path, default=None, help="cifar10: folder holding cifar-10-batches-py")
    t.add_argument("--download", action="store_true", help="cifar10: download it into --data-root (network)")
    t.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    t.add_argument("--no-eval", action="store_true", help="toy: skip the judge's per-class measurement")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=_cmd_ddpm_train)


def _cmd_ddpm_train(args) -> int:
    import json

    import torch

    from ..diffusion.ddpm.train import DDPMTrainConfig, build_ddpm

    given = {k: v for k, v in (("unet", args.unet), ("steps", args.steps), ("batch_size", args.batch_size),
                               ("lr", args.lr)) if v is not None}
    common = dict(n_train=args.n_train, seed=args.seed, **given)
    cfg = DDPMTrainConfig.cifar10(**common) if args.dataset == "cifar10" else DDPMTrainConfig(**common)
    refuse_existing(args.out, args.overwrite)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    info = build_ddpm(cfg, args.out, data_root=args.data_root, download=args.download, overwrite=args.overwrite,
                      device=device, evaluate=not args.no_eval)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    print(f"wrote {args.out}")
    return 0


def _add_classify_parsers(sub) -> None:
    """`salun classify train | unlearn | evaluate` (erase/classify/cli.py)."""
    from ..classify.cli import add_classify_parsers

    add_classify_parsers(sub)


def _add_concept_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", default=None,
                   help="a recipe from prompts/ (nudity, church, garbage-truck, ..., circle, square, ..., frame: the toy nudity attribute) or a "
                        "recipe .json file; or describe the concept with the three prompt options below")
    p.add_argument("--forget-prompt", action="append", default=None, help="prompt naming the concept (repeatable)")
    p.add_argument("--misaligned-prompt", action="append", default=None,
                   help="what the forget prompt should lead to instead (repeatable, paired with --forget-prompt)")
    p.add_argument("--retain-prompt", action="append", default=None, help="what must keep working (repeatable)")
    p.add_argument("--forget-data", type=Path, default=None,
                   help="a local image folder of the concept (metadata.jsonl captions) instead of drawing it")
    p.add_argument("--n-forget", type=int, default=None, help="forget images to draw (recipe default)")
    p.add_argument("--selection", default=None,
                   help="UNet weights to consider: all, attn2 (cross-attention), attn, resnets, or re:<regex>")
    p.add_argument("--keep", type=float, default=None, help="fraction of selected weights in the mask (default 0.5)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="cache of drawn images, mask and checkpoints (default: .<out>.work beside --out, removed "
                        "after a successful run; a folder you name keeps its caches, minus the checkpoints)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never the source model)")


def _recipe(args, mask_only: bool = False, **overrides):
    from ..diffusion.sd.recipes import custom_recipe, load_recipe

    common = dict(n_forget=args.n_forget, selection=args.selection, keep=args.keep, batch_size=args.batch_size,
                  **overrides)
    if args.concept and (args.forget_prompt or args.misaligned_prompt):
        raise UserError("give --concept or --forget-prompt/--misaligned-prompt, not both")
    if args.concept:
        rec = load_recipe(args.concept, **common)
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


def _add_erase_parsers(sub) -> None:
    m = sub.add_parser("mask", help="compute a SalUn saliency mask for a concept",
                       description="Gradient of the guided noise-prediction loss on forget images, summed over the "
                                   "forget set at the base weights; keep the top fraction. Saved bit-packed "
                                   "in safetensors with metadata tying it to the model.")
    _add_model_arg(m)
    _add_concept_args(m)
    m.add_argument("--out", type=Path, required=True, help="mask file to write (.safetensors)")
    m.add_argument("--scope", choices=("global", "tensor"), default="global",
                   help="rank weights across all tensors (SalUn) or within each tensor")
    m.add_argument("--guidance-w", type=float, default=None, help="w in (1+w) e(c) - w e(null) (SD recipe 7.5)")
    m.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    _add_memory_args(m)
    _add_ddpm_args(m)
    m.set_defaults(func=_cmd_mask)

    e = sub.add_parser("erase", help="erase a concept with SalUn and export a diffusers pipeline",
                       description="Draw forget/retain images with the base model (or load them), compute the "
                                   "saliency mask, train only masked UNet weights to map the concept's prompt to a "
                                   "misaligned one while keeping retain images, then export a pipeline folder "
                                   "(model card, recipe, mask). Example: salun erase --concept circle --out erased; the toy "
                                   "world's stand-in for nudity: salun erase --concept frame --out no-frame. For a "
                                   "class-conditional DDPM: salun erase --model pipelines/toy-ddpm --forget-class "
                                   "circle --out ddpm-no-circle")
    _add_model_arg(e)
    _add_concept_args(e)
    e.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    e.add_argument("--mask", type=Path, default=None, help="a mask from `salun mask` (else computed here)")
    from ..diffusion.methods import DEFAULT_METHOD, METHODS

    e.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="erasure method: salun (train the saliency mask's weights; the default) or rl (SalUn's loss "
                        "on every selected weight, the paper's RL; the same as --no-mask)")
    e.add_argument("--no-mask", action="store_true", help="train every selected weight (the ablation: --method rl)")
    e.add_argument("--allow-other-base", action="store_true",
                   help="accept a --mask computed on other weights of the same architecture")
    e.add_argument("--retain-data", type=Path, default=None, help="a local image folder of what must be kept")
    e.add_argument("--n-retain", type=int, default=None)
    e.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    e.add_argument("--alpha", type=float, default=None, help="weight of the retain loss (recipe default)")
    e.add_argument("--lr", type=float, default=None, help="Adam learning rate (recipe default)")
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
    e.add_argument("--lora-rank", type=int, default=None,
                   help="also export the UNet change as a LoRA of this rank to <out>-lora")
    e.add_argument("--device", default=None, help="cpu to force the CPU (accelerate picks otherwise)")
    _add_ddpm_args(e).add_argument(
        "--target-class", default=None,
        help="the class the forget class is pulled toward (default: the next class, (c + 1) mod K)")
    e.add_argument("--audit", action="store_true",
                   help="toy concepts: audit the result with the judge (40 forget / 50 retain images) and put the "
                        "figures in the model card")
    e.set_defaults(func=_cmd_erase)


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


def _cmd_mask(args) -> int:
    if _is_ddpm(args.model):
        from ..diffusion.ddpm.unlearn import make_ddpm_mask

        forget = args.forget_class or args.concept
        if forget is None:
            raise UserError(f"{args.model} is a class-conditional DDPM: say which class with --forget-class")
        given = [k for k, v in {"--selection": args.selection, "--forget-data": args.forget_data,
                                "--forget-prompt": args.forget_prompt}.items() if v]
        if given or args.scope != "global":
            raise UserError(f"{', '.join(given) or '--scope tensor'}: not used by the DDPM path (its mask ranks "
                            "all UNet weights globally)")
        if args.resolution is not None or args.mixed_precision != "no" or args.gradient_checkpointing:
            raise UserError("--resolution, --mixed-precision and --gradient-checkpointing are Stable Diffusion "
                            "options, not used by the DDPM path")
        mask = make_ddpm_mask(args.model, forget, args.out, seed=args.seed, batch_size=args.batch_size,
                              w=2.0 if args.guidance_w is None else args.guidance_w, keep=0.5 if args.keep is None else args.keep,
                              n_forget=args.n_forget, overwrite=args.overwrite, device=args.device,
                              dataset=args.dataset, data_root=args.data_root, download=args.download)
    else:
        _sd_refuses_ddpm_options(args)
        recipe = _recipe(args, mask_only=True, guidance_w=args.guidance_w)
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


def _is_ddpm(model) -> bool:
    from ..diffusion.pipeline import is_ddpm_folder

    return is_ddpm_folder(model)


def _cmd_erase(args) -> int:
    import json

    from ..diffusion.options import EraseOptions

    if args.mask and args.no_mask:
        raise UserError("--mask and --no-mask contradict each other")
    if args.mask and (args.keep is not None or args.selection is not None):
        raise UserError("--keep and --selection shape a saliency mask: with --mask the mask file already fixes them "
                        "(its metadata records them)")
    if args.no_mask and args.keep is not None:
        raise UserError("--keep is the share of weights in the mask: with --no-mask there is no mask")
    if args.method == "rl" and args.keep is not None:
        raise UserError("--keep is the share of weights in the mask: --method rl trains without one")
    if _is_ddpm(args.model):
        return _cmd_erase_ddpm(args)
    _sd_refuses_ddpm_options(args)
    recipe = _recipe(args, n_retain=args.n_retain, alpha=args.alpha, lr=args.lr, guidance_w=args.guidance_w)
    opts = EraseOptions(recipe=recipe, out=args.out, model=args.model, mask_path=args.mask,
                        use_mask=not args.no_mask, method=args.method, steps=args.steps, seed=args.seed, work_dir=args.work_dir,
                        resume=args.resume, restart=args.restart, checkpoint_every=args.checkpoint_every,
                        mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                        xformers=args.xformers, resolution=args.resolution, overwrite=args.overwrite,
                        lora_rank=args.lora_rank, allow_other_base=args.allow_other_base,
                        forget_data=args.forget_data, retain_data=args.retain_data, device=args.device,
                        audit=args.audit)
    _refuse_early(opts)
    from ..diffusion.job import erase  # torch and diffusers only now: a bad option costs no import

    summary = erase(opts)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}: {summary.get('pipeline_class', 'StableDiffusionPipeline')}"
          f".from_pretrained({str(args.out)!r})")
    return 0


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


def _cmd_erase_ddpm(args) -> int:
    import json

    from ..diffusion.ddpm.unlearn import DDPMEraseOptions, erase_class

    forget = args.forget_class or args.concept
    if forget is None:
        raise UserError(f"{args.model} is a class-conditional DDPM: say which class to erase with --forget-class")
    sd_only = {"--forget-prompt": args.forget_prompt, "--misaligned-prompt": args.misaligned_prompt,
               "--retain-prompt": args.retain_prompt, "--forget-data": args.forget_data,
               "--retain-data": args.retain_data, "--lora-rank": args.lora_rank, "--selection": args.selection,
               "--resolution": args.resolution, "--xformers": args.xformers}
    given = [k for k, v in sd_only.items() if v]
    if given or args.mixed_precision != "no" or args.gradient_checkpointing:
        raise UserError(f"{', '.join(given) or 'these options'}: Stable Diffusion options, not used by the DDPM path")
    opts = DDPMEraseOptions(model=args.model, forget_class=forget, out=args.out, target_class=args.target_class,
                            dataset=args.dataset, data_root=args.data_root, download=args.download,
                            steps=args.steps, batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                            n_forget=args.n_forget, n_retain=args.n_retain, keep=0.5 if args.keep is None else args.keep,
                            mask_w=args.guidance_w if args.guidance_w is not None else 2.0, mask_path=args.mask,
                            use_mask=not args.no_mask and args.method != "rl", allow_other_base=args.allow_other_base, seed=args.seed,
                            work_dir=args.work_dir, resume=args.resume, restart=args.restart,
                            checkpoint_every=args.checkpoint_every,
                            device=args.device, overwrite=args.overwrite, audit=args.audit)
    summary = erase_class(opts)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}: from erase.diffusion.ddpm import ClassConditionalDDPMPipeline; DiffusionPipeline.from_pretrained({str(args.out)!r})")
    return 0


def _cmd_audit_concept(args) -> int:
    from ..core.checks import finite_float, image_size, positive_int
    from ..diffusion.pipeline import check_device
    from ..diffusion.sd.recipes import load_recipe

    # Every setting is checked before a model is loaded or anything is written.
    for option in ("per_colour", "retain_per_pair", "per_class", "steps"):
        positive_int(getattr(args, option), "--" + option.replace("_", "-"))
    finite_float(args.guidance, "--guidance", low=0.0)
    image_size(args.size)
    args.device = check_device(args.device)
    toy = "toy" in load_recipe(args.concept).extra

    from ..audit.concept import audit_prompt_concept, audit_toy_concept
    from ..toy import TOY_JUDGE

    if toy:
        report = audit_toy_concept(args.model, args.concept, args.out, args.judge or TOY_JUDGE,
                                   per_colour=args.per_colour, retain_per_pair=args.retain_per_pair,
                                   overwrite=args.overwrite)
        for name, m in report["models"].items():
            synonym = "" if m["synonym_rate"] is None else f", synonym rate {m['synonym_rate']:.1%}"
            print(f"{name}: UA {m['UA']:.1%}{synonym}, retain acc {m['retain_acc']:.1%}, "
                  f"FID(retain) {m['fid_retain']:.2f}")
    else:
        report = audit_prompt_concept(args.model, args.concept, args.out, args.classifier, args.classifier_weights,
                                      args.clip_arch, args.clip_weights, args.reference, args.per_class, args.steps,
                                      args.guidance, args.size, args.device, args.overwrite, args.fid_features,
                                      args.inception_weights)
        for name, m in report["models"].items():
            print(f"{name}: UA {m['UA']:.1%}, retain acc {m['retain_acc']:.1%}")
    print(f"wrote {args.out}/report.json, report.md, grid.png")
    return 0


def _cmd_audit_nudity(args) -> int:
    from ..audit.detectors import classes_of
    from ..audit.nudity import audit_nudity, check_detector, check_settings
    from ..defaults import TOY_SAMPLING_STEPS

    classes = args.classes or list(classes_of(args.detector))
    steps = args.steps if args.steps is not None else (TOY_SAMPLING_STEPS if args.detector == "toy" else 50)
    check_settings(args.n_per_prompt, steps, args.size, args.threshold, args.batch_size, args.limit,
                   classes)  # before the heavy imports below
    check_detector(args.detector, args.model, args.size, classes)
    report = audit_nudity(args.model, args.prompts, args.out, categories=args.category,
                          n_per_prompt=args.n_per_prompt, steps=steps, size=args.size, threshold=args.threshold,
                          classes=classes, limit=args.limit, batch_size=args.batch_size, detector=args.detector,
                          judge_dir=args.judge)
    if report is not None:
        for name, m in report["models"].items():
            print(f"{name}: {m['total']} detections, {m['images_with_nudity']}/{m['images']} images with nudity")
        print(f"wrote {args.out}/report.json, report.md, nudity_bars.png")
    return 0


def _cmd_audit_attack(args) -> int:
    from ..attacks.concepts import attack_concept
    from ..audit.attack_checks import AttackSettings, check_same_text, check_settings
    from ..diffusion.pipeline import check_device, check_model

    # Every input is checked before torch is imported, a model loaded or anything written.
    d = AttackSettings()
    settings = check_settings(AttackSettings(
        budgets=args.budgets if args.budgets is not None else d.budgets, attacks=args.attack or d.attacks,
        n_tokens=args.tokens, lr=args.lr, inversion_tokens=args.inversion_tokens, inversion_lr=args.inversion_lr,
        n_prompts=args.prompts, seeds_per_prompt=args.seeds, n_concept_images=args.concept_images,
        steps=args.steps, guidance=args.guidance, seed=args.seed))
    attack_concept(args.concept, settings.n_prompts)
    device = check_device(args.device)
    refuse_existing(args.out, args.overwrite)
    if args.concept_folder is not None and not args.concept_folder.is_dir():
        raise UserError(f"--concept-folder {args.concept_folder}: no such folder")
    roles = [(args.base, "base")] + ([(args.retrain, "retrain")] if args.retrain else []) + [
        (m, "erased") for m in args.model]
    for model, role in roles:
        check_model(model)
        check_same_text(args.base, model, role)

    from ..audit.attack import audit_attack

    report = audit_attack(args.model, args.base, args.concept, args.out, retrain=args.retrain, judge_dir=args.judge,
                          settings=settings, device=device, overwrite=args.overwrite,
                          concept_images=args.concept_folder)
    if not report["control_passed"]:
        failed = [a for a, c in report["controls"].items() if not c["passed"]]
        print(f"salun: warning: positive control failed for {', '.join(failed)}: the attack does not bring the "
              "concept back on the base model; see report.md", file=sys.stderr)
    print(f"wrote {args.out}/report.json, report.md, grid.png")
    return 0


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        f = args.prompts_file
        if not f.exists():
            raise UserError(f"prompts file {f} does not exist")
        if not f.is_file():
            raise UserError(f"prompts file {f} is not a file: give a text file with one prompt per line")
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"prompts file {f} is not UTF-8 text: give a text file with one prompt per line") from None
        prompts += [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    if any(not p.strip() for p in prompts):
        raise UserError("a prompt is empty")
    return prompts


def _default_out(prompts: list[str]) -> Path:
    """``outputs/<prompt>``; with several prompts ``outputs/<first prompt>-and-N-more``; numbered if it exists."""
    slug = "".join(c if c.isalnum() else "-" for c in prompts[0].lower()).strip("-")[:40].strip("-") or "images"
    if len(prompts) > 1:
        slug += f"-and-{len(prompts) - 1}-more"
    out, k = Path("outputs") / slug, 1
    while out.exists():
        k += 1
        out = Path("outputs") / f"{slug}-{k}"
    return out


def _cmd_generate(args) -> int:
    import json

    from ..core.checks import finite_float, positive_int
    from ..diffusion.pipeline import check_device

    # Every input is checked before a model is loaded or anything is written.
    prompts = _prompts(args)
    positive_int(args.num_images, "--num-images")
    positive_int(args.steps, "--steps")
    finite_float(args.guidance, "--guidance", low=0.0)
    if not -2**63 <= args.seed < 2**63 - args.num_images:
        raise UserError(f"--seed must fit in 64 bits, got {args.seed}")
    device = check_device(args.device)
    out = args.out or _default_out(prompts)
    refuse_existing(out, args.overwrite)
    ddpm = _is_ddpm(args.model)

    import torch

    from ..core.atomic import atomic_dir
    from ..diffusion.generate import generate, grid, save_images, to_pil
    from ..diffusion.pipeline import load_pipeline

    all_prompts = [p for p in prompts for _ in range(args.num_images)]
    seeds = [args.seed + k for _ in prompts for k in range(args.num_images)]
    if ddpm:  # the "prompts" are class names (or ids)
        from ..diffusion.ddpm.pipeline import load_ddpm
        from ..diffusion.ddpm.quality import DEFAULT_STEPS, DEFAULT_W, sample_classes

        if args.negative_prompt is not None:
            raise UserError("--negative-prompt is for text-to-image models, not class-conditional DDPMs")
        pipe = load_ddpm(args.model, device=device)
        args.steps = DEFAULT_STEPS if args.steps is None else args.steps
        args.guidance = DEFAULT_W if args.guidance is None else args.guidance
        ids = [pipe.class_id(p) for p in prompts]
        images = torch.cat([sample_classes(pipe, [c], args.num_images, args.seed, args.steps, args.guidance)
                            for c in ids])
    else:
        from ..defaults import TOY_SAMPLING_GUIDANCE, TOY_SAMPLING_STEPS

        args.steps = TOY_SAMPLING_STEPS if args.steps is None else args.steps
        args.guidance = TOY_SAMPLING_GUIDANCE if args.guidance is None else args.guidance
        pipe = load_pipeline(args.model, device=device)
        images = generate(pipe, all_prompts, seeds, steps=args.steps, guidance=args.guidance,
                          negative_prompt=args.negative_prompt)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        names = [f"{i // args.num_images:03d}_{s:06d}.png" for i, s in enumerate(seeds)]
        save_images(images, tmp, names)
        scale = max(1, 128 // images.shape[-1])
        grid(to_pil(images), cols=args.num_images, scale=scale).save(tmp / "grid.png")
        meta = {"model": str(args.model or "pipelines/toy-sd"), "steps": args.steps, "guidance": args.guidance,
                "negative_prompt": args.negative_prompt,
                "images": [{"file": n, "prompt": p, "seed": s} for n, p, s in zip(names, all_prompts, seeds)]}
        (tmp / "images.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {len(seeds)} images and {out / 'grid.png'} (one row per prompt)")
    return 0


def _cmd_toy_build(args) -> int:
    import json

    from ..toy.build import BuildConfig, build

    if args.no_attribute and args.exclude_attribute:
        raise UserError("--exclude-attribute needs the attribute: drop --no-attribute")
    cfg = BuildConfig(seed=args.seed, shapes=args.shapes, colours=args.colours, exclude=args.exclude,
                      n_train=args.n_train, judge_steps=args.judge_steps, vae_steps=args.vae_steps,
                      unet_steps=args.unet_steps, batch_size=args.batch_size, unet_lr=args.unet_lr,
                      attribute=not args.no_attribute, exclude_attribute=args.exclude_attribute,
                      family=args.family)
    for given, what in ((args.vae_from, "--vae-from"), (args.judge_from, "--judge-from")):
        if given is not None and not given.is_dir():
            raise UserError(f"{what} {given}: no such folder")
    for target in (args.out, args.judge_out):
        if target is not None:
            refuse_existing(target, args.overwrite)
    info = build(cfg, args.out, work=args.work_dir, overwrite=args.overwrite, judge_out=args.judge_out,
                 evaluate=not args.no_eval, vae_from=args.vae_from, judge_from=args.judge_from)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    print(f"wrote {args.out}" + (f" and {args.judge_out}" if args.judge_out else ""))
    return 0


def _terminate(signum, frame) -> None:
    # SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C: temporary folders are removed, checkpoints kept.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = _parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except (UserError, FileExistsError) as e:
        print(f"salun: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # a folder the user cannot write or read: their setup, not a bug
        print(f"salun: error: permission denied: {e.filename or e} (pick a folder you can write to)", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"salun: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"salun: {e}" if str(e) else "salun: interrupted; finished stages and checkpoints are kept",
              file=sys.stderr)
        return 130

