"""Erasing the toy shape "circle" from the shipped toy Stable Diffusion erases it and keeps the other shapes."""
import pytest

from erase.diffusion.job import EraseOptions, erase
from erase.diffusion.recipes import load_recipe
from erase.toy import TOY_JUDGE, TOY_SD
from erase.diffusion.toy_quality import erasure_rates

# The recipe "circle" (prompts/toy.json: 100 + 100 images, 100 steps of batch 16 at lr 1e-4), cut down:
# 16 forget and 16 retain images drawn in 10 sampler steps, 10 training steps of batch 8 at lr 3e-4.
ERASE = {"n_forget": 16, "n_retain": 16, "gen_steps": 10, "steps": 10, "batch_size": 8, "lr": 3e-4}
# erase.diffusion.toy_quality.erasure_rates at 10 sampler steps, seeds from 1000: 10 images per forget set ("a {colour}
# circle", "a {colour} disk", the held-out phrasing), one image per other shape x colour (25) for retain.
MEASURE = {"per_colour": 2, "retain_per_pair": 1, "steps": 10, "seed": 1000}
BARS = {"forget": {"forget_rate": 0.3, "synonym_rate": 0.5}, "retain": {"retain_acc": 0.8},
        "shown": 0.8, "max_drop": 0.15}


def test_circle_is_erased_and_other_shapes_kept(tmp_path, assert_erased):
    """Measured at these settings (one torch thread, 2-core CPU; erasure seeds 0-5, same measurement):

    - base: forget_rate 1.0, synonym_rate 1.0, heldout_rate 1.0, retain_acc 1.0;
    - erased: forget_rate 0.0, synonym_rate 0.0, heldout_rate 0.0, retain_acc 1.0 for every seed 0-5 (the judge
      before its reject head); with the reject head (a rejected image counts as a wrong shape), seeds 0-2:
      the same rates, retain_acc 1.0 / 1.0 / 0.96 (one retain image rejected).
    Thresholds: forget_rate <= 0.3, synonym_rate <= 0.5 (the trained synonym "disk"), retain_acc >= 0.8 and
    within 0.15 of the base's. How close to the edge: 6 training steps (seeds 0-2) leave forget_rate 0.2-0.5;
    the recipe's lr 1e-4 for 10 steps leaves 0.95-1.0, and 20 steps at 1e-4 leave 0.1-0.25.
    Cost: 21 s of CPU for this file alone, imports included (one torch thread; 38 s wall on the busy 2 cores).
    """
    base = erasure_rates(str(TOY_SD), TOY_JUDGE, "circle", **MEASURE)
    recipe = load_recipe("circle", **ERASE)
    erase(EraseOptions(recipe=recipe, out=tmp_path / "no-circle", work_dir=tmp_path / "work", seed=0,
                       progress=False))
    erased = erasure_rates(str(tmp_path / "no-circle"), TOY_JUDGE, "circle", **MEASURE)
    assert_erased(base, erased, **BARS)
    # a no-op erasure (zero steps, zero learning rate) leaves the base's figures: the same check rejects them
    with pytest.raises(AssertionError, match="not erased: forget_rate"):
        assert_erased(base, base, **BARS)
