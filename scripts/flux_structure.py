#!/usr/bin/env python
"""FLUX.1's transformer from its real config on the meta device (no memory, no weights): how many weights it
has, what each ``--selection`` preset of the FLUX family selects, and the size of a saliency mask over them on
disk (``erase.core.mask``: one bit a selected weight, safetensors headers aside). A 12B model does not fit this
24 GB machine in any dtype salun trains in, so nothing runs it here; these are the structure's figures.

    python scripts/flux_structure.py --json docs/flux_structure.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def figures(guidance_embeds: bool) -> dict:
    import torch
    from diffusers import FluxTransformer2DModel

    from erase.core.mask import select_parameters
    from erase.diffusion.flux.family import PRESETS
    from fixture_models.real_configs import FLUX_TRANSFORMER

    with torch.device("meta"):
        model = FluxTransformer2DModel(**{**FLUX_TRANSFORMER, "guidance_embeds": guidance_embeds})
    total = sum(p.numel() for p in model.parameters())
    out = {"parameters": total, "bf16_weights_gib": round(total * 2 / 2**30, 2), "presets": {}}
    for name in ("all", "attn2", "attn", "resnets", "attn2+resnets"):
        sel = select_parameters(model, name, PRESETS)
        n = sum(p.numel() for p in sel.values())
        out["presets"][name] = {"tensors": len(sel), "weights": n,
                                "mask_bytes": sum((p.numel() + 7) // 8 for p in sel.values())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    result = {"FLUX.1-dev": figures(True), "FLUX.1-schnell": figures(False), "argv": sys.argv[1:]}
    for model, f in result.items():
        if model == "argv":
            continue
        print(f"{model}: {f['parameters']:,} weights ({f['bf16_weights_gib']} GiB in bf16)")
        for name, s in f["presets"].items():
            print(f"  {name:<14} {s['weights']:>15,} weights in {s['tensors']:>4} tensors, mask "
                  f"{s['mask_bytes'] / 2**20:,.1f} MiB")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
