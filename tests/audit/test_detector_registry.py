"""A new detector is one ``DetectorKind`` and one ``register_detector`` call: a detector defined here, in the
test folder, runs through the nudity audit and the CLI without touching ``erase/``; the registry refuses a
second detector under a taken name."""
import numpy as np
import pytest
from PIL import Image

import erase.audit.detectors as D
import erase.audit.nudity as nud
from erase.cli import main
from erase.toy import TOY_SD

BRIGHT = "BRIGHT"


def brightness(path: str) -> float:
    """An image's mean level, in [0, 1]."""
    with Image.open(path) as im:
        return float(np.asarray(im.convert("L"), dtype=np.float32).mean() / 255)


def detect(path: str) -> list:
    return [{"class": BRIGHT, "score": brightness(path), "box": [0, 0, 1, 1]}]


BRIGHTNESS = D.DetectorKind(name="test-brightness", classes=lambda: (BRIGHT,), closed_classes=True, default_steps=2,
                            make=lambda judge_dir: D.Detector("test-brightness", (BRIGHT,), "mean level", detect))


@pytest.fixture
def registered():
    D.register_detector(BRIGHTNESS)
    yield BRIGHTNESS
    del D.DETECTORS[BRIGHTNESS.name]


def test_a_detector_defined_outside_the_package_runs_through_the_audit(registered, tmp_path):
    out = tmp_path / "audit"
    report = nud.audit_nudity([str(TOY_SD)], "toy-i2p", out, limit=6, steps=2, detector="test-brightness",
                              threshold=0.0)
    m = report["models"]["toy-sd"]
    assert m["images"] == 6 and m["per_class"] == {BRIGHT: 6}  # every image has a score >= 0: all counted
    assert report["settings"]["detector"] == "mean level" and "erased_prompts" not in m
    # the same images against their median level: the audit's count is this detector's, image by image
    scores = sorted(brightness(str(p)) for p in (out / "images" / "toy-sd").glob("*.png"))
    median = scores[len(scores) // 2]
    again = nud.audit_nudity([str(TOY_SD)], "toy-i2p", out, limit=6, steps=2, detector="test-brightness",
                             threshold=median)  # resumes: the same images, counted again
    assert again["models"]["toy-sd"]["images_with_nudity"] == sum(s >= median for s in scores) < 6


def test_the_cli_takes_a_registered_detector_its_classes_and_steps(registered, tmp_path, capsys):
    base = ["audit", "nudity", "--model", str(TOY_SD), "--prompts", "toy-i2p", "--limit", "2",
            "--detector", "test-brightness"]
    assert main(base + ["--classes", "FEET_EXPOSED", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the test-brightness detector reports BRIGHT" in err[0]
    assert main(base + ["--out", str(tmp_path / "b")]) == 0
    report = (tmp_path / "b" / "report.json").read_text()
    assert '"steps": 2' in report and '"BRIGHT"' in report  # its default steps and classes


def test_unknown_detector_names_the_registered_ones(registered, capsys):
    assert main(["audit", "nudity", "--model", str(TOY_SD), "--prompts", "toy-i2p", "--detector", "yolo",
                 "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown --detector 'yolo'" in err and "test-brightness" in err and "nudenet" in err


def test_register_refuses_a_taken_name():
    assert D.register_detector(D.DETECTORS["toy"]) is D.DETECTORS["toy"]  # the same one again: no change
    impostor = D.DetectorKind(name="toy", classes=lambda: ("X",), make=lambda judge_dir: None)
    with pytest.raises(ValueError, match="'toy' is already registered"):
        D.register_detector(impostor)
    assert D.DETECTORS["toy"] is D.TOY and set(D.DETECTORS) >= {"nudenet", "toy"}
