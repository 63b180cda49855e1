"""Concept audits with real classifier architectures (random weights: no downloads here)."""
import pytest
import torch
import torchvision
from safetensors.torch import save_file

import erase.audit.classifiers as C
from erase.audit.concept import audit_prompt_concept
from erase.cli import main
from erase.core.errors import UserError
from erase.toy import TOY_SD


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet50.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet50(weights=None).state_dict().items()}, path)
    return path


def test_imagenette_audit_with_a_local_resnet50(tmp_path, resnet_file, monkeypatch):
    # The real loading path (a local state dict) ...
    clf = C.ImageNetResNet50(resnet_file)
    assert clf.predict(torch.zeros(2, 3, 32, 32)).shape == (2,)
    # ... and the UA arithmetic, with predictions that say: every image shows what it asks for,
    # except the forget class (church), whose images show a parachute.
    labels = list(C.IMAGENETTE_TO_IMAGENET)
    per_class = 2
    truth = [C.IMAGENETTE_TO_IMAGENET[c] for c in labels for _ in range(per_class)]
    truth = [C.IMAGENETTE_TO_IMAGENET["parachute"] if t == C.IMAGENETTE_TO_IMAGENET["church"] else t for t in truth]
    monkeypatch.setattr(C.ImageNetResNet50, "predict", lambda self, images, batch_size=32: torch.tensor(truth))
    report = audit_prompt_concept([str(TOY_SD)], "church", tmp_path / "a", classifier_weights=str(resnet_file),
                                  per_class=per_class, steps=2)
    m = report["models"]["toy-sd"]
    assert report["classifier"] == "resnet50" and report["forget_label"] == "church"
    assert m["UA"] == 1.0 and m["retain_acc"] == 1.0 and m["per_class_acc"]["church"] == 0.0
    assert (tmp_path / "a" / "grid.png").exists() and "| toy-sd | 100.0% | 100.0% |" in \
        (tmp_path / "a" / "report.md").read_text()


def test_clip_zero_shot_and_score_with_random_weights():
    clip = C.ClipModel("ViT-B-32", pretrained=None)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    pred = clip.zero_shot(images, ["a red circle", "a blue star"])
    assert pred.shape == (3,) and set(pred.tolist()) <= {0, 1}
    assert 0 <= clip.clip_score(images, ["a", "b", "c"]) <= 100


def test_bad_classifier_input(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, bad)
    with pytest.raises(UserError, match="not a torchvision ResNet-50"):
        C.ImageNetResNet50(bad)
    with pytest.raises(UserError, match="do not exist"):
        C.ImageNetResNet50(tmp_path / "none.pth")
    assert main(["audit", "concept", "--model", str(TOY_SD), "--concept", "nudity", "--classifier", "resnet50",
                 "--out", str(tmp_path / "x")]) == 2
    assert "Imagenette" in capsys.readouterr().err


def test_clip_audit_with_reference_fid(tmp_path):
    from erase.toy import shapes as S

    ref = tmp_path / "ref"
    ref.mkdir()
    data = S.draw_set(8, seed=5, shapes=["square", "star"])
    from PIL import Image

    for i, im in enumerate(data.images):
        Image.fromarray(im).save(ref / f"{i}.png")
    report = audit_prompt_concept([str(TOY_SD)], "circle", tmp_path / "a", classifier="clip", clip_weights="random",
                                  reference=ref, per_class=1, steps=2, fid_features="clip")
    m = report["models"]["toy-sd"]
    assert report["labels"][0] == "a red circle" and len(report["labels"]) == 26
    assert 0 <= m["UA"] <= 1 and m["clip_score"] >= 0 and m["fid_retain"] >= 0
    # Inception features from a local state dict (random weights here: structure only)
    inc = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in
               torchvision.models.inception_v3(weights=None, init_weights=False).state_dict().items()}, inc)
    report = audit_prompt_concept([str(TOY_SD)], "circle", tmp_path / "c", classifier="clip", clip_weights="random",
                                  reference=ref, per_class=1, steps=2, inception_weights=str(inc))
    assert "Inception" in report["fid_features"] and report["models"]["toy-sd"]["fid_retain"] >= 0
    with pytest.raises(UserError, match="does not exist"):
        audit_prompt_concept([str(TOY_SD)], "circle", tmp_path / "d", classifier="clip", clip_weights="random",
                             reference=tmp_path / "missing", per_class=1, steps=2)
    with pytest.raises(UserError, match="--clip-weights"):
        audit_prompt_concept([str(TOY_SD)], "circle", tmp_path / "b", classifier="clip")
