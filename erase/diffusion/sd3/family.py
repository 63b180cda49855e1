"""The Stable Diffusion 3 family: an MMDiT transformer (joint attention over the image and text tokens), two
CLIP text encoders and T5, trained by flow matching (Esser et al., 2024).

Prompts are encoded with the pipeline's own ``encode_prompt`` (both CLIPs' penultimate states beside T5's, and
the two CLIPs' pooled embeddings), so the conditions the erasure trains under are the ones the pipeline samples
with; SD3 samples its classifier-free guidance under the encoded empty prompt, and so does the erasure.

There is no cross-attention in an MMDiT: every block's one attention mixes the image and the text tokens. The
UNet's ``attn2`` (where the prompt enters) is named here for what plays its part: the text stream's projections
in that joint attention (``add_q_proj``, ``add_k_proj``, ``add_v_proj``, ``to_add_out``), through which the
image tokens read the prompt; the UNet's ResNets are the image stream's feed-forward layers (``ff``).
"""
from __future__ import annotations

from ..flow_family import FlowTransformerDenoising

_TEXT = r"attn\.(add_q_proj|add_k_proj|add_v_proj|to_add_out)"
PRESETS: dict[str, str] = {
    "all": r".*",
    "attn2": rf"(^|\.){_TEXT}\.",  # the text stream's projections in the joint attention: where the prompt enters
    "attn": r"(^|\.)attn2?\.",  # every attention layer, both streams
    "resnets": r"(^|\.)ff\.",  # the image stream's feed-forward layers
    "attn2+resnets": rf"(^|\.)({_TEXT}|ff)\.",
    "not-attn2": rf"^(?!(.*\.)?{_TEXT}\.)",
}


class StableDiffusion3Family(FlowTransformerDenoising):
    name = "sd3"
    title = "Stable Diffusion 3"
    short = "SD3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    presets = PRESETS
    method_refusal = ("SD3 yet (it reads a UNet's cross-attention or its DDPM noise schedule; SD3 has joint attention "
                      "and flow matching): use salun or rl")

    def pipeline_class(self) -> type:
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline

    def encode_prompts(self, pipe, prompts, resolution):
        import torch

        with torch.no_grad():
            emb, _, pooled, _ = pipe.encode_prompt(list(prompts), None, None, device=pipe.text_encoder.device,
                                                   num_images_per_prompt=1, do_classifier_free_guidance=False)
        return {"encoder_hidden_states": emb, "pooled_projections": pooled}

    def null_condition(self, pipe, empty):
        return empty  # SD3's pipeline encodes its empty negative prompt as any other

    def denoise(self, transformer, zt, t, cond):
        return transformer(hidden_states=zt, timestep=t, encoder_hidden_states=cond["encoder_hidden_states"],
                           pooled_projections=cond["pooled_projections"], return_dict=False)[0]

    def native_resolution(self, pipe) -> int:
        return pipe.transformer.config.sample_size * pipe.vae_scale_factor

    def resolution_multiple(self, pipe) -> int:
        return pipe.vae_scale_factor * pipe.transformer.config.patch_size

    def usage(self, folder: str) -> str:
        return (f'from diffusers import StableDiffusion3Pipeline\n'
                f'pipe = StableDiffusion3Pipeline.from_pretrained("{folder}")')


SD3 = StableDiffusion3Family()  # registered by erase.diffusion.family
