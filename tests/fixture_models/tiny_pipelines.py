"""Tiny random pipelines of each text-to-image family, built from config (no download), as diffusers'
own fast tests build theirs: for structure tests of the erasure job on SD 2.x (v-prediction) and SDXL.

They draw noise, not pictures; what they prove is that every step (mask, erase, export, LoRA,
``from_pretrained``, sampling) runs and keeps its promises on that family's architecture.
"""
from __future__ import annotations

from pathlib import Path

from erase.toy import TOY_SD


def _text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="gelu")


def tiny_pipeline(family: str, out: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Write a tiny random ``family`` ("sd" or "sdxl") pipeline folder (32 px, 4 latent channels) to ``out``."""
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
    else:
        raise ValueError(f"no tiny pipeline for family {family!r} (sd or sdxl)")
    pipe.save_pretrained(out, safe_serialization=True)
    return Path(out)
