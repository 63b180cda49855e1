"""Load a Stable Diffusion 1.x/2.x pipeline from a local folder or a hub id, with clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import UserError

SUPPORTED = ("StableDiffusionPipeline",)


def default_model() -> Path:
    from .toy import TOY_SD

    return TOY_SD


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") != 1


def pipeline_class_of(model: str | Path) -> str:
    """The ``_class_name`` in a local pipeline folder's model_index.json."""
    index = Path(model).expanduser() / "model_index.json"
    if not index.exists():
        raise UserError(f"{model} is not a diffusers pipeline folder (no model_index.json): point "
                        "--model at a folder written by save_pretrained, e.g. pipelines/toy-sd")
    try:
        return json.loads(index.read_text())["_class_name"]
    except (ValueError, KeyError) as e:
        raise UserError(f"{index} is not a valid model_index.json: {e}") from e


def is_ddpm_folder(model) -> bool:
    """True for a local pipeline folder holding a DDPM (class-conditional or not): the DDPM path handles it."""
    p = Path(str(model)).expanduser() if model else None
    return bool(p and p.is_dir() and (p / "model_index.json").exists() and "DDPM" in pipeline_class_of(p))


def load_pipeline(model: str | Path | None = None, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, progress: bool = False):
    """Load a ``StableDiffusionPipeline`` offline-friendly: local folders first, hub ids if reachable."""
    from diffusers import StableDiffusionPipeline

    model = str(model or default_model())
    kwargs = dict(torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
    if _looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise UserError(f"model folder {path} does not exist: give a pipeline folder or a hub id "
                            "such as CompVis/stable-diffusion-v1-4")
        cls = pipeline_class_of(path)
        if cls not in SUPPORTED:
            raise UserError(f"{path} is a {cls}; salun supports Stable Diffusion 1.x/2.x "
                            f"({', '.join(SUPPORTED)}), not SDXL or other pipelines yet")
        pipe = StableDiffusionPipeline.from_pretrained(path, **kwargs)
    else:
        try:
            pipe = StableDiffusionPipeline.from_pretrained(model, **kwargs)
        except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean the same here
            raise UserError(f"could not load {model!r} from the Hugging Face hub ({type(e).__name__}). "
                            "Without network access, download it elsewhere and pass the local folder "
                            "to --model (huggingface-cli download ... --local-dir DIR).") from e
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)
