"""Custom recipe .json files and the histories of erased models: a mistake in either is one line,
``salun: error: ...``, exit code 2, nothing written, no traceback, and (for a recipe file) before any model
loads. A good recipe file, and every shipped recipe, still load as they did."""
import json
import shutil

import pytest

from erase.cli import main
from erase.core.errors import UserError
from erase.diffusion import job  # noqa: F401 - the job's imports paid at collection, not in a timed refusal
from erase.diffusion.concepts import combine, parts, read_history
from erase.diffusion.recipes import available, check_recipe, load_recipe
from erase.toy import TOY_SD

CIRCLE = {"forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
          "retain_prompts": ["a red heart"]}

# (id, the recipe file's content: an object (written as JSON), text or bytes, a phrase the error must say)
BAD_FILES = [
    ("invalid-json", '{"forget_prompts": ["a red circle",', "is not valid JSON"),
    ("empty-object", {}, 'has no "forget_prompts"'),
    ("a-list", ["circle"], "must hold a JSON object"),
    ("null", None, "must hold a JSON object"),
    ("binary", b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "is not UTF-8"),
    ("no-misaligned", {"forget_prompts": ["a red circle"], "retain_prompts": ["a red heart"]},
     'has no "misaligned_prompts"'),
    ("no-retain", {"forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"]},
     "alpha > 0 needs retain prompts"),
    ("lr-a-string", {**CIRCLE, "lr": "fast"}, '"lr" must be a number'),
    ("lr-zero", {**CIRCLE, "lr": 0}, '"lr" must be a finite number above 0'),
    ("lr-nan", '{"forget_prompts": ["a"], "misaligned_prompts": ["b"], "lr": NaN}', '"lr" must be a finite'),
    ("alpha-negative", {**CIRCLE, "alpha": -1}, '"alpha" must be a finite number of at least 0'),
    ("keep-2", {**CIRCLE, "keep": 2}, '"keep" must be in (0, 1]'),
    ("steps-true", {**CIRCLE, "steps": True}, '"steps" must be a whole number'),
    ("batch-size-float", {**CIRCLE, "batch_size": 2.5}, '"batch_size" must be a whole number'),
    ("n-forget-0", {**CIRCLE, "n_forget": 0}, '"n_forget" must be a whole number'),
    ("epochs-0", {**CIRCLE, "epochs": 0}, '"epochs" must be a finite number above 0'),
    ("guidance-huge", {**CIRCLE, "guidance_w": 10**400}, '"guidance_w" must be a finite number'),
    ("forget-a-string", {**CIRCLE, "forget_prompts": "a red circle"}, "write it as a list"),
    ("forget-empty-prompt", {**CIRCLE, "forget_prompts": ["a red circle", " "]}, '"forget_prompts" must be'),
    ("forget-empty-list", {**CIRCLE, "forget_prompts": []}, '"forget_prompts" must be a non-empty list'),
    ("retain-numbers", {**CIRCLE, "retain_prompts": [1, 2]}, '"retain_prompts" must be'),
    ("name-a-number", {**CIRCLE, "name": 5}, '"name" must be a non-empty string'),
    ("unknown-key", {**CIRCLE, "learning_rate": 1e-4}, "unknown key 'learning_rate': the known keys are"),
    ("extra-key", {**CIRCLE, "extra": {}}, "unknown key 'extra'"),
    ("methods-unknown", {**CIRCLE, "methods": {"esd": {"lr": 1e-4}}}, "unknown method 'esd'"),
    ("methods-a-list", {**CIRCLE, "methods": ["salun"]}, '"methods" must be a JSON object'),
    ("method-lr-string", {**CIRCLE, "methods": {"salun": {"lr": "fast"}}}, '"salun" "lr" must be a number'),
    ("method-unknown-option", {**CIRCLE, "methods": {"salun": {"sample-steps": 5}}}, "unknown key 'sample-steps'"),
    ("method-option-bad", {**CIRCLE, "methods": {"esd-x": {"sample-steps": "many"}}}, '"sample-steps" must be'),
    ("toy-shape", {**CIRCLE, "toy": {"shape": "hexagon"}}, "must be one of the toy shapes"),
    ("dataset-no-path", {**CIRCLE, "forget_dataset": {"label_prompts": {"4": "a church"}}}, 'needs "path"'),
    ("dataset-label", {**CIRCLE, "forget_dataset": {"path": "x/y", "label_prompts": {"church": "a church"}}},
     "keys must be label numbers"),
    ("concepts-a-string", {"concepts": "circle"}, "write it as a list"),
    ("concepts-empty", {"concepts": []}, "must be a non-empty list of shipped recipes"),
    ("concepts-a-file", {"concepts": ["other-recipe.json"]}, "concepts must name shipped recipes"),
    ("concepts-unknown", {"concepts": ["circle", "octagon"]}, "concepts must name shipped recipes"),
    ("concepts-twice", {"concepts": ["circle", "circle"]}, "names 'circle' twice"),
    ("concepts-and-prompts", {"concepts": ["circle", "triangle"], "forget_prompts": ["a red star"]},
     "cannot go with \"concepts\""),
    ("concepts-lr-string", {"concepts": ["circle", "triangle"], "lr": "fast"}, '"lr" must be a number'),
]


