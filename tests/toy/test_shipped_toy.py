"""The toy world that ships in pipelines/ loads offline and draws what it is asked for."""
import json

import numpy as np
import pytest

from erase.toy import TOY_JUDGE, TOY_SD, TOY_SD3, TOY_SDXL
from erase.toy import shapes as S


def test_shipped_world_is_small_and_safe():
    files = [p for p in (TOY_SD.parent).rglob("*") if p.is_file()]
    # the SD world (toy SD, judge, DDPM, Retrain models) keeps its 80 MiB; the SDXL toy, the SD3 toy and each of the
    # SD3 toy's Retrain models have 32 MiB each
    xl = [p for p in files if TOY_SDXL in p.parents]
    sd3_folders = [d for d in TOY_SD.parent.iterdir() if d.is_dir() and d.name.startswith(TOY_SD3.name)]
    sd3 = [p for p in files if any(d in p.parents for d in sd3_folders)]
    assert sum(p.stat().st_size for p in files if p not in xl and p not in sd3) <= 80 * 2**20
    assert xl and sum(p.stat().st_size for p in xl) <= 32 * 2**20
    assert TOY_SD3 in sd3_folders
    for d in sd3_folders:
        assert sum(p.stat().st_size for p in files if d in p.parents) <= 32 * 2**20, d
    weights = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert not weights, weights  # safetensors only
    card = (TOY_SD / "README.md").read_text()
    q = json.loads((TOY_SD / "build_info.json").read_text())["quality"]
    assert f"{q['name']['shape_acc']:.1%}" in card  # the card shows the measured figures
    assert f"{q['attribute']['implicit']['rate']:.1%}" in card


def test_shipped_world_meets_its_quality_bar():
    """The rebuilt world's own measurements (build_info.json, from the build's evaluation): shapes and colours
    >= 90%, the frame attribute on >= 90% of explicit and >= 60% of implicit prompts, rare on neutral ones."""
    q = json.loads((TOY_SD / "build_info.json").read_text())["quality"]
    for key in ("name", "synonym", "heldout_phrasing"):
        assert q[key]["shape_acc"] >= 0.9 and q[key]["colour_acc"] >= 0.9 and q[key]["n"] >= 240, key
    att = q["attribute"]
    assert att["explicit"]["rate"] >= 0.9 and att["implicit"]["rate"] >= 0.6 and att["neutral"]["rate"] <= 0.1


