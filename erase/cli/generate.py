"""`salun generate`: prompts -> seeded images and a grid, for any supported family."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError
from .common import add_model_arg, add_sampling_args, is_ddpm


def add_generate_parser(sub) -> None:
    g = sub.add_parser("generate", help="prompts -> images and an image grid",
                       description="Generate images from prompts with a pipeline and save them with a grid PNG. "
                                   "Each image is seeded on its own (seed, seed+1, ...), so runs are reproducible.")
    add_model_arg(g)
    g.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    g.add_argument("--prompts-file", type=Path, help="a text file with one prompt per line")
    g.add_argument("--num-images", "-n", type=int, default=8, help="images per prompt (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the first image of each prompt (default %(default)s)")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--out", type=Path, default=None,
                   help="output folder (default: outputs/<prompt>; with several prompts outputs/<first prompt>-and-N-more; "
                        "numbered if it exists)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is an earlier `salun generate` output (never a model or another folder)")
    add_sampling_args(g)
    g.set_defaults(func=_cmd_generate, shares_work=True)


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


def check_memory(side: int | None, n_images: int) -> None:
    """The images are held in memory until they are written together: refuse a count that cannot fit,
    before drawing the first one (``side``: the model's image size, ``None`` if not known yet)."""
    import psutil

    if side is None:
        return
    need = n_images * 3 * side * side * 4  # float32 until written
    free = psutil.virtual_memory().available
    if need > 0.8 * free:
        raise UserError(f"{n_images:,} images of {side}x{side} need {need / 2**30:,.1f} GiB of memory until they are "
                        f"written, and {free / 2**30:,.1f} GiB is free: draw fewer (--num-images) per run")


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
    from ..core.outputs import guard_output
    from ..diffusion.pipeline import check_model, default_model, native_size

    model = args.model or default_model()
    ddpm = is_ddpm(args.model)
    if not ddpm:  # a model that cannot load is said first, whatever --out is
        check_model(args.model)
        check_memory(native_size(model), len(prompts) * args.num_images)
    guard_output(out, "generate", reads=[(model, "the model")], overwrite=args.overwrite,
                 signature=("images.json", "grid.png"))

    import torch

    from ..core import distributed as dist
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
        from ..diffusion.prepare import native_resolution

        pipe = load_pipeline(args.model, device=device)
        check_memory(native_resolution(pipe), len(all_prompts))  # a hub model
        with dist.sharded():  # several processes: each draws every N-th batch, gathered in order
            images = generate(pipe, all_prompts, seeds, steps=args.steps, guidance=args.guidance,
                              negative_prompt=args.negative_prompt)
    with dist.written_once(out, overwrite=args.overwrite, mark="generate") as tmp:
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
