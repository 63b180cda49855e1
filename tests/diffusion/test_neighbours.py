"""Neighbours kept by name (``--keep-misaligned``, ``--keep-neighbours K``): the retain prompts nearest the erased
concept by the model's own text conditions take a larger share of the retain images, the misaligned prompts join
them; the run records what was added, and the options are refused where no retain image is drawn."""
import json

import pytest
import torch

from erase.core.errors import UserError
from erase.diffusion.job import erase
from erase.diffusion.neighbours import choose, nearest
from erase.diffusion.options import EraseOptions, check_options
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline


class _Family:
    """Conditions chosen by hand: two tokens of 2 numbers per prompt."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table

    def encode_prompts(self, pipe, prompts, resolution):
        return {"encoder_hidden_states": torch.tensor([self.table[p] for p in prompts]).reshape(len(prompts), 2, 2)}


TABLE = {"a red cross": [1, 0, 0, 0], "a red star": [0.9, 0.1, 0, 0], "a red heart": [0, 0, 1, 0],
         "a red square": [0, 1, 0, 0], "a blue star": [0.8, 0, 0, 0.2], "a red circle": [0, 0, 0, 1]}


def test_nearest_ranks_by_the_best_cosine_over_the_forget_prompts():
    fam = _Family(TABLE)
    cands = ["a red square", "a red heart", "a red star", "a blue star"]
    assert nearest(fam, None, ["a red cross"], cands, 2, 8) == ["a red star", "a blue star"]
    assert nearest(fam, None, ["a red cross"], cands, 0, 8) == []
    assert nearest(fam, None, ["a red cross"], [], 3, 8) == []
    assert len(nearest(fam, None, ["a red cross"], cands, 10, 8)) == 4
    # the best over the forget prompts: a second forget prompt's own nearest (its twin) comes first
    fam = _Family({**TABLE, "a red ring": [0, 0, 0, 1], "a red disk": [0, 0, 0, 1]})
    assert nearest(fam, None, ["a red cross"], cands + ["a red disk"], 1, 8) == ["a red star"]
    assert nearest(fam, None, ["a red cross", "a red ring"], cands + ["a red disk"], 1, 8) == ["a red disk"]


def test_nearness_is_centred_on_the_prompts_mean():
    # "a" and "b" point the same way (a tie uncentred, broken by order); centred on the pool's mean they part
    fam = _Family({"f": [0, 3, 0, 2], "a": [0, 1, 1, 1], "c": [1, 0, 0, 0], "b": [0, 2, 2, 2]})
    assert nearest(fam, None, ["f"], ["a", "c", "b"], 1, 8) == ["b"]


def test_a_pooled_embedding_is_preferred_and_non_finite_conditions_refused():
    class Pooled(_Family):
        def encode_prompts(self, pipe, prompts, resolution):
            n = len(prompts)
            return {"encoder_hidden_states": torch.zeros(n, 2, 2),  # would tie everything
                    "pooled_projections": torch.tensor([self.table[p] for p in prompts])}

    assert nearest(Pooled(TABLE), None, ["a red cross"], ["a red square", "a red star"], 1, 8) == ["a red star"]
    bad = _Family({**TABLE, "a red star": [float("nan"), 0, 0, 0]})
    with pytest.raises(UserError, match="not finite"):
        nearest(bad, None, ["a red cross"], ["a red square", "a red star"], 1, 8)


def test_choose_widens_the_retain_prompts_and_says_what_it_added():
    fam = _Family(TABLE)
    base = custom_recipe(["a red cross"], ["a red heart"], ["a red square", "a red star", "a blue star"])
    same, info = choose(base, fam, None, 8)
    assert same is base and info is None
    r, info = choose(custom_recipe(["a red cross"], ["a red heart"], ["a red square", "a red star", "a blue star"],
                                   keep_misaligned=True, keep_neighbours=1), fam, None, 8)
    assert r.retain_prompts == ["a red square", "a red star", "a blue star", "a red heart", "a red star"]
    assert info == {"misaligned_added": ["a red heart"], "neighbours": ["a red star"], "keep_neighbours": 1,
                    "keep_misaligned": True}
    # a misaligned prompt already kept is not added twice
    r, info = choose(custom_recipe(["a red cross"], ["a red heart"], ["a red heart"], keep_misaligned=True), fam,
                     None, 8)
    assert r.retain_prompts == ["a red heart"] and info["misaligned_added"] == []


def _opts(model, out, **kw):
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star", "a green triangle", "a red heart"],
                           n_forget=4, n_retain=6, batch_size=2, gen_steps=2, lr=1e-3,
                           keep_misaligned=kw.pop("keep_misaligned", False),
                           keep_neighbours=kw.pop("keep_neighbours", 0))
    kw.setdefault("work_dir", out.parent / f"{out.name}.work")
    return EraseOptions(recipe=recipe, out=out, model=str(model), steps=2, progress=False, **kw)


def test_an_erasure_draws_the_neighbours_and_records_them(tmp_path):
    model = tiny_pipeline("sd", tmp_path / "sd")
    s = erase(_opts(model, tmp_path / "o", keep_misaligned=True, keep_neighbours=1))
    near = s["data"]["retain_neighbours"]
    assert near["misaligned_added"] == ["a red square"]
    from erase.diffusion.pipeline import load_pipeline
    from erase.diffusion.prepare import family_of_pipe

    pipe = load_pipeline(str(model))
    assert near["neighbours"] == nearest(family_of_pipe(pipe), pipe, ["a red circle"], [
        "a blue star", "a green triangle", "a red heart", "a red square"], 1, s["resolution"])
    # 6 images over 5 listed prompts: the neighbour, listed twice, has 2 (3 when it is the first prompt)
    assert near["images"][near["neighbours"][0]] >= 2 and near["images"]["a red square"] >= 1
    recipe = json.loads((tmp_path / "o" / "recipe.json").read_text())["recipe"]
    assert recipe["retain_prompts"] == ["a blue star", "a green triangle", "a red heart", "a red square",
                                        near["neighbours"][0]]
    assert recipe["keep_misaligned"] is True and recipe["keep_neighbours"] == 1
    card = (tmp_path / "o" / "README.md").read_text()
    assert "Neighbours kept by name" in card and "a red square" in card
    # the widened retain set is another run: its weights differ from the plain run's
    from safetensors.torch import load_file

    erase(_opts(model, tmp_path / "plain"))
    a = load_file(tmp_path / "o" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "plain" / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert "retain_neighbours" not in json.loads((tmp_path / "plain" / "recipe.json").read_text())["summary"]["data"]


@pytest.mark.parametrize("change, message", [
    (dict(method="uce"), "--keep-neighbours: --method uce has no retain term"),
    (dict(alpha=0.0), "with --alpha 0 none are drawn"),
    (dict(retain_data="x"), "--retain-data gives the retain images"),
])
def test_refused_where_no_retain_image_is_drawn(tmp_path, change, message):
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star"],
                           keep_neighbours=2, alpha=change.get("alpha", 0.5))
    opts = EraseOptions(recipe=recipe, out=tmp_path / "o", method=change.get("method", "salun"),
                        retain_data=tmp_path / change["retain_data"] if "retain_data" in change else None)
    with pytest.raises(UserError, match=message):
        check_options(opts)


@pytest.mark.parametrize("argv, message", [
    (["--keep-neighbours", "-1"], "--keep-neighbours must be a whole number of at least 0"),
    (["--method", "esd-x", "--keep-misaligned"], "--keep-misaligned: --method esd-x has no retain term"),
])
def test_bad_input_is_one_line(erase_refuses, tmp_path, capsys, argv, message):
    model = tiny_pipeline("sd", tmp_path / "sd")
    capsys.readouterr()
    erase_refuses(model, argv, message)


def test_too_few_retain_images_for_the_widened_prompts_is_refused(tmp_path):
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star", "a red heart"], n_retain=3,
                           keep_misaligned=True, keep_neighbours=1)
    with pytest.raises(UserError, match="--n-retain 3 draws fewer retain images than the up to 4 prompts"):
        check_options(EraseOptions(recipe=recipe, out=tmp_path / "o"))


def test_a_contrastive_salun_mask_spares_the_widened_retain_set(tmp_path):
    from erase.diffusion.saliency import make_mask

    model = tiny_pipeline("sd", tmp_path / "sd")
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star"], n_forget=2, n_retain=4,
                           batch_size=2, gen_steps=2, mask_contrast=10.0, keep_misaligned=True)
    mask = make_mask(recipe, tmp_path / "m.safetensors", model=str(model), work_dir=tmp_path / "w")
    assert mask.meta["retain_prompts"] == ["a blue star", "a red square"]


def test_a_recipe_file_value_is_checked(tmp_path):
    from erase.diffusion.recipes import load_recipe

    f = tmp_path / "r.json"
    f.write_text(json.dumps({"name": "r", "forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
                             "retain_prompts": ["a blue star"], "keep_misaligned": "yes"}))
    with pytest.raises(UserError, match="keep_misaligned.*not true or false"):
        load_recipe(str(f))
    f.write_text(json.dumps({"name": "r", "forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
                             "retain_prompts": ["a blue star"], "keep_neighbours": 3}))
    assert load_recipe(str(f)).keep_neighbours == 3
    f.write_text(json.dumps({"name": "r", "forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
                             "retain_prompts": ["a blue star"], "keep_neighbours": None}))
    with pytest.raises(UserError, match="--keep-neighbours must be a whole number of at least 0, got null"):
        load_recipe(str(f))


@pytest.mark.parametrize("command, out", [("erase", "o"), ("mask", "m.safetensors")])
def test_the_ddpm_path_refuses_them(tmp_path, capsys, command, out):
    from erase.cli import main
    from erase.toy import PIPELINES

    for argv in (["--keep-neighbours", "2"], ["--keep-misaligned"]):
        assert main([command, "--model", str(PIPELINES / "toy-ddpm"), "--forget-class", "circle", *argv,
                     "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and argv[0] in err[0] and "DDPM" in err[0], err
        assert not (tmp_path / out).exists()


def _mask_recipe(tmp_path, **extra) -> str:
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"name": "r", "forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
                             "retain_prompts": ["a blue star"], "n_forget": 2, "n_retain": 4, "batch_size": 2,
                             "gen_steps": 2, **extra}))
    return str(f)


def test_salun_mask_takes_the_options_for_its_contrastive_mask(tmp_path):
    from erase.cli import main
    from erase.core.mask import Mask

    model = tiny_pipeline("sd", tmp_path / "sd")
    out = tmp_path / "m.safetensors"
    assert main(["mask", "--model", str(model), "--concept", _mask_recipe(tmp_path), "--mask-contrast", "10",
                 "--keep-misaligned", "--work-dir", str(tmp_path / "w"), "--out", str(out)]) == 0
    meta = Mask.load(out).meta
    assert meta["retain_prompts"] == ["a blue star", "a red square"]
    assert meta["retain_neighbours"] == {"misaligned_added": ["a red square"], "neighbours": [], "keep_neighbours": 0,
                                         "keep_misaligned": True}


@pytest.mark.parametrize("argv, extra, message", [
    (["--keep-neighbours", "1"], {}, "--keep-neighbours widens the retain images a contrastive mask spares, and "
                                     "this mask draws none"),
    (["--keep-misaligned", "--keep-neighbours", "1", "--mask-contrast", "10"], {"n_retain": 2},
     "the recipe's n_retain 2 draws fewer retain images than the up to 3 prompts"),
    (["--keep-misaligned", "--mask-contrast", "10"], {"retain_dataset": {"path": "x", "label_prompts": {"0": "a blue star"}}},
     "--keep-misaligned draws retain images from prompts, and the recipe's retain_dataset gives"),
    (["--keep-misaligned", "--mask-contrast", "10"], {"keep_neighbours": 1, "retain_dataset": {"path": "x", "label_prompts": {"0": "a blue star"}}},
     "--keep-misaligned draws retain images from prompts"),
])
def test_salun_mask_refuses_them_where_nothing_is_widened(tmp_path, capsys, argv, extra, message):
    from erase.cli import main

    model = tiny_pipeline("sd", tmp_path / "sd")
    capsys.readouterr()
    out = tmp_path / "m.safetensors"
    assert main(["mask", "--model", str(model), "--concept", _mask_recipe(tmp_path, **extra), *argv,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_salun_mask_widens_by_the_nearest_retain_prompts(tmp_path):
    from erase.cli import main
    from erase.core.mask import Mask

    model = tiny_pipeline("sd", tmp_path / "sd")
    out = tmp_path / "m.safetensors"
    recipe = _mask_recipe(tmp_path, retain_prompts=["a blue star", "a red heart"])
    assert main(["mask", "--model", str(model), "--concept", recipe, "--mask-contrast", "10", "--keep-neighbours",
                 "1", "--work-dir", str(tmp_path / "w"), "--out", str(out)]) == 0
    near = Mask.load(out).meta["retain_neighbours"]
    assert near["keep_neighbours"] == 1 and len(near["neighbours"]) == 1
    assert near["neighbours"][0] in ("a blue star", "a red heart")


def test_salun_mask_refuses_keep_misaligned_without_a_misaligned_prompt(tmp_path, capsys):
    from erase.cli import main

    model = tiny_pipeline("sd", tmp_path / "sd")
    capsys.readouterr()
    assert main(["mask", "--model", str(model), "--forget-prompt", "a red circle", "--retain-prompt", "a blue star",
                 "--mask-contrast", "10", "--keep-misaligned", "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no misaligned prompt to keep" in err[0], err


def test_a_recipe_files_own_setting_leaves_a_plain_mask_alone(tmp_path):
    from erase.cli import main

    model = tiny_pipeline("sd", tmp_path / "sd")
    out = tmp_path / "m.safetensors"
    assert main(["mask", "--model", str(model), "--concept", _mask_recipe(tmp_path, keep_neighbours=1),
                 "--work-dir", str(tmp_path / "w"), "--out", str(out)]) == 0
    assert out.exists()