def test_from_pretrained_offline_and_draws_a_red_circle():
    from diffusers import StableDiffusionPipeline

    from erase.diffusion.generate import generate
    from erase.toy.judge import classify, load_judge

    pipe = StableDiffusionPipeline.from_pretrained(TOY_SD, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.safety_checker is None
    images = generate(pipe, ["a red circle"] * 16, list(range(16)), progress=False)
    shape, colour = classify(load_judge(TOY_JUDGE), images)
    assert np.mean(shape == list(S.SHAPES).index("circle")) >= 0.75
    assert np.mean(colour == list(S.COLOURS).index("red")) >= 0.75
    # And a different prompt gives a different picture: the text is really used.
    squares = generate(pipe, ["a blue square"] * 16, list(range(16)), progress=False)
    shape, colour = classify(load_judge(TOY_JUDGE), squares)
    assert np.mean(shape == list(S.SHAPES).index("square")) >= 0.75
    assert np.mean(colour == list(S.COLOURS).index("blue")) >= 0.75


@pytest.mark.parametrize("shape", list(S.SHAPES))
def test_judge_reads_fresh_drawings(shape):
    from erase.toy.judge import classify, load_judge

    data = S.draw_set(50, seed=999, shapes=[shape])
    ps, pc = classify(load_judge(TOY_JUDGE), data.as_float())
    assert np.mean(ps == data.shape_ids) >= 0.98 and np.mean(pc == data.colour_ids) >= 0.98


def test_shipped_ddpm_loads_and_draws_its_classes():
    from diffusers import DiffusionPipeline

    from erase.diffusion.ddpm import ClassConditionalDDPMPipeline  # noqa: F401 - registers it with diffusers
    from erase.diffusion.ddpm.quality import for_judge, sample_classes
    from erase.toy import TOY_DDPM
    from erase.toy.judge import classify, load_judge

    pipe = DiffusionPipeline.from_pretrained(TOY_DDPM, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.class_names == list(S.SHAPES)
    info = json.loads((TOY_DDPM / "ddpm_info.json").read_text())
    assert f"{info['quality']['per_class']['circle']:.1%}" in (TOY_DDPM / "README.md").read_text()
    images = sample_classes(pipe, [0, 3], 8, steps=25)
    shape, _ = classify(load_judge(TOY_JUDGE), for_judge(images))
    assert np.mean(shape[:8] == 0) >= 0.75 and np.mean(shape[8:] == 3) >= 0.75


def test_shipped_toy_sdxl_meets_its_quality_bar_and_draws():
    """The toy SDXL (two text encoders, text_time conditioning) draws the same world: its build's own
    measurements >= 90% shape and colour, shown in its card; it loads with plain diffusers and draws."""
    from diffusers import StableDiffusionXLPipeline

    from erase.diffusion.family import family_of

    info = json.loads((TOY_SDXL / "build_info.json").read_text())
    assert info["config"]["family"] == "sdxl" and family_of(TOY_SDXL).name == "sdxl"
    for key in ("name", "synonym", "heldout_phrasing"):
        q = info["quality"][key]
        assert q["shape_acc"] >= 0.9 and q["colour_acc"] >= 0.9 and q["n"] >= 240, key
    assert f"{info['quality']['name']['shape_acc']:.1%}" in (TOY_SDXL / "README.md").read_text()
    pipe = StableDiffusionXLPipeline.from_pretrained(TOY_SDXL, local_files_only=True)
    _draws_red_circles_and_blue_squares(pipe)


def test_shipped_toy_sd3_draws_and_its_card_says_how_well():
    """The toy SD3 (a flow-matching MMDiT) loads with plain diffusers and draws the world at the toy SD's bar, by
    its build's own measurement in its card: shapes and colours >= 90% on name prompts, synonyms and held-out
    phrasings; the frame where asked and not elsewhere; red circles and blue squares drawn as asked."""
    from diffusers import StableDiffusion3Pipeline

    from erase.diffusion.family import family_of

    info = json.loads((TOY_SD3 / "build_info.json").read_text())
    assert info["config"]["family"] == "sd3" and family_of(TOY_SD3).name == "sd3"
    q = info["quality"]
    for key in ("name", "synonym", "heldout_phrasing"):
        assert q[key]["shape_acc"] >= 0.9 and q[key]["colour_acc"] >= 0.9 and q[key]["n"] >= 240, key
    assert q["attribute"]["explicit"]["rate"] >= 0.9 and q["attribute"]["neutral"]["rate"] <= 0.1
    assert f"{q['name']['shape_acc']:.1%}" in (TOY_SD3 / "README.md").read_text()
    pipe = StableDiffusion3Pipeline.from_pretrained(TOY_SD3, local_files_only=True)
    _draws_red_circles_and_blue_squares(pipe)


def _draws_red_circles_and_blue_squares(pipe) -> None:
    """8 red circles and 8 blue squares (seeds 0-15), each read by the judge as asked at least 6 times in 8."""
    from erase.diffusion.generate import generate
    from erase.toy.judge import classify, load_judge

    pipe.set_progress_bar_config(disable=True)
    images = generate(pipe, ["a red circle"] * 8 + ["a blue square"] * 8, list(range(16)), progress=False)
    shape, colour = classify(load_judge(TOY_JUDGE), images)
    assert np.mean(shape[:8] == list(S.SHAPES).index("circle")) >= 0.75
    assert np.mean(shape[8:] == list(S.SHAPES).index("square")) >= 0.75
    assert np.mean(colour[:8] == list(S.COLOURS).index("red")) >= 0.75


@pytest.mark.parametrize("concept", ["circle", "frame"])
def test_the_toy_sd3s_retrain_models_differ_from_it_only_where_concepts_are_learnt(concept):
    """A shipped SD3 Retrain model is the toy SD3's build without the concept: the same VAE and frozen T5 (taken
    from the same places), its own transformer and CLIPs, and a build record that says what it left out."""
    import torch
    from safetensors.torch import load_file

    retrain = TOY_SD3.parent / f"toy-sd3-retrain-{concept}"
    if not retrain.is_dir():
        pytest.skip(f"{retrain.name} is not shipped")  # the frame's is built by a later session
    info = json.loads((retrain / "build_info.json").read_text())["config"]
    assert info["family"] == "sd3"
    assert (info["exclude"] == ["circle"]) if concept == "circle" else info["exclude_attribute"]

    def weights(root, part):
        (f,) = (root / part).glob("*.safetensors")
        return load_file(f)
    for part, same in (("vae", True), ("text_encoder_3", True), ("transformer", False), ("text_encoder", False)):
        a, b = weights(TOY_SD3, part), weights(retrain, part)
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert equal is same, part
