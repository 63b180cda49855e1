"""Where the DDPM path lived before ``erase/diffusion/ddpm/``: kept so that ``import erase.ddpm``, the line in
the model cards of DDPM folders exported before the move, still registers ``ClassConditionalDDPMPipeline``
with diffusers. New code imports ``erase.diffusion.ddpm``."""
from ..diffusion.ddpm.pipeline import ClassConditionalDDPMPipeline, load_ddpm

__all__ = ["ClassConditionalDDPMPipeline", "load_ddpm"]
