"""The ``salun`` command line: one subcommand per job.

Bad input (a wrong path, an unknown name, an output that exists) ends in one line,
``salun: error: ...``, and exit code 2, with nothing half-written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--pretrained_model_name_or_path", dest="model", default=None,
                   help="a local diffusers pipeline folder or a hub id (default: the shipped toy model, "
                        "pipelines/toy-sd)")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .toy.quality import DEFAULT_GUIDANCE, DEFAULT_STEPS

    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="denoising steps (default %(default)s)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help="classifier-free guidance scale (default %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default %(default)s)")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="salun",
        description="Erase concepts from diffusion models with weight saliency (SalUn), and audit the result.")
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
                   help="output folder (default: outputs/<first prompt>, numbered if it exists)")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_sampling_args(g)
    g.set_defaults(func=_cmd_generate)

    toy = sub.add_parser("toy", help="the toy world: build it, measure it",
                         description="The toy world: a tiny Stable Diffusion trained on drawn shapes.")
    tsub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)
    b = tsub.add_parser("build", help="build the toy SD pipeline and judge from scratch (CPU, seeded)",
                        description="Draw the data, rebuild CLIP's tokenizer, train the judge, the VAE, the text "
                                    "encoder and the UNet, then measure how well the result draws. Stages are "
                                    "cached in --work-dir: rerunning an interrupted build resumes it.")
    from .toy.build import BuildConfig

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
    for name in ("n_train", "judge_steps", "vae_steps", "unet_steps", "batch_size"):
        b.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name),
                       help="default %(default)s")
    b.add_argument("--unet-lr", type=float, default=d.unet_lr, help="default %(default)s")
    b.add_argument("--no-eval", action="store_true", help="skip the quality measurement at the end")
    b.set_defaults(func=_cmd_toy_build)
    return parser


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        if not args.prompts_file.exists():
            raise UserError(f"prompts file {args.prompts_file} does not exist")
        prompts += [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    if any(not p.strip() for p in prompts):
        raise UserError("a prompt is empty")
    return prompts


def _default_out(prompt: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in prompt.lower()).strip("-")[:40] or "images"
    out, k = Path("outputs") / slug, 1
    while out.exists():
        k += 1
        out = Path("outputs") / f"{slug}-{k}"
    return out


def _cmd_generate(args) -> int:
    import json

    from .atomic import atomic_dir
    from .generate import generate, grid, save_images, to_pil
    from .pipeline import load_pipeline

    prompts = _prompts(args)
    if args.num_images < 1:
        raise UserError("--num-images must be at least 1")
    out = args.out or _default_out(prompts[0])
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists: choose another --out or pass --overwrite")
    pipe = load_pipeline(args.model, device=args.device)
    all_prompts = [p for p in prompts for _ in range(args.num_images)]
    seeds = [args.seed + k for _ in prompts for k in range(args.num_images)]
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

    from .toy.build import BuildConfig, build

    cfg = BuildConfig(seed=args.seed, shapes=args.shapes, colours=args.colours, exclude=args.exclude,
                      n_train=args.n_train, judge_steps=args.judge_steps, vae_steps=args.vae_steps,
                      unet_steps=args.unet_steps, batch_size=args.batch_size, unet_lr=args.unet_lr)
    for target in (args.out, args.judge_out):
        if target is not None and target.exists() and not args.overwrite:
            raise UserError(f"{target} exists: choose another output or pass --overwrite")
    info = build(cfg, args.out, work=args.work_dir, overwrite=args.overwrite, judge_out=args.judge_out,
                 evaluate=not args.no_eval)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    print(f"wrote {args.out}" + (f" and {args.judge_out}" if args.judge_out else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileExistsError) as e:
        print(f"salun: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("salun: interrupted; finished stages and checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
