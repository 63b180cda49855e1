"""The toy world drawn by a Stable Diffusion 3 pipeline (``salun toy build --family sd3``).

An MMDiT (``SD3Transformer2DModel``) learns the toy world's drawn shapes by flow matching: at
``z_s = (1 - s) z0 + s noise`` it predicts the velocity ``noise - z0``, with ``s`` drawn from the logit-normal
density SD3 was trained with (Esser et al., 2024, "Scaling Rectified Flow Transformers for High-Resolution
Image Synthesis", section 3.1). As in that paper, the text encoders are frozen and every caption's embedding is
computed once, by the pipeline's own ``encode_prompt``, so training sees exactly what sampling feeds the
transformer. Here the encoders (two CLIPs with projections and a small T5) keep their seeded random weights:
the transformer's text stream learns to read them. The VAE is the toy SD's (``--vae-from``), given the shift
and scale SD3's pipeline applies to latents.

The transformer uses the RMS query-key normalisation of SD 3.5 (``qk_norm="rms_norm"``), which keeps a
small transformer's attention logits in range at a learning rate a UNet takes.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..core.sampling import EpochSampler
from .config import BuildConfig
from .models import text_encoder_config
from .training import EMA, cosine_lr, encode_latents, seeded

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


@torch.no_grad()
def caption_embeddings(pipe, captions: list[str], batch: int = 64):
    """Every distinct caption's (and the empty prompt's) embedding and pooled embedding, and each caption's
    row: what ``StableDiffusion3Pipeline`` feeds its transformer for that prompt."""
    distinct = [""] + sorted(set(captions))
    embs, pooled = [], []
    for i in tqdm(range(0, len(distinct), batch), desc="captions", dynamic_ncols=True):
        e, _, p, _ = pipe.encode_prompt(distinct[i:i + batch], None, None, device=torch.device("cpu"),
                                        num_images_per_prompt=1, do_classifier_free_guidance=False)
        embs.append(e)
        pooled.append(p)
    row = {c: i for i, c in enumerate(distinct)}
    return torch.cat(embs), torch.cat(pooled), torch.tensor([row[c] for c in captions])


def train_sd3(cfg: BuildConfig, data, vae, tokenizer):
    """Train the toy SD3 transformer; returns the pipeline with its EMA transformer."""
    gen = seeded(cfg.seed + 3)
    mean, std = encode_latents(vae, data.as_float())
    shift_and_scale(vae, mean)
    pipe = make_sd3_pipeline(vae, tokenizer, cfg.seed + 4)
    for enc in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        enc.eval().requires_grad_(False)
    emb, pooled, rows = caption_embeddings(pipe, data.captions)
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    transformer = pipe.transformer
    params = list(transformer.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    ema = EMA(transformer, cfg.ema_decay)
    batches = EpochSampler(len(mean), cfg.batch_size, generator=gen)
    transformer.train()
    bar = tqdm(range(cfg.unet_steps), desc="transformer", dynamic_ncols=True)
    running = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.unet_lr * cosine_lr(step, cfg.unet_steps, 200)
        idx = batches.next()
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen) - shift) * scale
        noise = torch.randn(z0.shape, generator=gen)
        s = torch.sigmoid(torch.randn(len(idx), generator=gen))  # logit-normal(0, 1), SD3's density
        zs = (1 - s[:, None, None, None]) * z0 + s[:, None, None, None] * noise
        r = rows[idx].clone()
        r[torch.rand(len(idx), generator=gen) < cfg.cond_dropout] = 0  # the empty prompt: guidance's negative
        pred = transformer(hidden_states=zs, timestep=s * 1000, encoder_hidden_states=emb[r],
                           pooled_projections=pooled[r], return_dict=False)[0]
        loss = (pred - (noise - z0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(transformer, step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
    pipe.register_modules(transformer=ema.shadow)
    return pipe