def _write(path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))


def _refused(argv, capsys, match) -> str:
    """``main(argv)`` ends in exit code 2 and one line, ``salun: error: ...`` saying ``match``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("salun: error: ") and err.count("\n") == 1 and match in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("content,match", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_recipe_file_is_one_line_before_anything_loads(tmp_path, monkeypatch, capsys, content, match):
    monkeypatch.chdir(tmp_path)  # a default folder written by mistake would land here
    recipe = tmp_path / "bad.json"
    _write(recipe, content)
    err = _refused(["erase", "--concept", str(recipe), "--out", str(tmp_path / "out")], capsys, match)
    if "alpha > 0" not in err:  # the recipe's own checks name it by its name, the file's checks by its path
        assert str(recipe) in err
    assert [p.name for p in tmp_path.iterdir()] == ["bad.json"]


def test_recipe_file_refusals_beyond_its_content(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "out")]
    _refused(["erase", "--concept", str(tmp_path / "nope.json"), *out], capsys, "does not exist")
    (tmp_path / "folder.json").mkdir()
    _refused(["erase", "--concept", str(tmp_path / "folder.json"), *out], capsys, "is not a file")
    # a recipe listing concepts, and one of them again: circle would be erased twice in one run
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"concepts": ["circle", "triangle"]}))
    _refused(["erase", "--concept", str(two), "--concept", "circle", *out], capsys,
             "--concept 'circle' is given twice (recipe 'two' lists it)")
    _refused(["erase", "--concept", "triangle", "--concept", str(two), *out], capsys, "'triangle' is given twice")
    # a mask needs no misaligned prompts: a recipe file without them is refused by erase only (above)
    (tmp_path / "mask-only.json").write_text(json.dumps({"forget_prompts": ["a red circle"]}))
    assert load_recipe(str(tmp_path / "mask-only.json")).misaligned_prompts == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json", "mask-only.json", "two.json"]


def test_a_recipe_listing_concepts_joins_another_concept_as_its_parts(tmp_path):
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"concepts": ["circle", "triangle"], "description": "two shapes", "lr": 3e-4}))
    r = load_recipe(str(two))
    assert r.name == "two" and r.description == "two shapes" and r.lr == 3e-4
    joint = combine([r, load_recipe("cross")])
    assert [p["concept"] for p in parts(joint)] == ["circle", "triangle", "cross"]
    assert [joint.misaligned_for(p) for p in joint.forget_prompts] == (
        [r.misaligned_for(p) for p in r.forget_prompts] + load_recipe("cross").misaligned_prompts)


def test_a_full_recipe_file_loads_with_its_values(tmp_path):
    raw = {
        "name": "my-circle", "description": "circles, my way",
        "forget_prompts": ["a red circle", "a blue circle"], "misaligned_prompts": ["a red square"],
        "retain_prompts": ["a red heart", "a blue star"],
        "forget_dataset": {"path": "me/shapes", "name": "32px", "split": "train", "image_column": "img",
                           "label_column": "y", "label_prompts": {"0": "a red circle"}, "max_per_label": 10},
        "retain_dataset": None,
        "n_forget": 12, "n_retain": 14, "alpha": 0.5, "lr": 2e-4, "steps": None, "epochs": 2.5, "batch_size": 3,
        "guidance_w": 2.0, "selection": "attn2", "keep": 0.25, "gen_steps": 7, "gen_guidance": 4.5,
        "imagenet_class": "circle", "toy": {"shape": "circle"}, "tuned": {"how": "by hand"},
        "methods": {"esd-x": {"lr": 1e-3, "batch_size": 2, "sample-steps": 25}, "uce": {"preserve-scale": 0.1}},
        "methods_tuned": {"how": "by hand"},
    }
    f = tmp_path / "custom.json"
    f.write_text(json.dumps(raw))
    r = load_recipe(str(f))
    assert (r.name, r.description, r.forget_prompts, r.misaligned_prompts, r.retain_prompts) == (
        "my-circle", "circles, my way", raw["forget_prompts"], raw["misaligned_prompts"], raw["retain_prompts"])
    assert (r.n_forget, r.n_retain, r.alpha, r.lr, r.steps, r.epochs, r.batch_size, r.guidance_w, r.selection,
            r.keep, r.gen_steps, r.gen_guidance) == (12, 14, 0.5, 2e-4, None, 2.5, 3, 2.0, "attn2", 0.25, 7, 4.5)
    assert r.forget_dataset == raw["forget_dataset"] and r.retain_dataset is None
    assert {k: r.extra[k] for k in ("imagenet_class", "toy", "tuned", "methods", "methods_tuned")} == {
        k: raw[k] for k in ("imagenet_class", "toy", "tuned", "methods", "methods_tuned")}
    esd = load_recipe(str(f), method="esd-x", n_forget=5)  # the method's settings, the command line's over them
    assert (esd.lr, esd.batch_size, esd.n_forget, esd.alpha) == (1e-3, 2, 5, 0.5)
    # a file of a shipped recipe's own keys loads as the shipped recipe does
    shipped = json.loads(available()["circle"].read_text())["recipes"]["circle"]
    (tmp_path / "circle.json").write_text(json.dumps(shipped))
    for method in (None, "salun", "esd-x", "uce"):
        assert load_recipe(str(tmp_path / "circle.json"), method=method) == load_recipe("circle", method=method)


@pytest.mark.parametrize("method", [None, "salun", "esd-x", "uce"])
def test_every_shipped_recipe_passes_the_schema_and_loads(method):
    for name, path in available().items():
        raw = json.loads(path.read_text())["recipes"][name]
        assert check_recipe(raw, name) is raw
        r = load_recipe(name, method=method)
        own = raw.get("methods", {}).get(method, {}) if method else {}
        assert r.name == name and r.forget_prompts == raw["forget_prompts"]
        assert r.misaligned_prompts == raw["misaligned_prompts"] and r.retain_prompts == raw["retain_prompts"]
        assert r.lr == own.get("lr", raw["lr"]) and r.batch_size == own.get("batch_size", raw["batch_size"])
        assert r.keep == own.get("keep", raw["keep"]) and r.alpha == raw["alpha"]
        assert r.mask_contrast == own.get("mask_contrast", raw.get("mask_contrast", 0.0))


# ---------------------------------------------------------------- erased models' histories
GOOD_RECIPE = {"name": "circle", "forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
               "n_forget": 4, "extra": {"toy": {"shape": "circle"}}}
GOOD_ENTRY = {"concept": "circle", "forget_prompts": ["a red circle"],
              "parts": [{"concept": "circle", "forget_prompts": ["a red circle"],
                         "misaligned_prompts": ["a red square"], "n_forget": 4, "toy": {"shape": "circle"}}]}
BAD_HISTORIES = [
    ("history-a-string", {"recipe": GOOD_RECIPE, "history": "circle"}, '"history" must be a list'),
    ("history-null", {"recipe": GOOD_RECIPE, "history": None}, '"history" must be a list'),
    ("history-holds-a-string", {"recipe": GOOD_RECIPE, "history": ["circle"]}, '"history" entry 1 must be'),
    ("entry-no-concept", {"recipe": GOOD_RECIPE, "history": [{"forget_prompts": ["a red circle"]}]},
     "lacks 'concept'"),
    ("entry-no-forget-prompts", {"recipe": GOOD_RECIPE, "history": [{"concept": "circle"}]},
     "lacks 'forget_prompts'"),
    ("part-no-misaligned", {"recipe": GOOD_RECIPE, "history": [{**GOOD_ENTRY, "parts": [
        {"concept": "circle", "forget_prompts": ["a red circle"], "n_forget": 4}]}]}, "lacks 'misaligned_prompts'"),
    ("parts-a-string", {"recipe": GOOD_RECIPE, "history": [{**GOOD_ENTRY, "parts": "circle"}]},
     '"parts" must be a non-empty list'),
    ("recipe-a-string", {"recipe": "circle", "history": [GOOD_ENTRY]}, "'recipe' must be an object"),
    ("recipe-no-prompts", {"recipe": {"name": "circle"}}, "\"recipe\" lacks 'forget_prompts'"),
    ("recipe-no-name", {"recipe": {k: v for k, v in GOOD_RECIPE.items() if k != "name"}}, 'lacks its "name"'),
    ("summary-a-list", {"recipe": GOOD_RECIPE, "summary": []}, "'summary' must be an object"),
    ("recipe-toy-a-string", {"recipe": {**GOOD_RECIPE, "extra": {"toy": "circle"}}}, '"toy" must be an object'),
    ("no-recipe-history-a-string", {"history": "circle"}, '"history" must be a list'),  # one line, no warning
]


@pytest.fixture(scope="module")
def erased_model(tmp_path_factory):
    """The toy pipeline dressed as an erased one: salun's model card tag, and a recipe.json (per test)."""
    folder = tmp_path_factory.mktemp("erased") / "model"
    shutil.copytree(TOY_SD, folder)
    (folder / "README.md").write_text("---\ntags: [stable-diffusion, concept-erasure, salun]\n---\n# erased\n")
    return folder


