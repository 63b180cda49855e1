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
