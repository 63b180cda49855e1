"""What the UNet families (SD 1.x/2.x, SDXL, the class-conditional DDPM) share: the denoiser is the pipeline's
``unet``, trained on the DDPM noise schedule of the pipeline's scheduler config (its ``prediction_type`` gives the
target), and ``--selection``'s names read diffusers' UNet parameter names (``attn2`` is cross-attention).

A family whose denoiser is not a UNet (a transformer, flow matching) overrides these members instead of the job
assuming them. This module imports nothing of the family registry, so the families may subclass it freely.
"""
from __future__ import annotations

from typing import Any


class UNetDenoising:
    """The denoiser, its training schedule, its parameter presets and its LoRA layout, for a diffusers UNet."""

    denoiser_component = "unet"  # the pipeline component the job trains and exports (its folder and attribute)

    def denoiser_of(self, pipe) -> Any:
        """The module the job trains (``pipe.unet``)."""
        return getattr(pipe, self.denoiser_component)

    def training_scheduler(self, pipe) -> Any:
        """The noise schedule the job trains with: ``add_noise``, ``alphas_cumprod``, ``get_velocity`` and the
        ``prediction_type`` of the pipeline's own scheduler config (a DDIM or Euler sampler's config gives the same
        DDPM schedule)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(pipe.scheduler.config)

    def native_resolution(self, pipe) -> int:
        """The side of the images the pipeline draws: the UNet's sample size in pixels."""
        return self.denoiser_of(pipe).config.sample_size * pipe.vae_scale_factor

    def resolution_multiple(self, pipe) -> int:
        """What a training resolution must be a multiple of: the VAE's and the UNet's downsampling together."""
        return pipe.vae_scale_factor * 2 ** (len(self.denoiser_of(pipe).config.block_out_channels) - 1)

    def selection_presets(self) -> dict[str, str]:
        """``--selection``'s names, as regexes over this denoiser's parameter names."""
        from ..core.mask import PRESETS

        return PRESETS

    def lora_layers(self, state: dict, rank: int, targets: list[str]) -> dict:
        """The keyword arguments of the pipeline class's ``save_lora_weights`` for this denoiser's LoRA ``state``."""
        from ..core.export import unet_lora_layers

        return unet_lora_layers(state, rank, targets)
