"""Export an erased UNet as a full diffusers pipeline folder, and as a LoRA adapter.

Folders are built in temporary directories beside their targets and renamed into place at the end
(the pipeline and its ``-lora`` folder together: both or neither), so a failure (a full disk, an
interrupt) leaves the source and any earlier output as they were.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from .atomic import atomic_dir, check_output  # noqa: F401 - check_output is re-exported
from .checkpoints import TrainingDiverged
from .errors import UserError
from .mask import Mask


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity, or None."""
    return next((n for n, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


def refuse_non_finite(unet, what: str = "the UNet to export") -> None:
    """A model with a NaN or infinite weight draws black or noise images: it is never written
    (``TrainingDiverged``: the CLI says it in one line, exit 1)."""
    bad = first_non_finite(unet.state_dict().items())
    if bad is not None:
        raise TrainingDiverged(f"{what} holds NaN or infinite weights (first: {bad}); nothing was written")


def lora_rank_bound(weights: Mapping[str, torch.Tensor]) -> int:
    """The largest rank any LoRA module of these weights can use: over their Linear (2-D) and Conv2d (4-D)
    ``.weight`` tensors, the most of min(out features, in features x kernel size); 0 if none can be adapted."""
    return max((min(t.shape[0], t.numel() // t.shape[0]) for n, t in weights.items()
                if n.endswith(".weight") and t.dim() in (2, 4) and t.numel()), default=0)


def check_lora_rank(rank: int | None, weights: Mapping[str, torch.Tensor]) -> None:
    """Refuse a ``--lora-rank`` above what the weights a run may change can use: the factors past a layer's
    min(in, out) are zero padding, which only makes the adapter bigger (``lora_from_delta`` pads every
    module to the one rank)."""
    if rank is None:
        return
    bound = lora_rank_bound(weights)
    if bound == 0:
        raise UserError("--lora-rank: the weights this run changes hold no Linear or Conv2d weight a LoRA can "
                        "adapt; drop --lora-rank")
    if rank > bound:
        raise UserError(f"--lora-rank {rank} is above {bound}, the largest rank any layer this run changes can use "
                        f"(its min(in, out) features): a higher rank only adds zeros; give at most {bound}")


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


def write_pipeline(pipe, unet, folder: Path, mask: Mask | None = None, recipe: dict | None = None,
                   card: str | None = None, extra_files: dict | None = None, component: str = "unet") -> None:
    """Write ``pipe`` with ``unet`` (the trained denoiser, the pipeline's ``component``) swapped in into an (empty)
    ``folder``; untouched components are copied file for file from the source."""
    refuse_non_finite(unet, f"the {component} to export")
    src = _source_folder(pipe)
    tmp = Path(folder)
    components = [k for k, v in pipe.components.items() if v is not None]
    for name in components:
        if name == component:
            continue
        if src is not None and (src / name).is_dir():
            shutil.copytree(src / name, tmp / name)
        else:
            obj = pipe.components[name]
            obj.save_pretrained(tmp / name, **({"safe_serialization": True} if hasattr(obj, "dtype") else {}))
    unet.save_pretrained(tmp / component, safe_serialization=True)
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


def export_pipeline(pipe, unet, out: Path, overwrite: bool = False, mask: Mask | None = None,
                    recipe: dict | None = None, card: str | None = None, extra_files: dict | None = None,
                    component: str = "unet") -> Path:
    """Write ``pipe`` with ``unet`` (its ``component``) swapped in to ``out``, atomically; never a denoiser with
    non-finite weights."""
    check_output(out, _source_folder(pipe), overwrite)
    refuse_non_finite(unet, f"the {component} to export")  # before any folder is made (write_pipeline checks again)
    with atomic_dir(out, overwrite=overwrite, mark="erase") as tmp:
        write_pipeline(pipe, unet, tmp, mask, recipe, card, extra_files, component)
    return Path(out)


class SourceWeights(Mapping):
    """The base UNet's tensors read one at a time from its safetensors files (memory-mapped), so that
    a LoRA export at SD scale needs no second copy of the UNet in memory."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        folder = Path(folder)
        index = folder / "diffusion_pytorch_model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (folder / "diffusion_pytorch_model.safetensors").exists():
            files = ["diffusion_pytorch_model.safetensors"]
        else:
            raise FileNotFoundError(f"no safetensors UNet weights in {folder}")
        self._handles = [safe_open(folder / f, framework="pt") for f in files]
        self._where = {k: h for h in self._handles for k in h.keys()}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._where[name].get_tensor(name)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def base_unet_weights(pipe, unet, component: str = "unet") -> Mapping[str, torch.Tensor]:
    """The source denoiser's weights (the pipeline's ``component``) for a LoRA export: from the source files when
    they are safetensors, else (a ``.bin`` checkpoint) by loading the source denoiser once."""
    src = _source_folder(pipe)
    if src is not None:
        try:
            return SourceWeights(src / component)
        except FileNotFoundError:
            pass
        base = type(unet).from_pretrained(src, subfolder=component)
        return {n: p.detach() for n, p in base.named_parameters()}
    raise UserError("--lora-rank needs the base UNet's files to compute the weight change, and the source "
                    "pipeline's folder could not be found: load the model from a local folder")


def _low_rank(mat: torch.Tensor, r: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B @ A the rank-r approximation of ``mat``: exact SVD for small matrices, a randomised
    SVD (Halko et al., 2011; ``torch.svd_lowrank``, 4 power iterations) for large ones."""
    if min(mat.shape) <= 4 * r + 16:
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        return u[:, :r] * s[:r], vh[:r]
    torch.manual_seed(seed)  # svd_lowrank draws its test matrix from torch's global generator
    u, s, v = torch.svd_lowrank(mat, q=min(min(mat.shape), r + 10), niter=4)
    return u[:, :r] * s[:r], v[:, :r].T


@torch.no_grad()
def lora_from_delta(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], rank: int,
                    names: Iterable[str] | None = None):
    """Low-rank factors (PEFT layout) of the weight change of every changed matrix/conv weight.

    Returns (state dict with ``{module}.lora_A.weight`` / ``{module}.lora_B.weight``, report).
    Only ``.weight`` tensors of Linear (2-D) and Conv2d (4-D) layers can be adapters; changed biases
    and norms are reported as not represented. ``names``: the tensors that may have changed (default:
    all of ``tuned``); the others are not read. ``base`` is read one tensor at a time.
    """
    t0 = time.perf_counter()
    state, err_num, err_den, skipped, modules = {}, 0.0, 0.0, [], []
    with torch.random.fork_rng(devices=[]):  # the randomised SVD must not move the caller's RNG
        for name in (list(names) if names is not None else list(tuned)):
            w1 = tuned[name]
            delta = (w1.detach().float().cpu() - base[name].float().cpu())
            if not bool(torch.isfinite(delta).all()):  # an SVD of it would fail, or give NaN factors
                raise TrainingDiverged(f"the weight change of {name} holds NaN or infinite values: no LoRA of it "
                                       "is written")
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
            b, a = _low_rank(mat, r)
            err_num += float((mat - b @ a).pow(2).sum())
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
              "not_represented": skipped, "seconds": round(time.perf_counter() - t0, 2),
              "method": "truncated SVD (randomised for large matrices) of each changed weight"}
    return state, report


