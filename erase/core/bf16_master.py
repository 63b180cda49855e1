"""A float32 master weight kept as the bf16 weight it rounds to plus 16 bits: half a master's memory, exactly.

A bf16 number is the upper half of a float32's bits. A weight held in bf16 (``--weights-dtype bf16``) is its
float32 master rounded to nearest even, so the weight already holds the master's upper 16 bits up to a carry
of one; the master is that weight, its lower 16 bits and the carry. The carry follows from the lower bits
except at a tie (lower bits exactly 0x8000, where rounding to even carries only from an odd upper half): those
few entries (about one in 2**17) are listed by position. ``join(split(m) ...)`` gives ``m`` back bit for bit,
so training on the split master is the same training, and an SDXL UNet's masters at keep 0.5 take 2.6 GB less.
"""
from __future__ import annotations

import sys

import torch

assert sys.byteorder == "little", "a float32's lower 16 bits are read as the first int16 of its pair"

TIE = -32768  # 0x8000 as an int16: the lower half of a master exactly halfway between two bf16 numbers


def split(master: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 vector's lower 16 bits (int16) and the positions where its bf16 rounding carried at a tie."""
    halves = master.contiguous().view(torch.int16).view(-1, 2)  # (lower, upper) per entry, little-endian
    low = halves[:, 0].clone()
    ties = ((low == TIE) & (halves[:, 1] & 1).bool()).nonzero().squeeze(1)
    return low, ties


def join(weight: torch.Tensor, low: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """The float32 master of a bf16 vector (the master's rounding) from ``split``'s lower bits and ties."""
    rounded = weight.contiguous().view(torch.int16)
    carried = (low < 0) & (low != TIE)  # lower bits above 0x8000 round the upper half up
    upper = rounded - carried.to(torch.int16)
    if ties.numel():
        upper[ties] -= 1
    return torch.stack((low, upper), dim=1).view(torch.float32).squeeze(1)


def store(values: torch.Tensor, state: dict) -> None:
    """Keep a float32 master vector in an optimizer state as its lower bits and ties (the bf16 weight, its
    rounding, holds the rest)."""
    low, ties = split(values)
    if "master_low" in state and state["master_low"].shape == low.shape:
        state["master_low"].copy_(low)
    else:
        state["master_low"] = low
    state["master_ties"] = ties


def load(weight: torch.Tensor, state: dict) -> torch.Tensor:
    """The float32 master vector ``store`` kept, given the bf16 weight's entries it rounds to."""
    return join(weight, state["master_low"], state["master_ties"])
