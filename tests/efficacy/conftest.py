"""Efficacy tests: a small erasure per path, judged against the base model's figures measured in the same test.

Every test here measures the base model, erases, measures the result with the same seeds and settings, and
hands both to ``assert_erased``. The check fails when the concept is still there, when what should be kept
is lost, and when the base never showed the concept (then a low rate after erasure would prove nothing).
A no-op erasure leaves the base's figures, so each test also checks that ``assert_erased`` rejects them.
"""
from __future__ import annotations

import pytest


def check_erasure(base: dict, erased: dict, *, forget: dict[str, float], retain: dict[str, float],
                  shown: float, max_drop: float) -> list[str]:
    """What is wrong with ``erased`` as an erasure of ``base`` (an empty list: nothing).

    ``forget``: {metric: the most it may be after erasure}, for metrics that measure how much of the concept
    is still there (a rate, a forget accuracy); the base must show each at ``shown`` or more.
    ``retain``: {metric: the least it may be after erasure}; none may also fall more than ``max_drop``
    below the base's figure.
    """
    problems = []
    for key, most in forget.items():
        if base[key] < shown:
            problems.append(f"the base model's {key} is {base[key]:.3g} < {shown}: it never showed the concept, so "
                            "a low figure after erasure proves nothing")
        if erased[key] > most:
            problems.append(f"not erased: {key} {erased[key]:.3g} > {most} (base {base[key]:.3g})")
    for key, least in retain.items():
        if erased[key] < least:
            problems.append(f"retain lost: {key} {erased[key]:.3g} < {least} (base {base[key]:.3g})")
        elif erased[key] < base[key] - max_drop:
            problems.append(f"retain lost: {key} fell {base[key] - erased[key]:.3g} from the base's "
                            f"{base[key]:.3g} (at most {max_drop})")
    return problems


@pytest.fixture
def assert_erased():
    """``assert_erased(base, erased, forget=..., retain=..., shown=..., max_drop=...)``: fails with every
    problem ``check_erasure`` finds."""

    def check(base: dict, erased: dict, **bars) -> None:
        problems = check_erasure(base, erased, **bars)
        assert not problems, "; ".join(problems) + f"\nbase: {base}\nerased: {erased}"

    return check
