#!/usr/bin/env python
"""Store a toy pipeline folder's weights in float16 (half the bytes), loading as float32 as before.

    python scripts/ship_fp16.py pipelines/toy-sd-retrain-frame pipelines/toy-sd-retrain-circle

The Retrain models ship this way to fit the shipped world's size budget. diffusers upcasts float16
safetensors to float32 when loading without a dtype; transformers keeps the checkpoint's dtype unless
the config says otherwise, so the text encoder's config is pinned to float32. Plain
``StableDiffusionPipeline.from_pretrained(folder)`` therefore gives a float32 pipeline, as for the base.
Each file is replaced atomically.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

COMPONENTS = {"unet": "diffusion_pytorch_model.safetensors", "transformer": "diffusion_pytorch_model.safetensors",
              "vae": "diffusion_pytorch_model.safetensors", "text_encoder": "model.safetensors",
              "text_encoder_2": "model.safetensors", "text_encoder_3": "model.safetensors"}  # SDXL's, SD3's


def halve(folder: Path) -> None:
    if not any((folder / d / COMPONENTS[d]).exists() for d in ("unet", "transformer")):
        sys.exit(f"{folder}: no unet/ or transformer/ weights: not a toy pipeline folder")
    for comp, fname in COMPONENTS.items():
        path = folder / comp / fname
        if not path.exists():  # a family without this component (a UNet or a transformer; one to three encoders)
            continue
        tensors = load_file(path)
        half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(half, tmp, metadata={"format": "pt"})
        tmp.replace(path)
        cfg_path = folder / comp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in cfg:
                cfg[key] = "float32"
        if comp.startswith("text_encoder"):
            cfg["dtype"] = "float32"
        tmp = cfg_path.with_name("config.json.tmp")
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        tmp.replace(cfg_path)
    _record(folder)
    print(f"{folder}: weights stored in float16")


def _record(folder: Path) -> None:
    """Say so in the toy build's record and rewrite its card from it (a folder without one is left as is)."""
    info_path = folder / "build_info.json"
    if not info_path.exists():
        return
    from erase.toy.card import write_toy_card

    info = json.loads(info_path.read_text())
    info["stored_dtype"] = "float16"
    tmp = info_path.with_name("build_info.json.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(info_path)
    write_toy_card(folder, info)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        halve(Path(arg))
