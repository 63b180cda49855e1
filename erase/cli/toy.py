"""`salun toy build`: the toy world (SD or SDXL) from nothing."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError


def add_toy_parsers(sub) -> None:
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
    b.add_argument("--family", choices=("sd", "sdxl", "sd3"), default=d.family,
                   help="the pipeline to train: sd (StableDiffusionPipeline, default), sdxl (an SDXL UNet with "
                        "text_time conditioning and two text encoders, StableDiffusionXLPipeline) or sd3 (an MMDiT "
                        "trained by flow matching, StableDiffusion3Pipeline; --unet-steps counts its steps)")
    b.set_defaults(func=_cmd_toy_build)
    r = tsub.add_parser("reject-head", help="give a toy judge its 'none of these' outcome (an older judge lacks it)",
                        description="Train the judge's reject head on its frozen features: drawings, their "
                                    "augmented copies and VAE reconstructions are accepted; blanks, noise, "
                                    "blurred-away shapes, half shapes, two shapes, blends and decoded random "
                                    "latents are rejected. The shape, colour and frame heads are kept as they are. "
                                    "Writes a new judge folder; the threshold and false-reject rate go in its "
                                    "config.json.")
    r.add_argument("--judge", type=Path, required=True, help="the judge to start from (e.g. pipelines/toy-judge)")
    r.add_argument("--vae", type=Path, required=True, help="the toy pipeline whose VAE reconstructions count as "
                                                            "accepted (e.g. pipelines/toy-sd)")
    r.add_argument("--out", type=Path, required=True, help="the new judge folder")
    r.add_argument("--overwrite", action="store_true", help="replace --out if it is an earlier reject-head output")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=_cmd_toy_reject_head)


def _cmd_toy_reject_head(args) -> int:
    import json

    from ..toy.reject import add_reject_head

    for given, what in ((args.judge, "--judge"), (args.vae, "--vae")):
        if not given.is_dir():
            raise UserError(f"{what} {given}: no such folder")
    figures = add_reject_head(args.judge, args.vae, args.out, overwrite=args.overwrite, seed=args.seed)
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.out}")
    return 0


def _cmd_toy_build(args) -> int:
    import json

    from ..diffusion.toy_quality import evaluate_quality
    from ..toy.build import BuildConfig, build  # build() guards --out and --judge-out first

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
    info = build(cfg, args.out, work=args.work_dir, overwrite=args.overwrite, judge_out=args.judge_out,
                 evaluate=None if args.no_eval else evaluate_quality, vae_from=args.vae_from, judge_from=args.judge_from)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    print(f"wrote {args.out}" + (f" and {args.judge_out}" if args.judge_out else ""))
    return 0