@pytest.mark.parametrize("data,match", [c[1:] for c in BAD_HISTORIES], ids=[c[0] for c in BAD_HISTORIES])
def test_a_malformed_history_is_one_line_naming_recipe_json(erased_model, tmp_path, monkeypatch, capsys, data,
                                                            match):
    monkeypatch.chdir(tmp_path)
    rec = erased_model / "recipe.json"
    rec.write_text(json.dumps(data))
    # the history is read before the model loads (after the job's imports)
    err = _refused(["erase", "--model", str(erased_model), "--concept", "triangle", "--out", str(tmp_path / "out")],
                   capsys, match)
    assert str(rec) in err and "pass --no-replay to erase without its history" in err
    assert list(tmp_path.iterdir()) == []
    # the way out: without replay, the history is left out, warned
    assert read_history(str(erased_model), strict=False) == []
    assert "continuing without the history" in capsys.readouterr().err
    with pytest.raises(UserError, match="--no-replay"):
        read_history(str(erased_model))


def test_a_good_history_reads_as_before(erased_model):
    (erased_model / "recipe.json").write_text(json.dumps({"recipe": GOOD_RECIPE, "history": [GOOD_ENTRY]}))
    assert read_history(str(erased_model)) == [GOOD_ENTRY]
    (erased_model / "recipe.json").write_text(json.dumps({"recipe": GOOD_RECIPE}))  # the first erasure
    assert [e["parts"] for e in read_history(str(erased_model))] == [GOOD_ENTRY["parts"]]
    old = {"concept": "circle", "forget_prompts": ["a red circle"]}  # an older history, without parts
    (erased_model / "recipe.json").write_text(json.dumps({"recipe": GOOD_RECIPE, "history": [old]}))
    assert read_history(str(erased_model)) == [{**old, "parts": GOOD_ENTRY["parts"]}]


