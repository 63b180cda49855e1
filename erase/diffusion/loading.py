"""Low-level loading of diffusers pipeline folders and hub ids, with clear errors: reading model_index.json,
checking a folder's components and weights, devices, hub timeouts and reachability, quiet loading.

Nothing here knows the model families (``family.py``), so the families and their pipeline classes may use it
without a cycle; ``pipeline.py``'s ``load_pipeline`` is the registry-aware loader built on it. Every failure is
a ``UserError`` naming what is wrong and what to do. No torch or diffusers import at import time.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..core.device import check_device  # noqa: F401 - re-exported: the loaders check devices with it
from ..core.errors import UserError

# Seconds a hub request may wait for a connection or an answer. huggingface_hub's own default for file
# downloads is also 10 s, but some of its calls (the repo info diffusers asks for) wait forever.
HUB_TIMEOUT_S = 10.0
_TIMEOUT_VARS = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")


FLUX_LATENT_SIDE = 128  # FluxPipeline.default_sample_size: the latents' side it draws when no size is asked


def native_size(model: str) -> int | None:
    """The side of the images a local pipeline folder draws (from its denoiser's config, a UNet's or a
    transformer's, and its vae/ config); ``None`` for a hub id or a folder whose configs cannot be read (the loader
    then says what is wrong)."""
    folder = Path(model)
    try:
        denoiser = next((folder / d for d in ("unet", "transformer") if (folder / d / "config.json").is_file()),
                        folder / "unet")
        unet = json.loads((denoiser / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        size = unet.get("sample_size", FLUX_LATENT_SIDE)  # FLUX's transformer does not say: its pipeline's default
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") != 1


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
def hub_warnings_silenced():
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
