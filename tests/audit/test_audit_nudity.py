import json

import numpy as np
import pytest
from PIL import Image

import erase.audit.nudity as nud
from erase.core.errors import UserError
from erase.toy import TOY_SD

CSV = """prompt,categories,hard,inappropriate_percentage,nudity_percentage,lexica_url,sd_safety_percentage,prompt_toxicity,sd_seed,sd_guidance_scale,sd_image_width,sd_image_height,sd_model
a red circle,"sexual, shocking",1,50.0,30.0,u,10,0.1,1234,7,512,512,1.4
a blue star,violence,0,20.0,0.0,u,0,0.1,99,9,512,512,1.4
a green heart,sexual,0,20.0,0.0,u,0,0.1,,,512,512,1.4
"""


@pytest.fixture
def i2p_csv(tmp_path):
    p = tmp_path / "i2p.csv"
    p.write_text(CSV)
    return p


def test_parse_and_filter(i2p_csv, tmp_path):
    rows = nud.load_prompts(str(i2p_csv))
    assert [r["prompt"] for r in rows] == ["a red circle", "a blue star", "a green heart"]
    assert rows[0]["seed"] == 1234 and rows[0]["guidance"] == 7.0 and rows[0]["categories"] == ["sexual", "shocking"]
    assert rows[2]["seed"] == 2 and rows[2]["guidance"] == 7.5  # missing seed/guidance: index, SD's default
    sexual = nud.load_prompts(str(i2p_csv), ["sexual"])
    assert [r["index"] for r in sexual] == [0, 2]
    parquet = tmp_path / "i2p.parquet"
    import pandas as pd

    pd.read_csv(i2p_csv).to_parquet(parquet)
    assert nud.load_prompts(str(parquet), ["violence"])[0]["prompt"] == "a blue star"
    bad = tmp_path / "bad.csv"
    bad.write_text("text,categories\nx,sexual\n")
    with pytest.raises(UserError, match="no 'prompt', 'sd_seed', 'sd_guidance_scale' columns"):
        nud.load_prompts(str(bad))
    with pytest.raises(UserError, match="no prompts left"):
        nud.load_prompts(str(i2p_csv), ["harassment"])


def test_counting_with_injected_detections(tmp_path):
    fake = {"a": [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.9}, {"class": "FACE_FEMALE", "score": 0.99},
                  {"class": "BELLY_EXPOSED", "score": 0.59}],
            "b": [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.61}, {"class": "FEET_EXPOSED", "score": 0.7}],
            "c": []}
    r = nud.count_nudity(["a", "b", "c"], detect=lambda p: fake[p])
    assert r["per_class"]["FEMALE_BREAST_EXPOSED"] == 2 and r["per_class"]["FEET_EXPOSED"] == 1
    assert r["per_class"]["BELLY_EXPOSED"] == 0  # below the 0.6 threshold
    assert r["total"] == 3 and r["images_with_nudity"] == 2 and r["share_with_nudity"] == pytest.approx(2 / 3)
    assert nud.count_nudity(["a"], detect=lambda p: fake[p], threshold=0.5)["per_class"]["BELLY_EXPOSED"] == 1


def test_real_nudenet_on_an_image(tmp_path):
    img = tmp_path / "shape.png"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(img)
    r = nud.count_nudity([img])  # NudeNet's shipped ONNX detector, offline
    assert r["images"] == 1 and r["total"] == 0 and set(r["per_class"]) == set(nud.EXPOSED_CLASSES)


def test_end_to_end_on_the_toy_model_resumes_and_renders(i2p_csv, tmp_path, monkeypatch):
    out = tmp_path / "audit"
    fake = lambda p: [{"class": "BUTTOCKS_EXPOSED", "score": 0.8}] if "00000_" in p else []  # noqa: E731
    report = nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, categories=["sexual"], n_per_prompt=2, steps=3,
                              detect=fake)
    m = report["models"]["toy-sd"]
    assert m["images"] == 4 and m["per_class"]["BUTTOCKS_EXPOSED"] == 2 and m["images_with_nudity"] == 2
    assert sorted(p.name for p in (out / "images" / "toy-sd").iterdir()) == \
        ["00000_0.png", "00000_1.png", "00002_0.png", "00002_1.png", "stamp.json"]
    stamp = json.loads((out / "images" / "toy-sd" / "stamp.json").read_text())
    assert stamp["unet_fingerprint"] == m["unet_fingerprint"] and stamp["steps"] == 3 and stamp["n_per_prompt"] == 2
    assert json.loads((out / "report.json").read_text())["prompts"]["n_prompts"] == 2
    assert "BUTTOCKS_EXPOSED" in (out / "report.md").read_text()
    assert Image.open(out / "nudity_bars.png").size[0] > 100
    # resume: remove one image; only that one is generated again
    (out / "images" / "toy-sd" / "00002_1.png").unlink()
    calls = []
    real = nud.generate_prompts

    def spy(pipe, rows, folder, *a, **k):
        before = set(folder.glob("*.png"))
        res = real(pipe, rows, folder, *a, **k)
        calls.append(set(folder.glob("*.png")) - before)
        return res

    monkeypatch.setattr(nud, "generate_prompts", spy)
    nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, categories=["sexual"], n_per_prompt=2, steps=3, detect=fake)
    assert [{p.name for p in c} for c in calls] == [{"00002_1.png"}]


def test_hub_prompts_without_network_name_the_fix(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="CSV or parquet"):
        nud.load_prompts("i2p")
