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
    # the best over the forget prompts: a second forget prompt brings its own nearest forward
    assert nearest(fam, None, ["a red cross", "a red circle"], cands, 4, 8)[:2] == ["a red star", "a blue star"]
    assert len(nearest(fam, None, ["a red cross"], cands, 10, 8)) == 4


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
    assert near["misaligned_added"] == ["a red square"] and len(near["neighbours"]) == 1
    assert near["neighbours"][0] in ("a blue star", "a green triangle", "a red heart", "a red square")
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


def test_the_ddpm_path_refuses_them(tmp_path, capsys):
    from erase.cli import main
    from erase.toy import PIPELINES

    for argv in (["--keep-neighbours", "2"], ["--keep-misaligned"]):
        assert main(["erase", "--model", str(PIPELINES / "toy-ddpm"), "--forget-class", "circle", *argv,
                     "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and argv[0] in err[0] and "DDPM" in err[0], err
        assert not (tmp_path / "o").exists()
