"""Uncertainty for the figures the audits and benchmarks report: Wilson intervals for rates, a bootstrap
for anything else, and the rule that a difference is called only when the intervals separate."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (Wilson, 1927) of a rate ``successes / n``; (0, 1) when ``n`` is 0.

    Unlike the normal interval it stays inside [0, 1] and is not empty at 0% or 100%, the rates an erasure
    benchmark reports most."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    # exact ends at 0% and 100% (rounding would otherwise leave the rate a hair outside its own interval)
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return lo, hi


def rate_ci(flags: Sequence[bool] | np.ndarray) -> tuple[float, float]:
    flags = np.asarray(flags, dtype=bool)
    return wilson(float(flags.sum()), int(flags.size))


def bootstrap_ci(samples: Sequence, statistic: Callable[[np.ndarray], float], n_boot: int = 200,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``samples`` (resampled along the first axis)."""
    x = np.asarray(samples)
    rng = np.random.default_rng(seed)
    stats = [statistic(x[rng.integers(0, len(x), len(x))]) for _ in range(n_boot)]
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_sd(samples: Sequence, statistic: Callable[[np.ndarray], float], n_boot: int = 30,
                 seed: int = 0) -> float:
    """The bootstrap standard deviation of ``statistic`` over ``samples`` (resampled along the first axis)."""
    x = np.asarray(samples)
    rng = np.random.default_rng(seed)
    return float(np.std([statistic(x[rng.integers(0, len(x), len(x))]) for _ in range(n_boot)], ddof=1))


def separated(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two intervals (lo, hi) do not overlap: only then is a difference called."""
    return a[1] < b[0] or b[1] < a[0]


def half_width(ci: Sequence[float]) -> float:
    return (ci[1] - ci[0]) / 2
