"""The Stable Diffusion 1.x / 2.x family: one CLIP text encoder, ``encoder_hidden_states`` only.

SD 2.x differs from 1.x in what the UNet predicts (``v_prediction`` for the 768 px models); that is read
from the scheduler's config by ``erase.diffusion.losses``, so one family serves both.
"""
from __future__ import annotations

from ..unet_family import UNetDenoising


class StableDiffusionFamily(UNetDenoising):
    name = "sd"
    title = "Stable Diffusion 1.x/2.x"
    pipeline_classes = ("StableDiffusionPipeline",)

    def pipeline_class(self) -> type:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def load_kwargs(self) -> dict:
        return dict(safety_checker=None, requires_safety_checker=False)

    def encode_prompts(self, pipe, prompts, resolution):
        import torch

        tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        with torch.no_grad():
            emb = pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]
        return {"encoder_hidden_states": emb}

    def null_condition(self, pipe, empty):
        return empty  # SD samples its unconditional branch with the encoded empty prompt

    def denoise(self, unet, zt, t, cond):
        return unet(zt, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    def usage(self, folder: str) -> str:
        return f'from diffusers import StableDiffusionPipeline\npipe = StableDiffusionPipeline.from_pretrained("{folder}")'


SD = StableDiffusionFamily()  # registered by erase.diffusion.family