def lora_card(base: str, report: dict, erased_folder: str) -> str:
    """The model card of a ``-lora`` folder: what it holds, and what it cannot."""
    skipped = report["not_represented"]
    kinds = sorted({n.rsplit(".", 1)[-1] for n in skipped})
    return f"""---
library_name: diffusers
base_model: {base}
tags: [lora, machine-unlearning, concept-erasure, salun]
---
# LoRA of a SalUn erasure

The weight change of `{erased_folder}` (the full erased pipeline) against `{base}`, as a rank-{report["rank"]}
LoRA of {report["modules"]} UNet modules (truncated SVD of each changed weight).

- **Rank {report["rank"]}; relative error {report["relative_error"]:.3f}** (Frobenius norm of the part of the
  weight change this adapter does not reproduce, over the norm of the whole change; 0 is exact).
- **Not representable** by a LoRA: {len(skipped)} changed tensors ({", ".join(kinds) or "none"}:
  biases and norm weights) are left out; `lora_report.json` lists them.
- The adapter is therefore an approximation of the erasure: audit it before relying on it, or use the
  full pipeline folder, which is exact.

```python
pipe.load_lora_weights("path/to/this/folder")
```
"""


def unet_lora_layers(state: dict, rank: int, targets: list[str]) -> dict:
    """``save_lora_weights``'s arguments for a UNet's LoRA (the layout of every UNet pipeline in diffusers)."""
    return {"unet_lora_layers": state,
            "unet_lora_adapter_metadata": {"r": rank, "lora_alpha": rank, "target_modules": targets}}


def write_lora(pipe_cls, state: dict, report: dict, folder: Path, card: str | None = None,
               lora_layers: Callable[[dict, int, list[str]], dict] = unet_lora_layers) -> None:
    """Save LoRA factors as a diffusers/PEFT adapter that ``pipe.load_lora_weights`` applies; ``lora_layers``: the
    denoiser's arguments to ``pipe_cls.save_lora_weights`` (a model family's)."""
    if not state:
        raise UserError("the erased UNet does not differ from the base: no adapter to export")
    bad = first_non_finite(state.items())
    if bad is not None:
        raise TrainingDiverged(f"the LoRA factor {bad} holds NaN or infinite values; nothing was written")
    rank = report["rank"]
    targets = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    pipe_cls.save_lora_weights(folder, safe_serialization=True, **lora_layers(state, rank, targets))
    (Path(folder) / "lora_report.json").write_text(json.dumps(report, indent=2))
    if card is not None:
        (Path(folder) / "README.md").write_text(card)
