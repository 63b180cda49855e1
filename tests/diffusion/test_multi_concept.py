"""Several concepts in one erasure, and one more concept erased from an erased pipeline."""
import json
import shutil

import pytest
import torch

from erase.cli import main
from erase.core.errors import UserError
from erase.core.mask import Mask
from erase.diffusion.concepts import combine, entry, read_history, replayed, with_replay
from erase.diffusion.job import EraseOptions, erase
from erase.diffusion.recipes import load_recipe
from erase.toy import TOY_SD

TINY = dict(n_forget=4, n_retain=4, steps=2, batch_size=4, gen_steps=2)


def test_combine_pairs_each_concept_with_its_own_misaligned_prompt(capsys):
    circle, triangle = load_recipe("circle"), load_recipe("triangle", lr=1e-3)
    r = combine([circle, triangle])
    assert r.name == "circle+triangle" and r.n_forget == circle.n_forget + triangle.n_forget
    assert r.forget_prompts == circle.forget_prompts + triangle.forget_prompts
    assert [r.misaligned_for(p) for p in r.forget_prompts] == circle.misaligned_prompts + triangle.misaligned_prompts
    # nothing an erased concept draws is kept: no circle or triangle prompt in the retain set
    assert r.retain_prompts and not [p for p in r.retain_prompts if "circle" in p or "triangle" in p]
    assert len(r.retain_prompts) == len(set(r.retain_prompts)) == 20
    assert r.lr == circle.lr and "differ in lr" in capsys.readouterr().err  # the first concept's settings, said
    assert [p["concept"] for p in r.extra["concepts"]] == ["circle", "triangle"]
    # the run is as long as the longest concept's own run: circle's 100 steps, frame's one epoch of its own
    # 200 images at batch 8 (25 steps), not one epoch over the 300 joint images at circle's batch 16 (19)
    frame = load_recipe("frame")
    assert frame.steps is None and combine([circle, frame]).steps == 100
    assert combine([frame, load_recipe("circle", steps=10)]).steps == 25


def test_combine_refusals():
    with pytest.raises(UserError, match="given twice"):
        combine([load_recipe("circle"), load_recipe("circle")])
    with pytest.raises(UserError, match="misaligned prompt 'a red square' is a forget prompt of square, erased in "
                                        "this run"):
        combine([load_recipe("circle"), load_recipe("square")])
    earlier = [{"concept": "circle", "forget_prompts": load_recipe("circle").forget_prompts}]
    with pytest.raises(UserError, match="forget prompt of circle, erased from this model before"):
        combine([load_recipe("heart")], earlier)  # heart -> circle, which the model no longer draws
    kept = combine([load_recipe("square")], earlier)
    assert not [p for p in kept.retain_prompts if "circle" in p]


def test_replay_trains_the_earlier_concepts_again(capsys):
    circle, cross = load_recipe("circle"), load_recipe("cross")
    earlier = [entry(circle.to_dict(), {"method": "salun"}, {"model": "base"})]
    r = with_replay(combine([cross], earlier), earlier)
    assert r.name == "cross" and replayed(r) == ["circle"]
    assert r.forget_prompts == cross.forget_prompts + circle.forget_prompts
    assert r.n_forget == cross.n_forget + circle.n_forget  # the earlier concept's own share of images
    # each forget prompt keeps its own concept's misaligned prompt
    assert [r.misaligned_for(p) for p in r.forget_prompts] == (
        [cross.misaligned_for(p) for p in cross.forget_prompts] + circle.misaligned_prompts)
    assert not [p for p in r.retain_prompts if "circle" in p or "cross" in p]
    # the history entry of this run names its own concept, and what it replayed
    e = entry(r.to_dict(), {}, {})
    assert e["concepts"] == ["cross"] and e["replayed"] == ["circle"] and e["parts"][0]["concept"] == "cross"
    assert e["forget_prompts"] == cross.forget_prompts
    # replayed concepts do not lengthen the run: an epoch-based recipe keeps its own step count
    assert with_replay(load_recipe("frame"), earlier).steps == 25
    # a concept erased again is trained as this run's own, not replayed
    assert replayed(with_replay(combine([circle], earlier), earlier)) == []
    assert capsys.readouterr().err == ""

    # triangle was sent to star; erasing star now: replaying triangle would teach it to draw star
    tri = [entry(load_recipe("triangle").to_dict(), {}, {})]
    star = load_recipe("star")
    r = with_replay(combine([star], tri), tri)
    assert replayed(r) == [] and r.forget_prompts == star.forget_prompts
    assert "triangle, erased before, was sent to 'a red star'" in capsys.readouterr().err
    # a history written before entries kept the misaligned prompts: not replayed, said
    old = [{"concept": "circle", "forget_prompts": circle.forget_prompts}]
    assert replayed(with_replay(combine([cross], old), old)) == []
    assert "does not keep the misaligned prompts of circle" in capsys.readouterr().err


