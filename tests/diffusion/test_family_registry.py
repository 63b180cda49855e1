"""The family registry refuses a second family under a taken name or claiming a served pipeline class (it
silently replaced the first before); registering the same family again is harmless."""
import pytest

from erase.diffusion import family as F
from erase.diffusion.sd.family import StableDiffusionFamily


def test_register_refuses_a_taken_name_or_pipeline_class():
    F.families()
    before = dict(F.FAMILIES)

    class Impostor(StableDiffusionFamily):
        pass

    with pytest.raises(ValueError, match="'sd' is already registered"):
        F.register(Impostor())

    class Copy(StableDiffusionFamily):
        name = "sd-copy"

    with pytest.raises(ValueError, match="StableDiffusionPipeline is served by the 'sd' family"):
        F.register(Copy())
    assert F.register(before["sd"]) is before["sd"]  # the same family again: no change
    assert F.FAMILIES == before
