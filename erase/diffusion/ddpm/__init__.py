"""The class-conditional DDPM path: pipeline, training, SalUn erasure, judge rates.

``from erase.diffusion.ddpm import ClassConditionalDDPMPipeline`` registers the class with diffusers, so
that ``DiffusionPipeline.from_pretrained`` can load the folders it writes. The package itself imports
nothing heavy, so that finding a model's family (``family.py``) costs no torch import.
"""
from __future__ import annotations

__all__ = ["ClassConditionalDDPMPipeline", "load_ddpm"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
