"""A new concept classifier is one ``ClassifierKind`` and one ``register_classifier`` call: classifiers defined here,
in the test folder, run through ``salun audit concept`` and decide its figures; ``--classifier auto`` picks the
first registered one that fits the recipe; the registry refuses a taken name."""
import json

import pytest
import torch

import erase.audit.concept_classifiers as C
from erase.cli import main
from erase.core.errors import UserError
from erase.diffusion.recipes import load_recipe
from erase.toy import TOY_SD

RECIPE = {"name": "red-things", "description": "a test concept for the classifier registry",
          "forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
          "retain_prompts": ["a blue star", "a green heart"]}


def _constant(label: int) -> C.ClassifierKind:
    """A classifier that reads every image as ``label`` (-1: none of the labels)."""
    return C.ClassifierKind(name=f"test-always-{label}", description="constant",
                            make=lambda ctx: (lambda images: torch.full((len(images),), label)))


@pytest.fixture
def registered(monkeypatch):
    kinds = [_constant(0), _constant(-1)]
    for k in kinds:
        monkeypatch.setitem(C.CLASSIFIERS, k.name, k)  # taken off again after the test
    return kinds


def _audit(tmp_path, classifier: str, out: str) -> dict:
    recipe = tmp_path / "red-things.json"
    recipe.write_text(json.dumps(RECIPE))
    assert main(["audit", "concept", "--model", str(TOY_SD), "--concept", str(recipe), "--classifier", classifier,
                 "--per-class", "1", "--steps", "2", "--out", str(tmp_path / out)]) == 0
    return json.loads((tmp_path / out / "report.json").read_text())


def test_a_classifier_defined_outside_the_package_decides_the_audit(registered, tmp_path):
    every_forget = _audit(tmp_path, "test-always-0", "a")  # every image read as the forget label
    m = every_forget["models"]["toy-sd"]
    assert every_forget["classifier"] == "test-always-0"
    assert m["UA"] == 0.0 and m["retain_acc"] == 0.0 and m["per_class_acc"]["a red circle"] == 1.0
    none = _audit(tmp_path, "test-always--1", "b")  # every image read as none of the labels
    m = none["models"]["toy-sd"]
    assert m["UA"] == 1.0 and m["retain_acc"] == 0.0


def test_auto_takes_the_first_registered_classifier_that_fits(monkeypatch):
    assert C.classifier_kind("auto", load_recipe("church")).name == "resnet50"  # an Imagenette recipe
    assert C.classifier_kind("auto", load_recipe("nudity")).name == "clip"
    only_nudity = C.ClassifierKind(name="test-nudity-only", description="-", make=lambda ctx: None,
                                   fits=lambda r: r.name == "nudity")
    monkeypatch.setattr(C, "CLASSIFIERS", {"test-nudity-only": only_nudity})
    assert C.classifier_kind("auto", load_recipe("nudity")) is only_nudity
    with pytest.raises(UserError, match="no concept classifier fits 'church'"):
        C.classifier_kind("auto", load_recipe("church"))


def test_the_registry_refuses_a_taken_name_and_auto(registered):
    with pytest.raises(ValueError, match="already registered"):
        C.register_classifier(_constant(0))
    C.register_classifier(registered[0])  # the same one again: no-op
    with pytest.raises(ValueError, match="'auto'"):
        C.register_classifier(C.ClassifierKind(name="auto", description="-", make=lambda ctx: None))
    with pytest.raises(UserError, match="unknown --classifier 'nope'"):
        C.classifier_kind("nope", load_recipe("church"))
    with pytest.raises(UserError, match="knows ImageNet classes"):
        C.RESNET50.check(load_recipe("nudity"), None)
    with pytest.raises(UserError, match="needs --clip-weights"):
        C.CLIP.check(load_recipe("nudity"), None)
