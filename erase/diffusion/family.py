"""The model-family interface: what the one erasure job asks of a kind of diffusion model.

A family knows how to load its pipeline, turn prompts (or labels) into the denoiser's conditions, call
the denoiser with its extra inputs, and which diffusers class writes and loads its LoRA adapters. The
job (``erase.diffusion.job``) never asks which family it holds; it asks the family. A new family is one
module that defines a ``Family`` and one ``register`` call, in the way PEFT registers its tuners (the test
folder's ``ShoutingPipeline`` family does exactly this); the built-in ones (``sd/``, ``sdxl/``, ``sd3/``, ``flux/``, ``ddpm/``)
are registered by ``_load_builtin`` here, lazily, so that the CLI's refusals import no torch and the
families never import the registry back.

Families are found from a pipeline folder's ``model_index.json`` ``_class_name`` (or, for a hub id,
the same file fetched alone), so no command sniffs folders for itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..core.errors import UserError
from ..core.registry import Registry

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Family(Protocol):
    name: str  # the registry key: "sd", "sdxl", "ddpm"
    title: str  # for people: "Stable Diffusion 1.x/2.x"
    pipeline_classes: tuple[str, ...]  # model_index.json _class_name values this family serves

    def pipeline_class(self) -> type:
        """The diffusers pipeline class that loads, saves and (for LoRA) writes adapters for this family."""

    def load_kwargs(self) -> dict:
        """Extra ``from_pretrained`` arguments (SD: no safety checker)."""

    def encode_prompts(self, pipe, prompts: list[str], resolution: int) -> dict[str, "torch.Tensor"]:
        """The denoiser's conditions for each prompt, stacked along dim 0 (one row per prompt)."""

    def null_condition(self, pipe, empty: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
        """Classifier-free guidance's null condition as the family samples with it, given the empty prompt's."""

    def denoise(self, unet, zt: "torch.Tensor", t: "torch.Tensor", cond: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """The denoiser's output (noise, velocity or sample: the scheduler's ``prediction_type``) under ``cond``."""

    # What the denoiser is, how it is trained and what its parameters are called: ``unet_family.UNetDenoising``
    # gives a diffusers UNet's (SD, SDXL, DDPM subclass it); a transformer family overrides them.
    denoiser_component: str  # the pipeline component the job trains and exports ("unet")

    def denoiser_of(self, pipe) -> "torch.nn.Module":
        """The module the job trains (``pipe.unet``)."""

    def training_scheduler(self, pipe):
        """The noise schedule the job trains with (``add_noise``, the training target's ``prediction_type``)."""

    def native_resolution(self, pipe) -> int:
        """The side of the images the pipeline draws, from its configs."""

    def resolution_multiple(self, pipe) -> int:
        """What a training resolution must be a multiple of (the VAE's and the denoiser's downsampling)."""

    def selection_presets(self) -> dict[str, str]:
        """``--selection``'s names (``attn2``, ``attn2+resnets``, ...) as regexes over the denoiser's parameter names."""

    def lora_layers(self, state: dict, rank: int, targets: list[str]) -> dict:
        """``pipeline_class().save_lora_weights``'s arguments for the denoiser's LoRA factors."""

    def usage(self, folder: str) -> str:
        """Python lines that load an exported folder with plain diffusers (for the model card)."""

    # Optional: ``timestep_densities``, the ``--timestep-density`` values ``training_scheduler(pipe, density=...)``
    # takes (a flow-matching family: uniform and logit-normal; without it, uniform only). ``check_method(method)`` refuses, in one line, a method the family cannot serve (SD3: the methods
    # that read a UNet's cross-attention or a DDPM schedule); without it every method is offered.
    # ``guidance_distilled = True``: the family samples without classifier-free guidance (FLUX), so the mask's
    # loss is the plain one and ``--guidance-w`` is refused; its ``sampling_guidance`` is the embedded guidance it
    # draws and trains at (``recipe_for``). ``latent_channels(pipe)`` and
    # ``pipeline_latents(pipe, z)``: a denoiser whose config does not give the latents' channels, or a pipeline
    # that takes its ``latents`` in another layout (FLUX packs them).


FAMILIES: Registry[Family] = Registry("model family", same=lambda a, b: type(a) is type(b))


def register(family: Family) -> Family:
    """Add a family to the registry (each family package calls this once, at import). A second family under a
    name already taken, or claiming a pipeline class another family serves, is refused: silently replacing one
    would route every model of that class to the newcomer."""
    for other in FAMILIES.values():
        if other.name == family.name:
            continue
        clash = set(family.pipeline_classes) & set(other.pipeline_classes)
        if clash:
            raise ValueError(f"{', '.join(sorted(clash))} is served by the {other.name!r} family already; the "
                             f"{family.name!r} family cannot claim it too")
    return FAMILIES.register(family.name, family)


def _load_builtin() -> None:
    # The built-in families are registered here rather than by their own modules, so that the registry imports
    # them and never the reverse (no import cycle); kept lazy so that `salun --help` imports no torch.
    from .ddpm.family import DDPM
    from .flux.family import FLUX
    from .sd.family import SD
    from .sd3.family import SD3
    from .sdxl.family import SDXL

    for fam in (SD, SDXL, SD3, FLUX, DDPM):
        if fam.name not in FAMILIES:
            register(fam)


def check_timestep_density(family: Family, density: str) -> None:
    """``--timestep-density``: one line, before anything is drawn, when the family trains with another schedule."""
    allowed = getattr(family, "timestep_densities", ("uniform",))
    if density not in allowed:
        raise UserError(f"--timestep-density {density}: {family.title} trains with uniform timesteps over its noise "
                        f"schedule; {density} is a flow-matching density (the sd3 and flux families)")


def recipe_for(family: Family, recipe):
    """``recipe`` as ``family`` samples: a guidance-distilled family (FLUX) has no classifier-free guidance to mix
    into the mask's loss (``guidance_w`` 0) and draws its forget and retain images at the embedded guidance its
    predictions are trained at (``sampling_guidance``), so the recipe, card and mask record what was done."""
    if not getattr(family, "guidance_distilled", False):
        return recipe
    from dataclasses import replace

    return replace(recipe, guidance_w=0.0, gen_guidance=family.sampling_guidance)


def families() -> dict[str, Family]:
    _load_builtin()
    return FAMILIES


def supported_classes() -> dict[str, Family]:
    """Pipeline class name -> family, for every registered family (and the classes routed to one to be refused
    there with a family-specific message)."""
    return {cls: f for f in families().values() for cls in (*f.pipeline_classes, *getattr(f, "routed_classes", ()))}


def supported_line() -> str:
    return "; ".join(f"{f.title} ({', '.join(f.pipeline_classes)})" for f in families().values())


def family_for_class(class_name: str, where: str = "this model") -> Family:
    """The family serving ``class_name``, or a one-line refusal naming the supported ones."""
    fam = supported_classes().get(class_name)
    if fam is None:
        raise UserError(f"{where} is a {class_name}; salun supports {supported_line()}")
    return fam


def class_name_of(model: str | Path) -> str:
    """``_class_name`` of a local pipeline folder (read from disk) or hub id (model_index.json alone)."""
    from .loading import bound_hub_timeouts, check_hub_reachable, looks_like_path, read_model_index

    name = str(model)
    if looks_like_path(name):
        return read_model_index(Path(name).expanduser())["_class_name"]
    bound_hub_timeouts()
    fix = ("Without network access, download it elsewhere and pass the local folder to --model "
           f"(hf download {name} --local-dir DIR).")
    check_hub_reachable(name, "model", fix)
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(name, "model_index.json")
        return json.loads(Path(path).read_text())["_class_name"]
    except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean the same here
        raise UserError(f"could not read {name!r}'s model_index.json from the hub ({type(e).__name__}). {fix}") from e


def family_of(model: str | Path) -> Family:
    """The family of a pipeline folder or hub id (one-line refusal for an unsupported pipeline)."""
    return family_for_class(class_name_of(model), str(model))
