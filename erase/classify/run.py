"""One method on one forget split: unlearn, time it (RTE, minutes), measure UA/RA/TA/MIA."""
from __future__ import annotations

import time

import torch

from .forget import ForgetSplit
from .hparams import method_config
from .methods import METHODS
from .metrics import evaluate
from .train import check_finite


def run_method(method: str, model: torch.nn.Module, split: ForgetSplit, seed: int, cfg: dict | None = None,
               device: str = "cpu"):
    """Returns (Unlearned, metrics with RTE in minutes, the config used)."""
    if cfg is None:
        cfg = method_config(method, split.data.name, split.scenario)
    t0 = time.perf_counter()
    result = METHODS[method](model, split, cfg, seed, device)
    rte = (time.perf_counter() - t0) / 60.0
    check_finite(result.model, f"after {method}")  # IU's step and any method's own loop, not only train_sgd
    metrics = evaluate(result.model, split, device)
    metrics["RTE"] = rte
    return result, metrics, cfg


def avg_gap(metrics: dict, reference: dict) -> float:
    return sum(abs(metrics[k] - reference[k]) for k in ("UA", "RA", "TA", "MIA")) / 4.0
