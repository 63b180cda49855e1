"""Unlearning methods, one small module each, behind one interface:

``unlearn(model, split, cfg, seed, device="cpu") -> Unlearned``

``model`` is the original (trained on the whole training set) and is never modified; ``split`` the
forget/retain/test indices; ``cfg`` the method's hyper-parameters (see ``erase.classify.hparams``).
"""
from __future__ import annotations

from typing import Callable

from .base import Unlearned
from . import be, bs, ft, ga, iu, l1_sparse, retrain, rl, salun

METHODS: dict[str, Callable[..., Unlearned]] = {
    "retrain": retrain.unlearn,
    "ft": ft.unlearn,
    "rl": rl.unlearn,
    "ga": ga.unlearn,
    "iu": iu.unlearn,
    "be": be.unlearn,
    "bs": bs.unlearn,
    "l1-sparse": l1_sparse.unlearn,
    "salun": salun.unlearn,
    "salun-soft": salun.unlearn_soft,
}
# The paper's Table 1 names.
LABELS = {"retrain": "Retrain", "ft": "FT", "rl": "RL", "ga": "GA", "iu": "IU", "be": "BE", "bs": "BS",
          "l1-sparse": "l1-sparse", "salun": "SalUn", "salun-soft": "SalUn-soft"}

__all__ = ["METHODS", "LABELS", "Unlearned"]
