"""The class-conditional DDPM family: pixel space, class labels as the condition (the last class is null)."""
from __future__ import annotations

from ..unet_family import UNetDenoising


class ClassConditionalDDPMFamily(UNetDenoising):
    name = "ddpm"
    title = "class-conditional DDPM"
    pipeline_classes = ("ClassConditionalDDPMPipeline",)
    # An unconditional DDPMPipeline is routed here too, so that its refusal says what the DDPM path needs.
    routed_classes = ("DDPMPipeline",)

    def pipeline_class(self) -> type:
        from .pipeline import ClassConditionalDDPMPipeline

        return ClassConditionalDDPMPipeline

    def load_kwargs(self) -> dict:
        return {}

    def encode_prompts(self, pipe, prompts, resolution):
        import torch

        return {"class_labels": torch.tensor([pipe.class_id(p) for p in prompts])}

    def null_condition(self, pipe, empty):
        import torch

        return {"class_labels": torch.tensor([pipe.null_class])}

    def denoise(self, unet, zt, t, cond):
        return unet(zt, t, class_labels=cond["class_labels"]).sample

    def usage(self, folder: str) -> str:
        return ("from erase.diffusion.ddpm import ClassConditionalDDPMPipeline  # registers it with diffusers\n"
                f'from diffusers import DiffusionPipeline\npipe = DiffusionPipeline.from_pretrained("{folder}")')


DDPM = ClassConditionalDDPMFamily()  # registered by erase.diffusion.family
