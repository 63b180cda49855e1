"""Settings the command line shows in ``--help``, in a module that imports no torch, diffusers or transformers.

``salun --help`` and every one-line refusal build the whole parser; importing torch for a few default
values made that take seconds. The modules that use these settings import them from here, so each
value has one home.
"""
from __future__ import annotations

from dataclasses import dataclass

# SalUn's mask: the share of the selected weights it keeps (the paper's 50%), and the DDPM mask loss's guidance
# (the text-to-image recipes carry their own ``guidance_w``).
MASK_KEEP = 0.5
DDPM_MASK_GUIDANCE = 2.0

# Which timesteps a flow-matching erasure draws (``--timestep-density``; ``erase.diffusion.flow``).
TIMESTEP_DENSITIES = ("uniform", "logit-normal")

# Sampling the toy Stable Diffusion (``salun generate``, the toy quality and erasure rates).
TOY_SAMPLING_STEPS = 25
TOY_SAMPLING_GUIDANCE = 5.0

# Class-conditional DDPM UNet2DModel settings. "toy": 16x16 shapes, 1.2M weights, trains in minutes on 2 CPU
# cores. "cifar10": the DDPM paper's 35.7M-weight CIFAR-10 UNet (attention at 16x16), for a GPU.
DDPM_UNETS = {
    "toy": dict(sample_size=16, layers_per_block=1, block_out_channels=(32, 64, 64), norm_num_groups=16,
                down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32),
    "cifar10": dict(sample_size=32, layers_per_block=2, block_out_channels=(128, 256, 256, 256), dropout=0.1,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=64),
}


@dataclass
class DDPMTrainConfig:
    """How ``salun ddpm train`` trains a class-conditional DDPM (``erase.diffusion.ddpm.train.build_ddpm``)."""

    dataset: str = "toy-shapes"
    unet: str = "toy"
    n_train: int = 12000  # toy-shapes only: images drawn
    steps: int = 6000  # pipelines/toy-ddpm: 6000 steps, 20 min on 1 thread of a 2-core CPU
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    cond_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    seed: int = 0

    @classmethod
    def cifar10(cls, **kw) -> "DDPMTrainConfig":
        """The CIFAR-10 recipe (GPU): the DDPM paper's UNet, batch 128, lr 2e-4."""
        return cls(**{**dict(dataset="cifar10", unet="cifar10", steps=200_000, batch_size=128, lr=2e-4,
                             warmup=5000, ema_decay=0.9999), **kw})
