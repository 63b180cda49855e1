"""Export an erased UNet as a full diffusers pipeline folder, and as a LoRA adapter.

The folder is built in a temporary directory beside the target and renamed into place at the end,
so a failure (a full disk, an interrupt) leaves the source and any earlier output as they were.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .atomic import atomic_dir, refuse_existing
from .errors import UserError
from .mask import Mask


def check_output(out: Path, source: str | Path | None, overwrite: bool) -> None:
    """Refuse to write over the source checkpoint, or over an existing output without --overwrite."""
    out = Path(out).expanduser().resolve()
    if source is not None and Path(str(source)).expanduser().exists():
        src = Path(str(source)).expanduser().resolve()
        if out == src or src in out.parents or out in src.parents:
            raise UserError(f"--out {out} would write over (or inside) the source model {src}: pick another folder")
    refuse_existing(out, overwrite)


def _source_folder(pipe) -> Path | None:
    """The local folder the pipeline was loaded from (a hub id resolves to its cached snapshot)."""
    name = pipe.config.get("_name_or_path") or pipe.name_or_path
    if name and Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache: components are saved instead of copied
        return None


def export_pipeline(pipe, unet, out: Path, overwrite: bool = False, mask: Mask | None = None,
                    recipe: dict | None = None, card: str | None = None, extra_files: dict | None = None) -> Path:
    """Write ``pipe`` with ``unet`` swapped in; untouched components are copied file for file."""
    src = _source_folder(pipe)
    check_output(out, src, overwrite)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        components = [k for k, v in pipe.components.items() if v is not None]
        for name in components:
            if name == "unet":
                continue
            if src is not None and (src / name).is_dir():
                shutil.copytree(src / name, tmp / name)
            else:
                obj = pipe.components[name]
                obj.save_pretrained(tmp / name, **({"safe_serialization": True} if hasattr(obj, "dtype") else {}))
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        if src is not None and (src / "model_index.json").exists():
            index = json.loads((src / "model_index.json").read_text())
        else:
            pipe.save_config(tmp)
            index = json.loads((tmp / "model_index.json").read_text())
        # The exported pipeline needs no safety checker to load; keep one only if the source has it.
        for key in ("safety_checker", "feature_extractor"):
            if key in index and pipe.components.get(key) is None:
                index[key] = [None, None]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        if mask is not None:
            mask.save(tmp / "mask.safetensors")
        if recipe is not None:
            (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
        if card is not None:
            (tmp / "README.md").write_text(card)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(out)


@torch.no_grad()
def lora_from_delta(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], rank: int):
    """Low-rank factors (PEFT layout) of the weight change of every changed matrix/conv weight.

    Returns (state dict with ``{module}.lora_A.weight`` / ``{module}.lora_B.weight``, report).
    Only ``.weight`` tensors of Linear (2-D) and Conv2d (4-D) layers can be adapters; changed biases
    and norms are reported as not represented.
    """
    state, err_num, err_den, skipped, modules = {}, 0.0, 0.0, [], []
    for name, w1 in tuned.items():
        w0 = base[name].to(w1.device)
        delta = (w1.float() - w0.float()).cpu()
        if not bool(delta.any()):
            continue
        if not name.endswith(".weight") or delta.dim() not in (2, 4):
            skipped.append(name)
            err_num += float(delta.pow(2).sum())
            err_den += float(delta.pow(2).sum())
            continue
        module = name[: -len(".weight")]
        mat = delta.reshape(delta.shape[0], -1)
        r = min(rank, *mat.shape)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        b = u[:, :r] * s[:r]
        a = vh[:r]
        approx = b @ a
        err_num += float((mat - approx).pow(2).sum())
        err_den += float(mat.pow(2).sum())
        if delta.dim() == 4:
            out_c, in_c, kh, kw = delta.shape
            a = a.reshape(r, in_c, kh, kw)
            b = b.reshape(out_c, r, 1, 1)
        if r < rank:  # pad so every module has the same rank (one lora_alpha for all)
            pad = rank - r
            a = torch.cat([a, a.new_zeros((pad,) + tuple(a.shape[1:]))])
            b = torch.cat([b, b.new_zeros((b.shape[0], pad) + tuple(b.shape[2:]))], dim=1)
        state[f"{module}.lora_A.weight"] = a.contiguous()
        state[f"{module}.lora_B.weight"] = b.contiguous()
        modules.append(module)
    report = {"rank": rank, "modules": len(modules),
              "relative_error": (err_num / err_den) ** 0.5 if err_den else 0.0,
              "not_represented": skipped}
    return state, report


def export_lora(pipe_cls, base_unet, tuned_unet, out: Path, rank: int, overwrite: bool = False) -> dict:
    """Save the UNet's weight change as a diffusers/PEFT LoRA that ``pipe.load_lora_weights`` applies."""
    base = dict(base_unet.named_parameters())
    tuned = {n: p.detach() for n, p in tuned_unet.named_parameters()}
    state, report = lora_from_delta({n: p.detach() for n, p in base.items()}, tuned, rank)
    if not state:
        raise UserError("the erased UNet does not differ from the base: no adapter to export")
    targets = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        pipe_cls.save_lora_weights(tmp, unet_lora_layers=state, safe_serialization=True,
                                   unet_lora_adapter_metadata={"r": rank, "lora_alpha": rank,
                                                               "target_modules": targets})
        (tmp / "lora_report.json").write_text(json.dumps(report, indent=2))
    return report
