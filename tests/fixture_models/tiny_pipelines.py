"""Tiny random pipelines of each text-to-image family, built from config (no download), as diffusers'
own fast tests build theirs: for structure tests of the erasure job on SD 2.x (v-prediction) and SDXL.

They draw noise, not pictures; what they prove is that every step (mask, erase, export, LoRA,
``from_pretrained``, sampling) runs and keeps its promises on that family's architecture.
"""
from __future__ import annotations

from pathlib import Path

from erase.toy import TOY_SD
from erase.toy.tokenizer import t5_tokenizer  # noqa: F401 - the fixtures' T5 tokenizer is the toy world's


def _text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="gelu")


def tiny_pipeline(family: str, out: str | Path, prediction_type: str = "epsilon", seed: int = 0,
                  sd35: bool = False) -> Path:
    """Write a tiny random ``family`` ("sd", "sdxl", "sd3" or "flux") pipeline folder (4 latent channels) to ``out``:
    32 px, but FLUX's pipeline draws 128 latents a side whatever its size (256 px here)."""
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    tok = CLIPTokenizer.from_pretrained(TOY_SD / "tokenizer")  # the toy world's CLIP vocabulary, shipped
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=32)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, prediction_type=prediction_type)
    unet_kw = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8, attention_head_dim=4)
    if family == "sd":
        unet = UNet2DConditionModel(cross_attention_dim=32, **unet_kw)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(_text_config()), tokenizer=tok, unet=unet,
                                       scheduler=sched, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    elif family == "sdxl":
        # SDXL's conditioning: both encoders' penultimate states concatenated (32 + 32), the second's
        # pooled projection (32) and six time ids (8 each) -> the added embedding's 80 inputs.
        unet = UNet2DConditionModel(cross_attention_dim=64, addition_embed_type="text_time",
                                    addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
                                    use_linear_projection=True, **unet_kw)
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(_text_config()),
                                         text_encoder_2=CLIPTextModelWithProjection(_text_config()),
                                         tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=sched)
    elif family == "sd3":
        pipe = _tiny_sd3(tok, seed, sd35)
    elif family == "flux":
        pipe = _tiny_flux(tok, seed)
    else:
        raise ValueError(f"no tiny pipeline for family {family!r} (sd, sdxl, sd3 or flux)")
    pipe.save_pretrained(out, safe_serialization=True)
    return Path(out)


def _t5_and_shifted_vae(shift: float, scale: float):
    """The tiny T5 (over the toy world's words) and the tiny VAE with a latent shift, as SD3 and FLUX have them."""
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel

    t5_tok = t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=64, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
                                 pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=32, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=shift, scaling_factor=scale)
    return t5_tok, t5, vae


def _tiny_sd3(tok, seed: int, sd35: bool = False):
    """SD3's structure at toy size: an MMDiT (2 joint blocks, 2 heads of 8), two CLIP encoders with projections
    (their penultimate states, 32 + 32 = 64 wide, beside T5's 64: the joint attention's input), T5, a VAE with
    SD3's shift and scale, and the flow-matching Euler sampler with SD3's shift of 3. ``sd35``: SD 3.5 medium's
    additions, RMS query-key normalisation and a second, image-only attention (modules named ``attn2``) in the
    first block."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    t5_tok, t5, vae = _t5_and_shifted_vae(shift=0.0609, scale=1.5035)  # SD3's VAE shift and scale
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
                                        caption_projection_dim=16, pooled_projection_dim=64, pos_embed_max_size=16,
                                        **(dict(qk_norm="rms_norm", dual_attention_layers=(0,)) if sd35 else {}))
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae, text_encoder=CLIPTextModelWithProjection(_text_config()), tokenizer=tok,
                                    text_encoder_2=CLIPTextModelWithProjection(_text_config()), tokenizer_2=tok,
                                    text_encoder_3=t5, tokenizer_3=t5_tok)


def _tiny_flux(tok, seed: int, guidance_embeds: bool = True):
    """FLUX.1's structure at toy size: one double-stream and one single-stream block (2 heads of 16, rotary axes
    4 + 6 + 6), CLIP's pooled output (32) and T5's states (64), a guidance embedding as FLUX.1 [dev] has, a VAE
    with FLUX's shift and scale, and the flow-matching Euler sampler with FLUX's resolution-dependent shift."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    t5_tok, t5, vae = _t5_and_shifted_vae(shift=0.1159, scale=0.3611)  # FLUX's VAE shift and scale
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=64,
                                         pooled_projection_dim=32, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 6, 6))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(scheduler=sched, vae=vae, text_encoder=CLIPTextModel(_text_config()), tokenizer=tok,
                        text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)