def _refused(argv, capsys, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("salun: error: ") and err.count("\n") == 1 and match in err, err


def test_cli_refusals(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["erase", "--out", str(out)]
    _refused(base + ["--concept", "circle", "--concept", "circle"], capsys, "given twice")
    _refused(base + ["--concept", "circle", "--concept", "square"], capsys, "is a forget prompt of square")
    _refused(base + ["--concept", "circle", "--mask-per-concept"], capsys, "give --concept twice or more")
    _refused(base + ["--concept", "circle", "--concept", "triangle", "--mask-per-concept", "--method", "rl"], capsys,
             "trains without a mask")
    _refused(base + ["--concept", "circle", "--concept", "triangle", "--forget-data", str(tmp_path)], capsys,
             "drawn per concept")
    assert not out.exists()


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    recipe = combine([load_recipe(c, **TINY) for c in ("circle", "triangle")])
    summary = erase(EraseOptions(recipe=recipe, out=tmp / "two", work_dir=tmp / "work", progress=False,
                                 mask_per_concept=True))
    return tmp, summary


def test_joint_run_draws_each_concept_and_unites_their_masks(two):
    tmp, summary = two
    out = tmp / "two"
    mask = Mask.load(out / "mask.safetensors")
    assert mask.meta["n_forget"] == 8 and summary["n_forget"] == 8  # each concept its own 4 images
    assert {p.split()[-1] for p in mask.meta["prompts"]} == {"circle", "triangle"}
    kept = mask.meta["per_concept_kept"]
    assert set(kept) == {"circle", "triangle"} and 0 < mask.meta["overlap"]["circle|triangle"] < 1
    assert max(kept.values()) <= mask.kept <= sum(kept.values())  # a union
    rec = json.loads((out / "recipe.json").read_text())
    assert [h["concepts"] for h in rec["history"]] == [["circle", "triangle"]]
    assert rec["history"][0]["model"] == str(TOY_SD) or rec["history"][0]["model"].endswith("toy-sd")
    card = (out / "README.md").read_text()
    assert "Concepts erased together (2)" in card and "union of one mask per concept" in card


def test_one_more_concept_from_an_erased_model_keeps_the_history(two, tmp_path, capsys):
    tmp, _ = two
    summary = erase(EraseOptions(recipe=load_recipe("cross", **TINY), model=str(tmp / "two"), out=tmp_path / "three",
                                 work_dir=tmp_path / "work", progress=False))
    rec = json.loads((tmp_path / "three" / "recipe.json").read_text())
    assert [h["concept"] for h in rec["history"]] == ["circle+triangle", "cross"]
    assert rec["history"][1]["model"] == str(tmp / "two")
    # the earlier concepts stay out of what the run keeps
    assert not [p for p in rec["recipe"]["retain_prompts"] if "circle" in p or "triangle" in p]
    card = (tmp_path / "three" / "README.md").read_text()
    assert "## Erasure history" in card and "Replayed, to keep them erased: **circle**, **triangle**" in card
    assert summary["steps"] == 2
    # the earlier concepts are trained on again (replayed), each with its own images, drawn by this model
    assert summary["n_forget"] == 12 and rec["history"][1]["replayed"] == ["circle", "triangle"]
    mask = Mask.load(tmp_path / "three" / "mask.safetensors")
    assert {p.split()[-1] for p in mask.meta["prompts"]} == {"circle", "triangle", "cross"}
    plain = erase(EraseOptions(recipe=load_recipe("cross", **TINY), model=str(tmp / "two"), out=tmp_path / "plain",
                               work_dir=tmp_path / "work", progress=False, replay=False))
    assert plain["n_forget"] == 4
    assert json.loads((tmp_path / "plain" / "recipe.json").read_text())["history"][1]["replayed"] == []
    with pytest.raises(UserError, match="forget prompt of circle"):  # heart -> circle, erased before
        erase(EraseOptions(recipe=load_recipe("heart", **TINY), model=str(tmp_path / "three"),
                           out=tmp_path / "four", progress=False))
    assert not (tmp_path / "four").exists()

    # an erased model without its recipe.json: continue without history, warned
    bare = tmp_path / "bare"
    shutil.copytree(tmp / "two", bare)
    (bare / "recipe.json").unlink()
    capsys.readouterr()
    assert read_history(str(bare)) == []
    assert "recipe.json is missing" in capsys.readouterr().err
    assert read_history(str(TOY_SD)) == [] and capsys.readouterr().err == ""  # a base model: no history, no word


def test_weights_outside_the_union_mask_are_the_base(two):
    from diffusers import StableDiffusionPipeline

    tmp, _ = two
    pipe = StableDiffusionPipeline.from_pretrained(tmp / "two", local_files_only=True)
    base = dict(StableDiffusionPipeline.from_pretrained(TOY_SD, local_files_only=True).unet.named_parameters())
    mask = Mask.load(tmp / "two" / "mask.safetensors")
    for n, p in pipe.unet.named_parameters():
        assert torch.equal(p.detach()[~mask.masks[n]], base[n].detach()[~mask.masks[n]]), n


def test_a_recipe_listing_concepts_and_a_custom_group(tmp_path):
    f = tmp_path / "two-shapes.json"
    f.write_text(json.dumps({"concepts": ["circle", "triangle"], "lr": 3e-4, "steps": 150}))
    r = load_recipe(str(f))
    assert r.name == "two-shapes" and r.lr == 3e-4 and r.steps == 150
    assert [p["concept"] for p in r.extra["concepts"]] == ["circle", "triangle"]

    from erase.cli.erase import _recipe

    class Args:
        concept = ["circle"]
        forget_prompt = ["a red star"]
        misaligned_prompt = ["a red heart"]
        retain_prompt = None
        n_forget = selection = keep = batch_size = forget_data = mask_contrast = timestep_density = None

    rec = _recipe(Args())
    assert [p["concept"] for p in rec.extra["concepts"]] == ["circle", "custom"]
    assert rec.misaligned_for("a red star") == "a red heart" and "a red star" not in rec.retain_prompts
