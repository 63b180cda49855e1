"""The toy world drawn by a Stable Diffusion 3 pipeline (``salun toy build --family sd3``).

An MMDiT (``SD3Transformer2DModel``) learns the toy world's drawn shapes by flow matching: at
``z_s = (1 - s) z0 + s noise`` it predicts the velocity ``noise - z0``, with ``s`` drawn from the logit-normal
density SD3 was trained with (Esser et al., 2024, "Scaling Rectified Flow Transformers for High-Resolution
Image Synthesis", section 3.1). The conditioning is computed as ``StableDiffusion3Pipeline.encode_prompt``
computes it at sampling time: both CLIPs' penultimate states side by side, then T5's states, along the sequence;
both CLIPs' projections as the pooled vector; the empty prompt for a dropped caption.

SD3 freezes encoders that were pretrained on the web; the toy's encoders start from random weights, so, as in
the toy SD and SDXL builds, the two CLIPs learn with the transformer (frozen random CLIPs left "star" and
unseen phrasings unreadable: 77% shape on name prompts, 31% on held-out phrasings after 3000 steps). The T5
stays frozen at its seeded weights and its states are computed once per caption: training it would run its
256 tokens forward and backward every step, for a stream the CLIPs already carry. The VAE is the toy SD's
(``--vae-from``), given the shift and scale SD3's pipeline applies to latents.

The transformer uses the RMS query-key normalisation of SD 3.5 (``qk_norm="rms_norm"``), which keeps a
small transformer's attention logits in range at a learning rate a UNet takes.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .config import BuildConfig
from .models import text_encoder_config
from .training import encode_latents, fit, seeded

SD3_SHIFT = 1.0  # the sampler's timestep shift: SD3 uses 3.0 at 1024 px; a 32 px image needs none
T5_WIDTH = 128  # T5's width = the joint attention's input; the two CLIPs' 64 + 64 are padded to it


def make_sd3_pipeline(vae, tokenizer, seed: int):
    """The toy SD3 pipeline with random text encoders and transformer (``vae`` given, already shifted)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from .tokenizer import t5_tokenizer

    torch.manual_seed(seed)
    t5_tok = t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=T5_WIDTH, d_ff=2 * T5_WIDTH, d_kv=32,
                                 num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1))
    latent = vae.config.latent_channels
    size = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    transformer = SD3Transformer2DModel(sample_size=size, patch_size=1, in_channels=latent, out_channels=latent,
                                        num_layers=4, attention_head_dim=32, num_attention_heads=4,
                                        joint_attention_dim=T5_WIDTH, caption_projection_dim=128,
                                        pooled_projection_dim=2 * text_encoder_config().projection_dim,
                                        pos_embed_max_size=size, qk_norm="rms_norm")
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=SD3_SHIFT), vae=vae,
        text_encoder=CLIPTextModelWithProjection(text_encoder_config()), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(text_encoder_config()), tokenizer_2=tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tok)


@torch.no_grad()
def shift_and_scale(vae, mean: torch.Tensor) -> None:
    """Give the VAE SD3's latent normalisation, ``(z - shift) * scale``: the latents' mean and 1 / std."""
    shift = float(mean.mean())
    vae.register_to_config(shift_factor=shift, scaling_factor=float(1.0 / (mean - shift).std()))


T5_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length: what sampling feeds the transformer


@torch.no_grad()
def t5_states(pipe, captions: list[str], batch: int = 64) -> torch.Tensor:
    """T5's last hidden states for each caption, padded to ``T5_TOKENS`` as the pipeline pads them."""
    out = []
    for i in tqdm(range(0, len(captions), batch), desc="t5 captions", dynamic_ncols=True):
        ids = pipe.tokenizer_3(captions[i:i + batch], padding="max_length", max_length=T5_TOKENS,
                               truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
        out.append(pipe.text_encoder_3(ids)[0])
    return torch.cat(out)


def clip_ids(pipe, captions: list[str]) -> torch.Tensor:
    return pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer_max_length,
                          truncation=True, return_tensors="pt").input_ids


def conditioning(encoders, ids: torch.Tensor, t5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode_prompt``'s (states, pooled) from CLIP token ids (both CLIPs share the toy tokenizer) and T5's
    states, with gradients through the CLIPs."""
    outs = [enc(ids, output_hidden_states=True) for enc in encoders]
    clip = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), torch.cat([o[0] for o in outs], dim=-1)


def train_sd3(cfg: BuildConfig, data, vae, tokenizer, checkpoint=None):
    """Train the toy SD3 transformer and its two CLIPs; returns the pipeline with their EMA copies (``checkpoint``:
    ``training.fit``'s folder, from which an interrupted training resumes)."""
    gen = seeded(cfg.seed + 3)
    mean, std = encode_latents(vae, data.as_float())
    shift_and_scale(vae, mean)
    pipe = make_sd3_pipeline(vae, tokenizer, cfg.seed + 4)
    pipe.text_encoder_3.eval().requires_grad_(False)
    distinct = [""] + sorted(set(data.captions))
    row = {c: i for i, c in enumerate(distinct)}
    rows = torch.tensor([row[c] for c in data.captions])
    t5, ids = t5_states(pipe, distinct), clip_ids(pipe, distinct)
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    transformer, encoders = pipe.transformer, [pipe.text_encoder, pipe.text_encoder_2]

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen) - shift) * scale
        noise = torch.randn(z0.shape, generator=gen)
        s = torch.sigmoid(torch.randn(len(idx), generator=gen))  # logit-normal(0, 1), SD3's density
        zs = (1 - s[:, None, None, None]) * z0 + s[:, None, None, None] * noise
        r = rows[idx].clone()
        r[torch.rand(len(idx), generator=gen) < cfg.cond_dropout] = 0  # the empty prompt: guidance's negative
        emb, pooled = conditioning(encoders, ids[r], t5[r])
        pred = transformer(hidden_states=zs, timestep=s * 1000, encoder_hidden_states=emb,
                           pooled_projections=pooled, return_dict=False)[0]
        return (pred - (noise - z0)).pow(2).mean()

    transformer, clip1, clip2 = fit([transformer, *encoders], len(mean), cfg, gen, loss_of, "transformer", checkpoint)
    pipe.register_modules(transformer=transformer, text_encoder=clip1, text_encoder_2=clip2)
    return pipe
