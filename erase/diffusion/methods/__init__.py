"""Erasure methods for diffusion models, one module each behind ``base.Method``; ``METHODS`` is the registry."""
from __future__ import annotations

from .base import Batch, Method
from .rl import RandomLabel
from .salun import SalUn

METHODS: dict[str, Method] = {m.name: m for m in (SalUn(), RandomLabel())}
DEFAULT_METHOD = "salun"

__all__ = ["Batch", "Method", "METHODS", "DEFAULT_METHOD"]
