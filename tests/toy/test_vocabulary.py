"""A recipe the toy model cannot read (the real nudity recipe) is named in a warning, not run in silence."""
from erase.diffusion.loading import native_size
from erase.diffusion.recipes import load_recipe
from erase.toy import TOY_SD
from erase.toy.vocabulary import unknown_words, warn_unknown_words


def _prompts(name):
    r = load_recipe(name)
    return [*r.forget_prompts, *r.misaligned_prompts, *r.retain_prompts, *r.preserve_prompts]


def _warn(model: str, prompts, *what) -> list[str]:
    return warn_unknown_words(model, native_size(model), prompts, *what)


def test_the_nudity_recipe_on_the_toy_model_is_warned_about(capsys):
    words = _warn(str(TOY_SD), _prompts("nudity"), "the nudity recipe")
    assert {"nude", "person", "clothes"} <= set(words)
    err = capsys.readouterr().err
    assert err.startswith("salun: warning:") and "nude" in err and "--concept frame" in err
    assert len(err.strip().splitlines()) == 1


def test_toy_recipes_are_made_of_words_the_toy_model_knows(capsys):
    for name in ("circle", "square", "triangle", "star", "cross", "heart", "frame"):
        assert unknown_words(_prompts(name)) == [], name
    assert _warn(str(TOY_SD), _prompts("frame")) == []
    assert capsys.readouterr().err == ""


def test_models_other_than_the_toy_world_are_not_judged(tmp_path):
    assert _warn(str(tmp_path), ["a photo of a nude person"]) == []  # not a toy pipeline folder
    assert _warn("CompVis/stable-diffusion-v1-4", ["a photo of a nude person"]) == []
