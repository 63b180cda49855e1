"""Shuffled batches for training loops: every sample once per epoch, resumable from a checkpoint."""
from __future__ import annotations

import torch


class EpochSampler:
    """Shuffled batches that visit every sample once per epoch (no batch is reused within an epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int | None = None, generator: torch.Generator | None = None):
        self.n, self.bs = n, min(batch_size, n)
        self.gen = generator if generator is not None else torch.Generator().manual_seed(seed or 0)
        self.perm, self.pos = torch.randperm(n, generator=self.gen), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.bs > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return idx

    def state(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": torch.tensor(self.pos)}

    def load(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos = s["perm"], int(s["pos"])
