"""Load a text-to-image pipeline of a supported family (SD 1.x/2.x, SDXL) from a local folder or a hub id,
with clear errors.

Every way a pipeline folder or hub id can fail to load (a missing or corrupt component, a hub that does
not answer, a device this machine lacks) ends in a ``UserError`` naming what is wrong and what to do.
The module imports no torch or diffusers at import time: the CLI checks its input before paying for them.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UserError

if TYPE_CHECKING:
    import torch

# Seconds a hub request may wait for a connection or an answer. huggingface_hub's own default for file
# downloads is also 10 s, but some of its calls (the repo info diffusers asks for) wait forever.
HUB_TIMEOUT_S = 10.0
_TIMEOUT_VARS = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")


def default_model() -> Path:
    from ..toy import TOY_SD

    return TOY_SD


def native_size(model: str) -> int | None:
    """The side of the images a local pipeline folder draws (from its unet/ and vae/ configs); ``None`` for a
    hub id or a folder whose configs cannot be read (the loader then says what is wrong)."""
    folder = Path(model)
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        size = unet["sample_size"]
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") != 1


def check_device(device: str | None, option: str = "--device") -> str | None:
    """``device`` as torch spells it, or a one-line refusal when it is unknown or this machine lacks it.

    ``None`` stays ``None`` (the caller picks). Call it before loading anything, so a wrong device costs
    nothing: ``cuda`` without a GPU, ``cuda:3`` on a two-GPU machine, ``mps`` off Apple silicon, ``gpu``.
    """
    if device is None:
        return None
    if device == "cpu":  # the default: no need to import torch to know it exists
        return device
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{option} {device!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    if d.type == "cpu":
        return str(d)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{option} {device}: this machine has no usable CUDA GPU "
                            "(torch.cuda.is_available() is False); use --device cpu")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise UserError(f"{option} {device}: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}")
        return str(d)
    if d.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{option} {device}: Apple's MPS backend is not available here; use --device cpu")
        return str(d)
    raise UserError(f"{option} {device}: salun runs on cpu, cuda or mps, not {d.type}")


def bound_hub_timeouts() -> float:
    """Bound huggingface_hub's waits; returns the timeout (seconds) for calls made here.

    The hub reads ``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT`` when it is first imported, so
    this runs before anything imports it (a value the user set wins). Calls diffusers or datasets make
    without any timeout are bounded by asking the hub first ourselves, with this timeout
    (``check_hub_reachable``).
    """
    for var in _TIMEOUT_VARS:
        os.environ.setdefault(var, str(int(HUB_TIMEOUT_S)))
    try:
        t = float(os.environ["HF_HUB_ETAG_TIMEOUT"])
    except ValueError:
        t = HUB_TIMEOUT_S
    return t if t > 0 else HUB_TIMEOUT_S


def hub_is_offline() -> bool:
    """Whether huggingface_hub was told to stay offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def check_hub_reachable(repo_id: str, repo_type: str = "model", fix: str = "") -> None:
    """Ask the hub about ``repo_id`` with a bounded wait, so a network that accepts connections but never
    answers fails in seconds instead of hanging the library call that follows.

    Offline mode skips it (the libraries then read their cache and fail fast when it lacks the files).
    """
    timeout = bound_hub_timeouts()
    from huggingface_hub import HfApi

    if hub_is_offline():
        return
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - network errors come in many types; each means "not from here"
        name = type(e).__name__
        if "Timeout" in name:
            why = f"the hub did not answer within {timeout:g} s ({name})"
        elif "NotFound" in name:
            why = f"the hub has no {repo_type} {repo_id!r}, or it is private or gated (log in with `hf auth login`)"
        else:
            why = f"the hub could not be reached ({name})"
        raise UserError(f"could not load {repo_id!r}: {why}. {fix}".strip()) from None


def pipeline_class_of(model: str | Path) -> str:
    """The ``_class_name`` in a local pipeline folder's model_index.json."""
    return read_model_index(Path(model).expanduser())["_class_name"]


