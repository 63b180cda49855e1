"""Options several commands share."""
from __future__ import annotations

import argparse


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