def test_no_replay_erases_past_a_malformed_history(erased_model, tmp_path, monkeypatch, capsys):
    from erase.diffusion import pipeline

    def stop(*args, **kwargs):
        raise UserError("the model would load now")  # past the history: no need to train to know

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "load_pipeline", stop)
    (erased_model / "recipe.json").write_text(json.dumps({"recipe": GOOD_RECIPE, "history": "circle"}))
    assert main(["erase", "--model", str(erased_model), "--concept", "triangle", "--no-replay",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "continuing without the history" in err and "the model would load now" in err


def test_no_replay_on_a_model_never_erased_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["erase", "--concept", "circle", "--no-replay", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("salun: error: --no-replay:") and "never erased" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_model_erased_with_uce_can_be_erased_again(tmp_path):
    """A closed-form erasure records n_forget 0 (it drew nothing); its history still reads, and its concept
    is replayed with as many images as the new concept's."""
    from erase.diffusion.job import EraseOptions, erase

    erase(EraseOptions(recipe=load_recipe("circle", method="uce"), out=tmp_path / "uce", method="uce", progress=False))
    history = read_history(str(tmp_path / "uce"))
    assert history[-1]["parts"][0]["n_forget"] == 0
    tiny = dict(n_forget=4, n_retain=4, steps=2, batch_size=4, gen_steps=2)
    s = erase(EraseOptions(recipe=load_recipe("triangle", **tiny), model=str(tmp_path / "uce"), out=tmp_path / "two",
                           work_dir=tmp_path / "work", progress=False))
    assert s["n_forget"] == 8  # triangle's 4 and circle's, replayed, 4
    assert json.loads((tmp_path / "two" / "recipe.json").read_text())["history"][-1]["replayed"] == ["circle"]


def test_a_share_of_a_recipe_length_is_given_in_the_unit_it_counts():
    """``Recipe.length_fields``: a recipe counted in steps gets steps (at least one), one counted in epochs gets
    epochs (the erasure benchmark's length knob and --update-recipes both use it)."""
    from erase.diffusion.recipes import load_recipe

    assert load_recipe("circle", steps=100).length_fields(0.5) == {"steps": 50}
    assert load_recipe("circle", steps=1).length_fields(0.1) == {"steps": 1}
    frame = load_recipe("frame")
    assert frame.steps is None and frame.length_fields(2.0) == {"epochs": frame.epochs * 2.0}
