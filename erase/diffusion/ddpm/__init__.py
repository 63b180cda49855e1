"""The class-conditional DDPM path: pipeline, training, SalUn erasure, judge rates.

Importing this package registers ``ClassConditionalDDPMPipeline`` with diffusers so that
``DiffusionPipeline.from_pretrained`` can load the folders it writes.
"""
from .pipeline import ClassConditionalDDPMPipeline, load_ddpm

__all__ = ["ClassConditionalDDPMPipeline", "load_ddpm"]
