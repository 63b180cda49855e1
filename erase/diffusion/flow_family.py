"""What the flow-matching transformer families (SD3, FLUX) share, as ``unet_family.py`` holds what the UNet ones do:
the denoiser is the pipeline's ``transformer``, trained by flow matching (``flow.FlowMatchTraining``) under the
pipeline's ``FlowMatchEulerDiscreteScheduler``, its LoRA written as ``transformer_lora_layers``, and only the methods
whose loss needs nothing but the training target (SalUn's and RL's) served. This module imports nothing of the
family registry, so the families may subclass it freely.
"""
from __future__ import annotations

from typing import Any

from ..core.errors import UserError


class FlowTransformerDenoising:
    """A family subclass sets ``short`` (its name in messages), ``presets`` and ``method_refusal`` (what follows
    "--method NAME is not adapted to " when a method reads what the family lacks)."""

    denoiser_component = "transformer"
    timestep_densities = ("uniform", "logit-normal")  # what --timestep-density may say (flow.DENSITIES)
    short: str
    presets: dict[str, str]
    method_refusal: str

    def load_kwargs(self) -> dict:
        return {}

    def denoiser_of(self, pipe) -> Any:
        return pipe.transformer

    def training_scheduler(self, pipe, density: str = "uniform"):
        """The flow-matching schedule; ``density`` (``--timestep-density``) says which timesteps training draws,
        under the scheduler's ``shift`` unless it shifts dynamically (``flow.FlowMatchTraining``)."""
        from .flow import FlowMatchTraining

        if type(pipe.scheduler).__name__ != "FlowMatchEulerDiscreteScheduler":
            raise UserError(f"this {self.short} pipeline's scheduler is a {type(pipe.scheduler).__name__}; salun "
                            f"trains {self.short} by flow matching and needs its FlowMatchEulerDiscreteScheduler")
        cfg = pipe.scheduler.config
        shift = 1.0 if cfg.get("use_dynamic_shifting") else float(cfg.get("shift") or 1.0)
        return FlowMatchTraining(cfg.num_train_timesteps, density=density, shift=shift)

    def selection_presets(self) -> dict[str, str]:
        return self.presets

    def lora_layers(self, state: dict, rank: int, targets: list[str]) -> dict:
        return {"transformer_lora_layers": state,
                "transformer_lora_adapter_metadata": {"r": rank, "lora_alpha": rank, "target_modules": targets}}

    def check_method(self, method) -> None:
        """SalUn's and RL's losses need only the training target; the others read a UNet's cross-attention, its DDPM
        schedule or classifier-free guidance."""
        if not method.salun_loss:
            raise UserError(f"--method {method.name} is not adapted to {self.method_refusal}")
