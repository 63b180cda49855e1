"""SalUn (Fan et al., ICLR 2024): RL's misaligned + retain loss, applied to the saliency mask's weights only
(the mask: the top ``keep`` fraction of the guided forgetting loss's gradient magnitudes)."""
from __future__ import annotations

from .rl import RandomLabel


class SalUn(RandomLabel):
    name = "salun"
    title = "SalUn (saliency-masked random label)"
    uses_mask = True
    accepts_mask = True
    unmasked = "rl"
