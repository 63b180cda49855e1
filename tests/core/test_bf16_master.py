"""bf16_master: a float32 master kept as its bf16 rounding plus 16 bits gives back the same float32 bits."""
from __future__ import annotations

import torch

from erase.core import bf16_master


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32)


def test_split_then_join_gives_every_master_back_bit_for_bit():
    torch.manual_seed(0)
    master = torch.randn(200_000) * torch.logspace(-30, 30, 200_000)
    bits = _bits(master).clone()
    bits[:2000] = (bits[:2000] & ~0xFFFF) | 0x8000  # exactly halfway between two bf16 numbers: odd and even uppers
    master = bits.view(torch.float32)
    special = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 3.3e38, -3.3e38, 3.4e38, 1.0, -1.0])  # subnormal, near inf
    for m in (master, special):
        low, ties = bf16_master.split(m)
        assert low.dtype == torch.int16 and low.numel() == m.numel()
        assert torch.equal(_bits(bf16_master.join(m.to(torch.bfloat16), low, ties)), _bits(m))
    _, ties = bf16_master.split(master)
    assert 0 < ties.numel() < 2000  # only the ties whose upper half is odd are listed


def test_store_and_load_keep_a_master_in_an_optimizer_state():
    torch.manual_seed(1)
    master, state = torch.randn(4096), {}
    bf16_master.store(master, state)
    kept = state["master_low"]
    assert torch.equal(_bits(bf16_master.load(master.to(torch.bfloat16), state)), _bits(master))
    moved = master + 1e-4
    bf16_master.store(moved, state)
    assert state["master_low"] is kept  # written in place: no new buffer a step
    assert torch.equal(_bits(bf16_master.load(moved.to(torch.bfloat16), state)), _bits(moved))
