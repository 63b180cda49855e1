"""Learning-rate schedules for the erasure's training, named and shaped as diffusers' ``--lr_scheduler``
(``diffusers.optimization``): ``constant`` (the default: SalUn's recipes train at one rate), ``linear`` and
``cosine`` decay to 0 over the run, each after ``warmup`` steps rising linearly from 0. A schedule is a pure
function of the step, so a resumed run sets the rate its straight run had at every step."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """The multiple of the base learning rate for the update at ``step`` (0-based) of ``total``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}: {', '.join(SCHEDULES)}")
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def is_constant(schedule: str, warmup: int) -> bool:
    """Whether the rate never changes (the recipes' default): such runs keep their earlier resume keys."""
    return schedule == "constant" and warmup == 0
