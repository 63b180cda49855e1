"""The FLUX.1 family: a rectified-flow transformer (Black Forest Labs, 2024) whose double-stream blocks keep
the image and text tokens apart (as SD3's MMDiT does) and whose single-stream blocks run them as one sequence,
conditioned on T5's states, CLIP's pooled embedding and, for FLUX.1 [dev], a guidance embedding.

Latents: ``FluxPipeline`` packs the VAE's ``(C, h, w)`` latents into a sequence of 2x2 patches ``(h/2 * w/2,
4C)`` with their positions as ``img_ids``. The job works on unpacked latents like every family's; ``denoise``
packs them on the way in and unpacks the velocity on the way out, and ``pipeline_latents`` packs the noise
``salun generate`` draws, in the order ``FluxPipeline.prepare_latents`` packs its own.

Guidance: FLUX.1 [dev] is guidance-distilled. It samples with no classifier-free guidance: the pipeline's
``guidance_scale`` is an input of the transformer (an embedding, as the timestep's), trained to imitate
guided outputs. So every prediction the erasure makes or compares, the forget prompt's and the misaligned
prompt's target alike, is made at the same embedded guidance, ``TRAINING_GUIDANCE`` (3.5, ``FluxPipeline``'s
default and what diffusers' FLUX training scripts pass): SalUn's misaligned term pulls the model's guided
output for the forget prompt toward its guided output for the misaligned one, which is what a user sampling at
that guidance sees. The saliency mask's loss is the plain flow-matching loss at that embedded guidance, with no
``(1 + w) e(c) - w e(null)`` mix: ``--guidance-w`` is refused. FLUX.1 [schnell] has no guidance embedding
and no classifier-free guidance either; the same holds without the embedding.

There is no cross-attention: the presets name what plays its part, the double-stream blocks' text-stream
projections (``add_q_proj``, ``add_k_proj``, ``add_v_proj``, ``to_add_out``), through which the image tokens
read the prompt. The single-stream blocks share every weight between the two kinds of token and hold no
text-only weight, so ``attn2`` leaves them out; ``resnets`` (the MLPs) are the double-stream blocks' image
feed-forward layers (``ff``) and the single-stream blocks' ``proj_mlp`` (their MLP's up-projection: its
down-projection is fused with the attention's output in ``proj_out``, which stays out).
"""
from __future__ import annotations

from ..flow_family import FlowTransformerDenoising

TRAINING_GUIDANCE = 3.5  # the embedded guidance every prediction is made at (FluxPipeline's default)
_TEXT = r"attn\.(add_q_proj|add_k_proj|add_v_proj|to_add_out)"
PRESETS: dict[str, str] = {
    "all": r".*",
    "attn2": rf"(^|\.){_TEXT}\.",  # the double-stream blocks' text projections: where the prompt enters
    "attn": r"(^|\.)attn\.",  # every attention layer, both kinds of block
    "resnets": r"(^|\.)(ff|proj_mlp)\.",  # the image tokens' MLPs
    "attn2+resnets": rf"(^|\.)({_TEXT}|ff|proj_mlp)\.",
    "not-attn2": rf"^(?!(.*\.)?{_TEXT}\.)",
}


def pack(z):
    """``(B, C, h, w)`` latents -> FLUX's ``(B, h/2 * w/2, 4C)`` sequence of 2x2 patches (``FluxPipeline._pack_latents``'s
    order)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x, h: int, w: int):
    """``pack``'s inverse: ``(B, h/2 * w/2, 4C)`` -> ``(B, C, h, w)``."""
    b, _, d = x.shape
    return x.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def positions(h: int, w: int, device, dtype):
    """The packed latents' ``img_ids``: (0, row, column) of each 2x2 patch."""
    import torch

    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxFamily(FlowTransformerDenoising):
    name = "flux"
    title = "FLUX.1"
    short = "FLUX"
    pipeline_classes = ("FluxPipeline",)
    presets = PRESETS
    method_refusal = ("FLUX (it reads a UNet's cross-attention, its DDPM noise schedule or classifier-free guidance; "
                      "FLUX has joint attention, flow matching and distilled guidance): use salun or rl")
    guidance_distilled = True  # no classifier-free guidance at sampling: the mask loss takes no --guidance-w
    sampling_guidance = TRAINING_GUIDANCE  # the forget and retain images are drawn at it too (family.recipe_for)

    def pipeline_class(self) -> type:
        from diffusers import FluxPipeline

        return FluxPipeline

    def encode_prompts(self, pipe, prompts, resolution):
        import torch

        with torch.no_grad():
            emb, pooled, _ = pipe.encode_prompt(list(prompts), None, device=pipe.text_encoder.device,
                                                num_images_per_prompt=1)
        cond = {"encoder_hidden_states": emb, "pooled_projections": pooled}
        if pipe.transformer.config.guidance_embeds:
            cond["guidance"] = torch.full((len(prompts),), TRAINING_GUIDANCE, dtype=torch.float32)
        return cond

    def null_condition(self, pipe, empty):
        return empty  # FluxPipeline's true-CFG negative is the empty prompt encoded as any other

    def denoise(self, transformer, zt, t, cond):
        h, w = zt.shape[-2:]
        emb = cond["encoder_hidden_states"]
        out = transformer(hidden_states=pack(zt), timestep=t.float() / 1000, guidance=cond.get("guidance"),
                          pooled_projections=cond["pooled_projections"], encoder_hidden_states=emb,
                          txt_ids=emb.new_zeros(emb.shape[1], 3), img_ids=positions(h, w, zt.device, emb.dtype),
                          return_dict=False)[0]
        return unpack(out, h, w)

    def latent_channels(self, pipe) -> int:
        return pipe.transformer.config.in_channels // 4

    def pipeline_latents(self, pipe, z):
        """The noise ``salun generate`` draws, ``(B, C, h, w)``, as ``FluxPipeline`` takes ``latents``: packed."""
        return pack(z)

    def native_resolution(self, pipe) -> int:
        return pipe.default_sample_size * pipe.vae_scale_factor  # FluxPipeline's default: 1024 px

    def resolution_multiple(self, pipe) -> int:
        return pipe.vae_scale_factor * 2  # the VAE's downsampling, then the 2x2 packing

    def usage(self, folder: str) -> str:
        return (f'from diffusers import FluxPipeline\n'
                f'pipe = FluxPipeline.from_pretrained("{folder}")')


FLUX = FluxFamily()  # registered by erase.diffusion.family
