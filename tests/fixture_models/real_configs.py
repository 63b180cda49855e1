"""The real Stable Diffusion v1.4 and SDXL base 1.0 component configs, for structure tests and benchmarks at full scale.

Written out here (not downloaded) so that pipelines with SD v1.4's exact architecture — UNet 860M,
VAE 84M, CLIP ViT-L/14 text encoder 123M — can be built with random weights offline.
"""
from __future__ import annotations

SD14_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)
SD14_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2, act_fn="silu",
    norm_num_groups=32, scaling_factor=0.18215, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SD14_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
    eos_token_id=49407, pad_token_id=1,
)
SD14_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
)


def sd14_unet(device: str | None = None):
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device(device or "cpu"):
        return UNet2DConditionModel(**SD14_UNET)


def sd14_pipeline(seed: int = 0, tokenizer_dir=None):
    """A StableDiffusionPipeline with SD v1.4's architecture and random weights."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from erase.toy.tokenizer import write_clip_tokenizer

    torch.manual_seed(seed)
    tok_dir = tokenizer_dir or write_clip_tokenizer(tempfile.mkdtemp(prefix="sd14_tok_"))
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**SD14_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**SD14_TEXT)),
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=sd14_unet(),
        scheduler=PNDMScheduler(**SD14_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


# SDXL base 1.0's component configs (Podell et al., 2023): UNet 2.6B with text_time added conditioning,
# the SD VAE with SDXL's latent scale, CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text encoders.
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = {**SD14_VAE, "sample_size": 1024, "scaling_factor": 0.13025}
SDXL_TEXT = {**SD14_TEXT, "pad_token_id": 49407}
SDXL_TEXT_2 = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=49407,
)
SDXL_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
)


def sdxl_pipeline(seed: int = 0, tokenizer_dir=None, dtype=None):
    """A StableDiffusionXLPipeline with SDXL base 1.0's architecture and random weights."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from erase.toy.tokenizer import write_clip_tokenizer

    torch.manual_seed(seed)
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir or write_clip_tokenizer(tempfile.mkdtemp(prefix="sdxl_tok_")))
    dtype = dtype or torch.float32
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**SDXL_VAE).to(dtype), text_encoder=CLIPTextModel(CLIPTextConfig(**SDXL_TEXT)).to(dtype),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2)).to(dtype), tokenizer=tok,
        tokenizer_2=tok, unet=UNet2DConditionModel(**SDXL_UNET).to(dtype),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER))


# Stable Diffusion 3 medium's MMDiT (stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json):
# 24 joint blocks of 24 heads x 64, T5-XXL's 4096-wide states beside the CLIPs', the two CLIPs' pooled 768 + 1280,
# 16 latent channels; about 2.0B weights.
SD3_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
SD3_TEXT_TOKENS = 77 + 256  # the CLIPs' 77 tokens beside T5's 256 (the pipeline's max_sequence_length)


def sd3_transformer(seed: int = 0, dtype=None):
    """SD3 medium's transformer with random weights (its text encoders, T5-XXL's 4.7B weights among them, are
    left out: the denoiser is what the erasure trains)."""
    import torch
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(**SD3_TRANSFORMER).to(dtype or torch.float32)


# FLUX.1 [dev]'s transformer (black-forest-labs/FLUX.1-dev, transformer/config.json): 19 double-stream and 38
# single-stream blocks of 24 heads x 128, T5-XXL's 4096-wide states, CLIP's pooled 768, 16 latent channels packed
# 2x2 (64 inputs), rotary axes 16 + 56 + 56 and the guidance embedding; FLUX.1 [schnell]'s is the same without it.
FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
