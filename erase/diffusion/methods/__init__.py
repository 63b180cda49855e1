"""Erasure methods for diffusion models, one module each behind ``base.Method``; ``METHODS`` is the registry.

SalUn (the default) and RL train on forget and retain images; ESD-x/ESD-u train toward a negatively
guided frozen copy; UCE edits cross-attention in closed form; FMN re-steers cross-attention; ANT
reverses the guidance on late steps only, keeping the early ones.
"""
from __future__ import annotations

from .ant import ANT
from .base import Batch, Context, Method, Option, TrainedMethod
from .esd import ESDu, ESDx
from .fmn import FMN
from .rl import RandomLabel
from .salun import SalUn
from .uce import UCE

from ...core.registry import Registry

METHODS: Registry[Method] = Registry("method", same=lambda a, b: type(a) is type(b))


def register_method(method: Method) -> Method:
    """Add an erasure method (an instance of a ``base.Method``); a second method under a taken name is refused."""
    return METHODS.register(method.name, method)


for _m in (SalUn(), RandomLabel(), ESDx(), ESDu(), UCE(), FMN(), ANT()):
    register_method(_m)
DEFAULT_METHOD = "salun"


def method_options() -> dict[str, tuple[list[str], "Option"]]:
    """Every method option, with the methods that take it (one ``--name`` on the command line each)."""
    out: dict = {}
    for m in METHODS.values():
        for key, opt in m.options.items():
            out.setdefault(key, ([], opt))[0].append(m.name)
    return out


__all__ = ["Batch", "Context", "Method", "Option", "TrainedMethod", "METHODS", "DEFAULT_METHOD", "method_options",
           "register_method"]