def read_model_index(path: Path) -> dict:
    index = path / "model_index.json"
    if not index.exists():
        raise UserError(f"{path} is not a diffusers pipeline folder (no model_index.json): point "
                        "--model at a folder written by save_pretrained, e.g. pipelines/toy-sd")
    try:
        data = json.loads(index.read_text())
        data["_class_name"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserError(f"{index} is not a valid model_index.json ({type(e).__name__}: {e})") from None
    return data


def is_ddpm_folder(model) -> bool:
    """True for a local pipeline folder of the DDPM family (class-conditional or not): the DDPM path handles it."""
    from .family import supported_classes

    p = Path(str(model)).expanduser() if model else None
    if not (p and p.is_dir() and (p / "model_index.json").exists()):
        return False
    fam = supported_classes().get(pipeline_class_of(p))
    return fam is not None and fam.name == "ddpm"


def components_of(path: Path) -> list[str]:
    """The components a pipeline folder's model_index.json lists with a class (``[null, null]`` ones are unset).

    A component is ``[library, ClassName]``; other two-item lists (a DDPM's ``class_names`` with two
    classes) are told apart by the library being an installed module and the class being CamelCase.
    """
    import importlib.util

    def is_component(v) -> bool:
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, str) and x for x in v)):
            return False
        return v[1][0].isupper() and importlib.util.find_spec(v[0].split(".")[0]) is not None

    return [k for k, v in read_model_index(path).items() if not k.startswith("_") and is_component(v)]


def check_pipeline_folder(path: Path) -> None:
    """Refuse a local pipeline folder with a missing component folder or unreadable weights, naming the component.

    Only safetensors headers are read (the weights themselves are not): a truncated or overwritten
    file fails here with its component's name instead of deep inside diffusers.
    """
    from safetensors import SafetensorError, safe_open

    for name in components_of(path):
        folder = path / name
        if not folder.is_dir():
            raise UserError(f"{path} lacks its {name} component ({name}/ is missing, but model_index.json lists "
                            "it): the pipeline folder is incomplete; copy or download it again")
        for f in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(str(f), framework="numpy"):
                    pass
            except (SafetensorError, OSError) as e:
                raise UserError(f"the {name} weights of {path} are unreadable ({f.name}: {_one_line(e)}): the file "
                                "is truncated or corrupt; copy or download the pipeline again") from None


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _failed_component(path: Path, e: BaseException) -> str | None:
    """Which component a loading error is about, when its message names the component's folder."""
    msg = str(e)
    for name in components_of(path):
        if str(path / name) in msg or f"/{name}/" in msg or f"'{name}'" in msg:
            return name
    return None


def dtype_kwargs(dtype) -> dict:
    """``from_pretrained``'s dtype argument as the installed diffusers spells it.

    diffusers deprecated ``torch_dtype`` for ``dtype`` (and warns on every load) in recent versions;
    older ones ignore ``dtype``. Which one this diffusers reads is seen from its helper for the rename.
    """
    try:
        from diffusers.utils import deprecation_utils

        renamed = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:
        renamed = False
    return {"dtype": dtype} if renamed else {"torch_dtype": dtype}


@contextlib.contextmanager
def quiet_loading(quiet: bool = True):
    """Silence diffusers' and transformers' loading bars: a failed load then leaves one error line, not a
    half-drawn bar, and a good one leaves the output to what the command does."""
    if not quiet:
        yield
        return
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


@contextlib.contextmanager
def _hub_warnings_silenced():
    """diffusers logs "Couldn't connect to the Hub ... will try the local cache" (two lines) before it fails
    offline; the error that follows says it in one line, with the fix."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def load_local(cls, path: Path, progress: bool = False, **kwargs):
    """``cls.from_pretrained(path)`` for a checked local folder; a failure names the component when it can."""
    check_pipeline_folder(path)
    try:
        with quiet_loading(not progress):
            return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, EOFError) as e:
        if isinstance(e, UserError):
            raise
        part = _failed_component(path, e)
        what = f"its {part} component" if part else "it"
        raise UserError(f"could not load the pipeline in {path}: {what} failed ({type(e).__name__}: "
                        f"{_one_line(e)}); copy or download the pipeline folder again") from None


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
            with _hub_warnings_silenced():
                pipe = fam.pipeline_class().from_pretrained(model, **kwargs, **fam.load_kwargs())
        except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean the same here
            raise UserError(f"could not load {model!r} from the Hugging Face hub ({type(e).__name__}). {fix}") from e
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)
