"""The SDXL family: two CLIP text encoders (penultimate states concatenated), the second one's pooled
embedding and the size/crop ``time_ids`` as the UNet's ``added_cond_kwargs`` (Podell et al., 2023).

Prompts are encoded with the pipeline's own ``encode_prompt``, so the conditions the erasure trains
under are the ones the pipeline samples with. Like SDXL's sampling (``force_zeros_for_empty_prompt``),
the null condition of classifier-free guidance is all zeros (a prompt "" is encoded as any other).
"""
from __future__ import annotations

from ..unet_family import UNetDenoising


class StableDiffusionXLFamily(UNetDenoising):
    name = "sdxl"
    title = "Stable Diffusion XL"
    pipeline_classes = ("StableDiffusionXLPipeline",)

    def pipeline_class(self) -> type:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline

    def load_kwargs(self) -> dict:
        # an invisible watermark would be baked into the drawn forget/retain and audit images
        return {"add_watermarker": False}

    def encode_prompts(self, pipe, prompts, resolution):
        import torch

        with torch.no_grad():
            emb, _, pooled, _ = pipe.encode_prompt(list(prompts), device=pipe.text_encoder_2.device,
                                                   num_images_per_prompt=1, do_classifier_free_guidance=False)
        # original size, crop top-left, target size: an uncropped image at the training resolution
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * len(prompts),
                                dtype=emb.dtype)
        return {"encoder_hidden_states": emb, "text_embeds": pooled, "time_ids": time_ids}

    def null_condition(self, pipe, empty):
        if pipe.config.get("force_zeros_for_empty_prompt", True):
            return {k: v if k == "time_ids" else v.new_zeros(v.shape) for k, v in empty.items()}
        return empty

    def denoise(self, unet, zt, t, cond):
        return unet(zt, t, encoder_hidden_states=cond["encoder_hidden_states"],
                    added_cond_kwargs={"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}).sample

    def usage(self, folder: str) -> str:
        return (f'from diffusers import StableDiffusionXLPipeline\n'
                f'pipe = StableDiffusionXLPipeline.from_pretrained("{folder}")')


SDXL = StableDiffusionXLFamily()  # registered by erase.diffusion.family
