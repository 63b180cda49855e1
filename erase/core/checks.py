"""Checks of numeric options, shared by the commands: each bad value is a ``UserError`` naming the option.

NaN compares false with everything, so ``v <= 0`` lets it through; these checks ask for what a good
value is (``v > 0`` and finite) instead of what a bad one is.
"""
from __future__ import annotations

import math

from .errors import UserError


def whole_number(value: int | None, option: str, low: int) -> int | None:
    """``value`` if it is an integer >= ``low`` (``None`` passes: the option was not given)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not value >= low:
        raise UserError(f"{option} must be a whole number of at least {low}, got {value}")
    return value


def positive_int(value: int | None, option: str) -> int | None:
    """``value`` if it is an integer >= 1 (``None`` passes)."""
    return whole_number(value, option, 1)


def nonnegative_int(value: int | None, option: str) -> int | None:
    """``value`` if it is an integer >= 0 (``None`` passes)."""
    return whole_number(value, option, 0)


def positive_float(value: float | None, option: str) -> float | None:
    """``value`` if it is a finite number > 0 (``None`` passes)."""
    if value is None:
        return None
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"{option} must be a finite number above 0, got {value}")
    return v


def finite_float(value: float | None, option: str, low: float | None = None, high: float | None = None) -> float | None:
    """``value`` if it is finite and within [low, high] where given (``None`` passes)."""
    if value is None:
        return None
    v = float(value)
    ok = math.isfinite(v) and (low is None or v >= low) and (high is None or v <= high)
    if not ok:
        where = (f" in [{low:g}, {high:g}]" if low is not None and high is not None else
                 f" of at least {low:g}" if low is not None else f" of at most {high:g}" if high is not None else "")
        raise UserError(f"{option} must be a finite number{where}, got {value}")
    return v


def image_size(value: int | None, option: str = "--size") -> int | None:
    """An image side length diffusers can draw: a positive multiple of 8 (``None``: the model's own)."""
    if value is None:
        return None
    positive_int(value, option)
    if value % 8:
        raise UserError(f"{option} must be a multiple of 8 (diffusers' Stable Diffusion pipeline draws no other sizes), "
                        f"got {value}")
    return value


def fraction(value: float | None, option: str) -> float | None:
    """``value`` if it is in (0, 1]: the share of weights a mask keeps (``None`` passes)."""
    if value is None:
        return None
    v = float(value)
    if not (math.isfinite(v) and 0 < v <= 1):
        raise UserError(f"{option} must be in (0, 1], got {value}")
    return v
