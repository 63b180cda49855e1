"""A new model family is one class and one ``register`` call: a family defined here, in the test folder, for a
pipeline class diffusers has never heard of, goes through ``salun mask`` -> ``salun erase`` -> export -> load
without a change to ``erase/``; the job asks it for the prompts' conditions, the denoiser's output, the training
schedule and what a ``--selection`` name means."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from erase.diffusion import family as F
from erase.diffusion.job import EraseOptions, erase
from erase.diffusion.pipeline import load_pipeline
from erase.diffusion.saliency import make_mask
from erase.diffusion.sd.family import StableDiffusionFamily
from erase.diffusion.recipes import load_recipe
from erase.toy import TOY_SD


class ShoutingPipeline(StableDiffusionPipeline):
    """A pipeline class of this test's own: Stable Diffusion that reads every prompt in capitals."""


class ShoutingFamily(StableDiffusionFamily):
    """The family of ``ShoutingPipeline``: its prompts are encoded upper-cased, and it counts what the job asks."""
    name = "test-shouting"
    title = "Shouting Stable Diffusion (a test family)"
    pipeline_classes = ("ShoutingPipeline",)
    asked: dict = {"encode": [], "denoise": 0}

    def pipeline_class(self) -> type:
        return ShoutingPipeline

    def encode_prompts(self, pipe, prompts, resolution):
        self.asked["encode"] += list(prompts)
        return super().encode_prompts(pipe, [p.upper() for p in prompts], resolution)

    def denoise(self, unet, zt, t, cond):
        self.asked["denoise"] += 1
        return super().denoise(unet, zt, t, cond)

    def usage(self, folder: str) -> str:
        return f'pipe = ShoutingPipeline.from_pretrained("{folder}")'

    def training_scheduler(self, pipe):
        self.asked["schedule"] = self.asked.get("schedule", 0) + 1
        return super().training_scheduler(pipe)

    def selection_presets(self) -> dict[str, str]:
        # this family's "cross-attention" is, for the test's sake, the UNet's self-attention
        return {**super().selection_presets(), "attn2": r"(^|\.)attn1\."}


@pytest.fixture
def shouting(tmp_path):
    """The family registered, and the toy model saved as a ShoutingPipeline."""
    family = F.register(ShoutingFamily())
    ShoutingFamily.asked = {"encode": [], "denoise": 0}
    base = StableDiffusionPipeline.from_pretrained(TOY_SD, safety_checker=None, requires_safety_checker=False)
    folder = tmp_path / "shouting-sd"
    ShoutingPipeline(**base.components).save_pretrained(folder, safe_serialization=True)
    yield family, folder
    del F.FAMILIES[family.name]


def test_a_family_defined_outside_the_package_runs_mask_erase_export(shouting, tmp_path):
    family, folder = shouting
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "ShoutingPipeline"
    recipe = load_recipe("circle", n_forget=4, n_retain=4, gen_steps=2, steps=2, batch_size=2, lr=1e-4)

    mask = make_mask(recipe, tmp_path / "mask.safetensors", model=str(folder), work_dir=tmp_path / "mask-work")
    assert mask.meta["family"] == "test-shouting" and mask.stats()["kept"] > 0
    assert family.asked["denoise"] > 0 and "a red circle" in family.asked["encode"]

    asked_before = family.asked["denoise"]
    summary = erase(EraseOptions(recipe=recipe, out=tmp_path / "erased", model=str(folder),
                                 mask_path=tmp_path / "mask.safetensors", work_dir=tmp_path / "work", progress=False))
    assert summary["family"] == "test-shouting" and summary["pipeline_class"] == "ShoutingPipeline"
    assert family.asked["denoise"] > asked_before  # training called the family's denoiser

    out = tmp_path / "erased"
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "ShoutingPipeline"
    assert 'ShoutingPipeline.from_pretrained("path/to/this/folder")' in (out / "README.md").read_text()
    erased = load_pipeline(out)
    assert type(erased) is ShoutingPipeline
    base = load_pipeline(folder)
    moved = [n for n, p in erased.unet.named_parameters() if not torch.equal(p, dict(base.unet.named_parameters())[n])]
    assert moved and all(mask.masks[n].any() for n in moved)  # only the mask's tensors changed


def test_an_unregistered_pipeline_class_is_refused_in_one_line(tmp_path):
    base = StableDiffusionPipeline.from_pretrained(TOY_SD, safety_checker=None, requires_safety_checker=False)
    folder = tmp_path / "shouting-sd"
    ShoutingPipeline(**base.components).save_pretrained(folder, safe_serialization=True)
    with pytest.raises(Exception, match="is a ShoutingPipeline; salun supports"):
        load_pipeline(folder)


def test_the_family_says_what_a_selection_means_and_how_to_train(shouting, tmp_path):
    """ESD-x trains what "attn2" selects: the family's presets, not the UNet names the job might assume."""
    family, folder = shouting
    recipe = load_recipe("circle", n_forget=2, n_retain=2, gen_steps=2, steps=1, batch_size=2)
    erase(EraseOptions(recipe=recipe, out=tmp_path / "esd", model=str(folder), method="esd-x",
                       method_options={"sample-steps": 2}, work_dir=tmp_path / "work", progress=False))
    assert family.asked.get("schedule", 0) >= 1
    base, erased = load_pipeline(folder), load_pipeline(tmp_path / "esd")
    before = dict(base.unet.named_parameters())
    moved = [n for n, p in erased.unet.named_parameters() if not torch.equal(p, before[n])]
    assert moved and all(".attn1." in n for n in moved), moved[:3]

