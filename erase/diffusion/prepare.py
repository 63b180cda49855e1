"""What a job checks and settles about the model it was given, once loaded: its family, the training
resolution, the prediction type it trains, mixed precision on this device, and a pipeline handed over in memory.
"""
from __future__ import annotations

import torch

from ..core.errors import UserError
from .family import Family, check_timestep_density, family_for_class


def family_of_pipe(pipe) -> Family:
    """The family of a loaded pipeline."""
    return family_for_class(type(pipe).__name__)


def denoiser(family: Family, unet):
    return lambda zt, t, cond: family.denoise(unet, zt, t, cond)


def training_scheduler(family: Family, pipe, density: str = "uniform"):
    """The family's training schedule, its timesteps drawn from ``density`` (``flow.FlowMatchTraining``)."""
    check_timestep_density(family, density)
    return family.training_scheduler(pipe) if density == "uniform" else \
        family.training_scheduler(pipe, density=density)


def denoiser_fingerprint(pipe) -> str:
    """The fingerprint of the pipeline's denoiser (a UNet or a transformer): what audits stamp their images with."""
    from ..core.mask import fingerprint

    return fingerprint(dict(family_of_pipe(pipe).denoiser_of(pipe).named_parameters()))


def selected_parameters(pipe, selection: str) -> dict:
    """The denoiser's parameters ``selection`` names, in its family's words (for a UNet, ``attn2`` is its
    cross-attention)."""
    from ..core.mask import select_parameters

    family = family_of_pipe(pipe)
    return select_parameters(family.denoiser_of(pipe), selection, family.selection_presets())


def given_pipeline(pipe, device, progress: bool):
    """A pipeline handed over in memory, checked as ``load_pipeline`` checks a folder: a text-to-image family's
    class, float32 weights (the job trains in float32; lower precision is ``mixed_precision``)."""
    from .pipeline import text_to_image_family

    text_to_image_family(type(pipe).__name__, "the given pipeline")
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    dtypes = {p.dtype for m in modules for p in m.parameters() if p.is_floating_point()}
    if dtypes != {torch.float32}:
        raise UserError(f"the given pipeline holds {', '.join(sorted(str(d) for d in dtypes))} weights: load it in "
                        "float32 (torch_dtype=torch.float32) and ask for mixed_precision='bf16' or 'fp16' instead")
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)


def native_resolution(pipe) -> int:
    """The side of the images the model draws (its family says how to read it from its configs)."""
    return family_of_pipe(pipe).native_resolution(pipe)


def check_resolution(pipe, resolution: int | None) -> int:
    """The training resolution: the model's by default; else one its VAE and denoiser can take."""
    if resolution is None:
        return native_resolution(pipe)
    factor = family_of_pipe(pipe).resolution_multiple(pipe)
    if resolution % factor:
        raise UserError(f"--resolution {resolution}: this model needs a multiple of {factor} (its VAE downsamples "
                        f"by {pipe.vae_scale_factor} and its denoiser by {factor // pipe.vae_scale_factor}); the "
                        f"model's own is {native_resolution(pipe)}")
    return resolution


def accelerator_for(mixed_precision: str, device: str | None = None):
    """A fresh accelerate ``Accelerator`` for a job (``salun erase`` and ``salun mask`` alike), refusing fp16 on
    the CPU. ``device``: ``--device`` (``cpu`` forces the CPU); None lets accelerate choose, as it does under
    ``accelerate launch``."""
    import torch

    from ..core.checkpoints import fresh_accelerator

    cpu = device is not None and torch.device(device).type == "cpu"
    accelerator = fresh_accelerator(mixed_precision, cpu=cpu, device=device)
    check_mixed_precision(accelerator, mixed_precision)
    return accelerator


def check_mixed_precision(accelerator, mixed_precision: str) -> None:
    if mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise UserError("--mixed-precision fp16 needs a GPU; on the CPU use bf16 or no")


def check_compute_dtype(device, dtype, flag: str) -> None:
    """Refuse, in one line, a weights dtype this device cannot compute in (a GPU without bf16, an old MPS): tried
    on a matrix product and a convolution, the UNet's two kinds of work."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise UserError(f"{flag}: {torch.cuda.get_device_name(device)} cannot compute in bf16; use fp32")
    try:
        x = torch.ones(1, 2, 4, 4, dtype=dtype, device=device)
        torch.nn.functional.conv2d(x, torch.ones(2, 2, 3, 3, dtype=dtype, device=device), padding=1)
        x.view(4, 8) @ torch.ones(8, 2, dtype=dtype, device=device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"{flag}: this {device.type} device cannot compute in {dtype} ({str(e).splitlines()[0]}); "
                        "use fp32") from e


def prediction_type(pipe) -> str:
    """What the family trains the denoiser to predict: its training schedule's ``prediction_type`` (a UNet's
    scheduler config says; SD3's flow matching is ``flow_matching``). A scheduler the family cannot train with is
    refused here, in one line."""
    return family_of_pipe(pipe).training_scheduler(pipe).config.get("prediction_type", "epsilon")


def check_prediction_type(pipe) -> None:
    kind = prediction_type(pipe)
    if kind not in ("epsilon", "v_prediction", "sample", "flow_matching"):
        raise UserError(f"this model's scheduler predicts {kind!r}: salun trains epsilon, v_prediction, sample "
                        "or flow-matching models")


def target_key(pipe) -> list:
    """The loss target, in the keys only when it is not the noise: epsilon models keep their keys, and a
    v-prediction run cached or checkpointed before the target followed prediction_type is not reused."""
    kind = prediction_type(pipe)
    return [] if kind == "epsilon" else [kind]


def load_for_job(model, accelerator, resolution: int | None, pipe=None, progress: bool = True) -> tuple[object, int]:
    """(the pipeline on the accelerator's device, the training resolution): ``model`` loaded, or ``pipe`` (handed
    over in memory) checked; its resolution and prediction type checked."""
    from .pipeline import load_pipeline

    pipe = (load_pipeline(model, device=accelerator.device) if pipe is None
            else given_pipeline(pipe, accelerator.device, progress))
    res = check_resolution(pipe, resolution)
    check_prediction_type(pipe)
    return pipe, res
