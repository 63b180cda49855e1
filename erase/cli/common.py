"""Options several commands share."""
from __future__ import annotations

import argparse
import sys


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--pretrained_model_name_or_path", dest="model", default=None,
                   help="a local diffusers pipeline folder or a hub id: Stable Diffusion 1.x/2.x, SDXL, or a "
                        "class-conditional DDPM (default: the shipped toy model, pipelines/toy-sd)")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    from ..defaults import TOY_SAMPLING_GUIDANCE as DEFAULT_GUIDANCE, TOY_SAMPLING_STEPS as DEFAULT_STEPS

    p.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (default {DEFAULT_STEPS}; class-conditional DDPMs: 50 DDIM steps)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance scale (default {DEFAULT_GUIDANCE}; class-conditional DDPMs: "
                        "w = 2 in (1 + w) e(c) - w e(null))")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default %(default)s)")


def is_ddpm(model) -> bool:
    from ..diffusion.pipeline import is_ddpm_folder

    return is_ddpm_folder(model)


def other_process() -> bool:
    """A process of a multi-process launch other than the main one: it works, but only the main one
    prints (results, progress, the line of a user error that every process meets alike)."""
    import os

    return int(os.environ.get("RANK", "0")) > 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1


def in_main_process_alone(func, args) -> int:
    """A job that does not share its work over processes (training a toy model, the DDPM and
    classification paths, generating, the attack audit), under a multi-process launch: the main process
    runs it as if it were alone, the others are done at once (exit 0); said on stderr."""
    from ..core import distributed as dist

    if dist.world() == 1:  # one process, or already running alone
        return func(args)
    if not dist.is_main():
        return 0
    print(f"salun: note: this command runs in one process (the main one of the {dist.world()} launched)",
          file=sys.stderr)
    with dist.alone():
        return func(args)
