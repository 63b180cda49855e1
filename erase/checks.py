"""Checks of numbers a user gives, said in one line before any work (NaN and infinity never pass)."""
from __future__ import annotations

import math

from .errors import UserError


def _flag(name: str) -> str:
    return name if name.startswith("-") else "--" + name.replace("_", "-")


def finite(name: str, v: float | None) -> None:
    if v is not None and not math.isfinite(v):
        raise UserError(f"{_flag(name)} must be a finite number, got {v}")


def positive(name: str, v: float | None) -> None:
    """``v > 0`` and finite (``v <= 0`` would let NaN through)."""
    finite(name, v)
    if v is not None and not v > 0:
        raise UserError(f"{_flag(name)} must be positive, got {v}")


def non_negative(name: str, v: float | None) -> None:
    finite(name, v)
    if v is not None and not v >= 0:
        raise UserError(f"{_flag(name)} must be >= 0, got {v}")


def at_least(name: str, v: int | None, lo: int = 1) -> None:
    if v is not None and not v >= lo:
        raise UserError(f"{_flag(name)} must be at least {lo}, got {v}")


def fraction(name: str, v: float | None) -> None:
    """In (0, 1]: the share of weights a mask keeps."""
    finite(name, v)
    if v is not None and not 0 < v <= 1:
        raise UserError(f"{_flag(name)} must be in (0, 1], got {v}")


def device(name: str | None) -> None:
    """A CUDA device on a machine without one is refused, not silently replaced by the CPU."""
    if name is None or name == "cpu":
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                        "use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices are visible")
