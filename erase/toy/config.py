"""The toy build's settings (``salun toy build``), in a torch-free module so the CLI's parser can show them."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import shapes as S


@dataclass
class BuildConfig:
    seed: int = 0
    shapes: list[str] = field(default_factory=lambda: list(S.SHAPES))
    colours: list[str] = field(default_factory=lambda: list(S.COLOURS))
    exclude: list[str] = field(default_factory=list)  # shapes left out of the SD training data
    # The frame attribute (erase/toy/attribute.py) in the captions and pictures; exclude_attribute keeps
    # the captions and leaves the frames out of the pictures: the attribute's Retrain world.
    attribute: bool = True
    exclude_attribute: bool = False
    # The pipeline family the build trains: "sd" (StableDiffusionPipeline) or "sdxl" (an SDXL UNet with
    # text_time conditioning and two small text encoders, StableDiffusionXLPipeline) or "sd3" (an MMDiT trained
    # by flow matching with its two CLIPs under a frozen T5, StableDiffusion3Pipeline: erase/toy/build_sd3.py).
    family: str = "sd"
    n_train: int = 12000
    judge_steps: int = 600
    vae_steps: int = 1500
    unet_steps: int = 6000
    batch_size: int = 64
    unet_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    cond_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999

    def sd_shapes(self) -> list[str]:
        return [s for s in self.shapes if s not in self.exclude]
