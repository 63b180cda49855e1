"""Where the attack audit keeps each finished (model, attack) result: a folder with result.json (the
stamp, the rates and prompts per budget, the times), one image strip per budget (b<budget>.png, the
attacked items left to right) and concept inversion's learned embeddings (safetensors).

A result is reused only under the same stamp: the models' fingerprints and every setting.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import write_text_atomic
from ..diffusion.generate import grid, to_pil


def save_result(folder: Path, stamp: dict, res: dict) -> None:
    """One finished (model, attack): strips of its images per budget, embeddings, then result.json last."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for b, ims in res["images"].items():
        tmp = folder / f".b{b}.png.tmp"
        grid(to_pil(ims), cols=len(ims)).save(tmp, format="PNG")
        tmp.replace(folder / f"b{b}.png")
    if "embeddings" in res:
        tmp = folder / ".embeddings.safetensors.tmp"
        save_file({k: v.contiguous().cpu() for k, v in res["embeddings"].items()}, str(tmp))
        tmp.replace(folder / "embeddings.safetensors")
    data = {"stamp": stamp, "seconds": res["seconds"], "cpu_seconds": res["cpu_seconds"],
            "budgets": {str(b): e for b, e in res["budgets"].items()}}
    write_text_atomic(folder / "result.json", json.dumps(data, indent=2))


def load_result(folder: Path, stamp: dict) -> dict | None:
    """A finished result with this exact stamp, or None."""
    from PIL import Image
    from safetensors.torch import load_file

    f = folder / "result.json"
    if not f.exists():
        return None
    try:
        data = json.loads(f.read_text())
    except ValueError:
        return None
    if data.get("stamp") != json.loads(json.dumps(stamp)):
        return None
    budgets = {int(b): e for b, e in data["budgets"].items()}
    images = {}
    for b in budgets:
        with Image.open(folder / f"b{b}.png") as im:
            strip = torch.from_numpy(np.asarray(im.convert("RGB")).copy())
        n = len(budgets[b]["success"])
        w = strip.shape[1] // n
        x = strip.permute(2, 0, 1).float() / 127.5 - 1
        images[b] = torch.stack([x[:, :, i * w:(i + 1) * w] for i in range(n)])
    res = {"budgets": budgets, "seconds": data["seconds"], "cpu_seconds": data.get("cpu_seconds"), "images": images,
           "resumed": True}
    if (folder / "embeddings.safetensors").exists():
        res["embeddings"] = load_file(folder / "embeddings.safetensors")
    return res


def reuse_result(folder: Path, old: Path, stamp: dict, reports: list[Path] = ()) -> dict | None:
    """A finished result in the work folder, else in the report being replaced, else in any earlier
    report of ``reports`` (under any model name: the stamp names the models by fingerprint). A result
    found elsewhere is copied into the work folder, so the new report keeps it. None when nothing
    matches ``stamp``."""
    found = load_result(folder, stamp)
    if found is not None:
        return found
    candidates = [old] + [d / stamp["attack"] for r in reports for d in sorted((Path(r) / "attacks").glob("*"))]
    for cand in candidates:
        if load_result(cand, stamp) is not None:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(cand, folder)
            return load_result(folder, stamp)
    return None
