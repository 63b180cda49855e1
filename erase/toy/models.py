"""Architectures of the toy world: a tiny but genuine Stable Diffusion, and the judge.

The UNet keeps SD 1.x's block types (CrossAttnDownBlock2D / DownBlock2D / UpBlock2D /
CrossAttnUpBlock2D) so that parameter names such as ``...attentions.0.transformer_blocks.0.attn2.to_k``
and ``...resnets.0.conv1`` match the real model's: masks, presets and exports written for the toy
world behave the same on SD v1.4.
"""
from __future__ import annotations

import torch
from torch import nn

# SD 1.x's noise schedule: the toy world trains and samples with the real one.
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def text_encoder_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=64,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu",
    )


def make_text_encoder():
    from transformers import CLIPTextModel

    return CLIPTextModel(text_encoder_config())


def make_sdxl_text_encoders():
    """SDXL's pair: a CLIP text encoder and a CLIP text encoder with a projection (its pooled output)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    return CLIPTextModel(text_encoder_config()), CLIPTextModelWithProjection(text_encoder_config())


def make_sdxl_unet():
    """The toy UNet with SDXL's conditioning: cross-attention on both encoders' penultimate states
    (64 + 64), and the added ``text_time`` embedding of the pooled text (64) and six time ids (8 each)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128), layers_per_block=1, attention_head_dim=8,
        cross_attention_dim=128, norm_num_groups=32, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 64,
    )


def make_vae():
    from diffusers import AutoencoderKL

    # Three levels -> two downsamplings: 32x32 RGB -> 8x8x4 latents, like SD's 8x at 512 px.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
    )


def make_unet(cross_attention_dim: int = 64):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128), layers_per_block=1, attention_head_dim=8,
        cross_attention_dim=cross_attention_dim, norm_num_groups=32,
    )


class Judge(nn.Module):
    """A small CNN that tells which shape and which colour a 32x32 image shows, and (a third head, when
    ``n_attribute`` > 0) whether the attribute's frame is drawn and of which kind: the toy nudity detector.

    Input: images in [-1, 1], (N, 3, 32, 32). Output: (shape logits, colour logits); ``attribute`` gives
    the frame logits (class 0: no frame). ``features`` gives the penultimate activations, used as a
    stand-in for Inception in toy FID.
    """

    def __init__(self, n_shapes: int, n_colours: int, width: int = 32, n_attribute: int = 0,
                 reject: bool = False):
        super().__init__()
        w = width

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.body = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.shape_head = nn.Linear(4 * w, n_shapes)
        self.colour_head = nn.Linear(4 * w, n_colours)
        self.attribute_head = nn.Linear(4 * w, n_attribute) if n_attribute else None
        self.n_shapes, self.n_colours, self.width, self.n_attribute = n_shapes, n_colours, width, n_attribute
        self.reject_head: nn.Module | None = None  # "none of these" (erase/toy/reject.py), when trained
        if reject:
            self.set_reject_head(make_head(4 * w), torch.zeros(4 * w), torch.ones(4 * w), 0.5)

    def set_reject_head(self, head: nn.Module, mu: torch.Tensor, sd: torch.Tensor, threshold: float) -> None:
        self.reject_head = head
        self.register_buffer("reject_mu", mu.clone())
        self.register_buffer("reject_sd", sd.clone())
        self.register_buffer("reject_threshold", torch.tensor(float(threshold)))

    @torch.no_grad()
    def reject_score(self, x: torch.Tensor):
        """The probability (numpy, per image in [-1, 1]) that an image is none of the shapes: a failure."""
        if self.reject_head is None:
            raise ValueError("this judge has no reject head")
        out = []
        for i in range(0, len(x), 256):
            f = self.body(x[i:i + 256].float())
            out.append(torch.sigmoid(self.reject_head((f - self.reject_mu) / self.reject_sd)[:, 0]))
        return torch.cat(out).numpy()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor):
        f = self.body(x)
        return self.shape_head(f), self.colour_head(f)

    def attribute(self, x: torch.Tensor) -> torch.Tensor:
        if self.attribute_head is None:
            raise ValueError("this judge has no attribute head")
        return self.attribute_head(self.body(x))


HIDDEN = 64  # the reject head's hidden width


def make_head(n_features: int) -> nn.Module:
    """The judge's reject head ("none of these"): a small MLP over the judge's features."""
    return nn.Sequential(nn.Linear(n_features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))
