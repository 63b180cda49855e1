"""Load a text-to-image pipeline of a supported family (SD 1.x/2.x, SDXL) from a local folder or a hub id,
with clear errors.

Every way a pipeline folder or hub id can fail to load (a missing or corrupt component, a hub that does
not answer, a device this machine lacks) ends in a ``UserError`` naming what is wrong and what to do.
The family-free helpers live in ``loading.py`` (re-exported here); this module adds what needs the family
registry. The module imports no torch or diffusers at import time: the CLI checks its input before paying
for them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UserError
from .loading import (  # noqa: F401 - re-exported: the loading helpers' historical home
    native_size,
    looks_like_path,
    check_device,
    bound_hub_timeouts,
    hub_is_offline,
    check_hub_reachable,
    pipeline_class_of,
    read_model_index,
    components_of,
    check_pipeline_folder,
    dtype_kwargs,
    quiet_loading,
    hub_warnings_silenced,
    load_local,
)
from .loading import HUB_TIMEOUT_S  # noqa: F401

if TYPE_CHECKING:
    import torch


def default_model() -> Path:
    from ..toy import TOY_SD

    return TOY_SD


def is_ddpm_folder(model) -> bool:
    """True for a local pipeline folder of the DDPM family (class-conditional or not): the DDPM path handles it."""
    from .family import supported_classes

    p = Path(str(model)).expanduser() if model else None
    if not (p and p.is_dir() and (p / "model_index.json").exists()):
        return False
    fam = supported_classes().get(pipeline_class_of(p))
    return fam is not None and fam.name == "ddpm"


def check_model(model: str | Path | None) -> None:
    """The cheap checks of ``load_pipeline`` without loading: a local folder exists, is a complete Stable
    Diffusion pipeline folder with readable weights. Hub ids pass (they are checked when loaded). Commands
    that load several models call it for all of them first, so a bad last one fails before any work."""
    model = str(model or default_model())
    if not looks_like_path(model):
        return
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"model folder {path} does not exist: give a pipeline folder or a hub id "
                        "such as CompVis/stable-diffusion-v1-4")
    text_to_image_family(pipeline_class_of(path), str(path))
    check_pipeline_folder(path)


def text_to_image_family(class_name: str, where: str):
    """The family of a text-to-image pipeline class, or a one-line refusal naming the supported ones."""
    from .family import family_for_class, families

    fam = family_for_class(class_name, where)
    if fam.name == "ddpm":
        names = [f"{f.title} ({', '.join(f.pipeline_classes)})" for f in families().values() if f.name != "ddpm"]
        raise UserError(f"{where} is a {class_name}; this command takes a text-to-image pipeline: "
                        f"{'; '.join(names)}")
    return fam


def load_pipeline(model: str | Path | None = None, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None, progress: bool = False):
    """Load a text-to-image pipeline offline-friendly: local folders first, hub ids if reachable. The
    pipeline class is its family's (``erase.diffusion.family``), found from model_index.json."""
    bound_hub_timeouts()  # before diffusers imports huggingface_hub
    device = check_device(str(device)) if device is not None else "cpu"
    import torch

    from .family import class_name_of

    model = str(model or default_model())
    kwargs = dict(**dtype_kwargs(dtype or torch.float32))
    if looks_like_path(model):
        check_model(model)
        fam = text_to_image_family(pipeline_class_of(Path(model).expanduser()), model)
        pipe = load_local(fam.pipeline_class(), Path(model).expanduser(), progress, **kwargs, **fam.load_kwargs())
    else:
        fix = ("Without network access, download it elsewhere and pass the local folder to --model "
               f"(hf download {model} --local-dir DIR).")
        check_hub_reachable(model, "model", fix)
        fam = text_to_image_family(class_name_of(model), model)
        try:
            with hub_warnings_silenced():
                pipe = fam.pipeline_class().from_pretrained(model, **kwargs, **fam.load_kwargs())
        except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean the same here
            raise UserError(f"could not load {model!r} from the Hugging Face hub ({type(e).__name__}). {fix}") from e
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)
