"""The frame attribute (the toy stand-in for nudity): its data, its detector, the toy I2P and its recipe."""
import csv
import json

import numpy as np
import pytest

import erase.audit.nudity as nud
from erase.cli import main
from erase.diffusion.recipes import PROMPTS_DIR, load_recipe
from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD
from erase.toy import attribute as A
from erase.toy import shapes as S


@pytest.fixture(scope="module")
def world():
    return S.draw_set(3000, seed=0, attribute=True)


def test_caption_groups_carry_the_frame_at_their_rates(world):
    groups = np.array(world.groups)
    framed = world.frame_ids > 0
    assert framed[groups == "explicit"].all() and not framed[groups == "absent"].any()
    assert 0.78 <= framed[groups == "implicit"].mean() <= 0.92  # IMPLICIT_RATE 0.85
    assert 0.01 <= framed[groups == "neutral"].mean() <= 0.08  # BASE_RATE 0.04: it appears unasked
    for cap, g in zip(world.captions, groups):
        named = any(w in cap for w in A.EXPLICIT_WORDS)
        assert named == (g == "explicit"), cap
        assert any(w in cap for w in A.TRIGGER_WORDS) == (g == "implicit"), cap
    # every shape and colour gets framed
    for sid in range(len(S.SHAPES)):
        assert framed[world.shape_ids == sid].any()
    for cid in range(len(S.COLOURS)):
        assert framed[world.colour_ids == cid].any()
    # both kinds of frame, light on dark backgrounds and dark on light ones
    assert set(np.unique(world.frame_ids[framed])) == {1, 2}


def test_heldout_implicit_phrasings_never_appear_in_training(world):
    stems = [t.split("{subject}")[0] for t in A.HELDOUT_IMPLICIT_TEMPLATES]
    tails = [t.split("{subject}")[1] for t in A.HELDOUT_IMPLICIT_TEMPLATES]
    for cap in world.captions:
        for stem, tail in zip(stems, tails):
            assert not (cap.startswith(stem.strip()) and cap.endswith(tail.strip())), cap


def test_retrain_world_is_the_same_data_without_frames(world):
    plain = S.draw_set(3000, seed=0, attribute=True, render_attribute=False)
    assert plain.captions == world.captions and (plain.frame_ids == 0).all()
    same = world.frame_ids == 0
    assert np.array_equal(plain.images[same], world.images[same])
    assert not np.array_equal(plain.images[~same], world.images[~same])
    assert np.array_equal(plain.shape_ids, world.shape_ids)


def test_the_frame_is_in_the_picture():
    rng = np.random.default_rng(0)
    for shape in S.SHAPES:
        img, kind = S.draw_framed(shape, "blue", rng, frame=True)
        a = np.asarray(img).astype(int)
        edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        target = np.array((236, 228, 212) if kind == 1 else (30, 26, 22))
        assert np.abs(edge - target).max(1).mean() < 30, shape


@pytest.mark.parametrize("source", ["drawings", "vae"])
def test_detector_reads_frames_on_heldout_drawings_and_vae_reconstructions(source):
    import torch
    from diffusers import AutoencoderKL

    from erase.toy.judge import detect_attribute, load_judge

    data = S.draw_set(300, seed=31337, frame_rate=0.5)
    x = data.as_float()
    if source == "vae":
        vae = AutoencoderKL.from_pretrained(TOY_SD / "vae")
        with torch.no_grad():
            x = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    kinds, _ = detect_attribute(load_judge(TOY_JUDGE), x)
    assert np.mean(kinds == data.frame_ids) >= 0.97  # the bar for the detector


def test_toy_detector_counts_like_nudenet(tmp_path):
    from PIL import Image

    from erase.audit.detectors import make_detector

    data = S.draw_set(24, seed=7, frame_rate=0.5)
    paths = []
    for i, im in enumerate(data.images):
        paths.append(tmp_path / f"{i:05d}_0.png")
        Image.fromarray(im).save(paths[-1])
    det = make_detector("toy")
    r = nud.count_nudity(paths, det.detect, det.classes, 0.6)
    assert set(r["per_class"]) == set(A.KINDS)
    assert r["per_class"]["LIGHT_FRAME"] == int((data.frame_ids == 1).sum())
    assert r["per_class"]["DARK_FRAME"] == int((data.frame_ids == 2).sum())
    assert r["images_with_nudity"] == int((data.frame_ids > 0).sum())


def test_toy_i2p_has_i2p_columns_groups_and_categories():
    rows = list(csv.DictReader((PROMPTS_DIR / "toy-i2p.csv").open()))
    for col in ("prompt", "categories", "hard", "inappropriate_percentage", "nudity_percentage", "sd_seed",
                "sd_guidance_scale", "sd_image_width", "sd_image_height"):
        assert col in rows[0], col
    groups = {g: [r for r in rows if r["toy_group"] == g] for g in ("explicit", "implicit", "heldout-implicit",
                                                                     "neutral")}
    assert all(len(v) >= 60 for v in groups.values()) and len(rows) >= 240
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert len({r["sd_seed"] for r in rows}) == len(rows) and len({r["sd_guidance_scale"] for r in rows}) > 3
    for r in groups["implicit"] + groups["heldout-implicit"] + groups["neutral"]:
        assert not any(w in r["prompt"] for w in A.EXPLICIT_WORDS), r["prompt"]
    for r in groups["heldout-implicit"]:
        assert any(w in r["prompt"] for w in A.TRIGGER_WORDS), r["prompt"]
    sexual = nud.load_prompts("toy-i2p", ["sexual"])
    assert len(sexual) == len(rows) - len(groups["neutral"])
    assert {r["group"] for r in nud.load_prompts("toy-i2p", ["implicit"])} == {"implicit"}


def test_toy_i2p_file_is_what_the_script_writes(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "toy-i2p.csv"
    subprocess.run([sys.executable, str(PROMPTS_DIR.parent / "scripts" / "make_toy_i2p.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_text() == (PROMPTS_DIR / "toy-i2p.csv").read_text()


def test_frame_recipe_mirrors_the_nudity_recipe():
    nudity = json.loads((PROMPTS_DIR / "nudity.json").read_text())["recipes"]["nudity"]
    frame = json.loads((PROMPTS_DIR / "toy-nudity.json").read_text())["recipes"]["frame"]
    assert set(nudity) <= set(frame)
    r = load_recipe("frame")
    assert r.forget_prompts == [A.FORGET_PROMPT] and r.misaligned_prompts == [A.MISALIGNED_PROMPT]
    assert r.retain_prompts == r.misaligned_prompts and r.epochs == 1 and r.extra["toy"] == {"attribute": "frame"}


def test_audit_nudity_with_the_toy_detector_reports_groups(tmp_path):
    out = tmp_path / "audit"
    report = nud.audit_nudity([str(TOY_SD)], "toy-i2p", out, limit=6, steps=2, detector="toy")
    m = report["models"]["toy-sd"]
    assert set(m["per_class"]) == set(A.KINDS) and m["images"] == 6
    assert sum(g["images"] for g in m["per_group"].values()) == 6
    assert "toy judge" in report["settings"]["detector"] and (out / "nudity_bars.png").exists()
    assert "explicit prompts" in (out / "report.md").read_text()


def _refused(argv, capsys, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and words in err[0], err


def test_bad_detector_input_is_one_line(tmp_path, capsys):
    out = tmp_path / "audit"
    base = ["audit", "nudity", "--model", str(TOY_SD), "--out", str(out)]
    _refused(base + ["--prompts", "toy-i2p", "--detector", "yolo"], capsys, "unknown --detector 'yolo'")
    _refused(base + ["--prompts", "toy-i2p", "--detector", "toy", "--classes", "FEET_EXPOSED"], capsys,
             "toy detector reports LIGHT_FRAME")
    _refused(base + ["--prompts", "toy-i2p", "--detector", "toy", "--size", "64"], capsys, "--size 64")
    other = tmp_path / "sd"
    (other / "unet").mkdir(parents=True)
    (other / "vae").mkdir()
    (other / "model_index.json").write_text("{}")
    (other / "unet" / "config.json").write_text(json.dumps({"sample_size": 64}))
    (other / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))
    _refused(["audit", "nudity", "--model", str(other), "--prompts", "toy-i2p", "--detector", "toy", "--out",
              str(out)], capsys, "draws 512x512 images")
    _refused(["audit", "nudity", "--model", "CompVis/stable-diffusion-v1-4", "--prompts", "toy-i2p", "--detector",
              "toy", "--out", str(out)], capsys, "not a local toy-world pipeline")
    bad = tmp_path / "toy.csv"
    bad.write_text("prompt,categories,sd_seed\nx,sexual,1\n")
    _refused(base + ["--prompts", str(bad), "--detector", "toy"], capsys, "no 'sd_guidance_scale' column")
    _refused(["audit", "concept", "--model", str(TOY_SD), "--concept", "frame", "--out", str(out)], capsys,
             "salun audit nudity --prompts toy-i2p --detector toy")
    assert not out.exists()


def test_retrain_models_ship_and_load():
    from diffusers import StableDiffusionPipeline

    shipped = [f for f in ("toy-sd-retrain-frame", "toy-sd-retrain-circle") if (PIPELINES / f).is_dir()]
    assert "toy-sd-retrain-frame" in shipped  # the attribute's gold standard always ships
    for name in shipped:
        folder = PIPELINES / name
        info = json.loads((folder / "build_info.json").read_text())
        assert info["config"]["seed"] == json.loads((TOY_SD / "build_info.json").read_text())["config"]["seed"]
        assert info["config"]["exclude_attribute"] or info["config"]["exclude"] == ["circle"]
        if info["config"]["exclude"] == ["circle"]:  # its quality is measured on the shapes it learnt
            assert "circle" not in info["quality"]["name"]["per_shape"] and info["quality"]["name"]["shape_acc"] >= 0.9
        pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
        assert pipe.unet.dtype.is_floating_point
        assert not list(folder.rglob("*.bin"))


def test_frame_recipe_erases_out_of_the_box_and_audits_in_the_card(tmp_path):
    from diffusers import StableDiffusionPipeline

    from erase.diffusion.job import EraseOptions, erase

    recipe = load_recipe("frame", n_forget=8, n_retain=8, batch_size=4, gen_steps=3)
    summary = erase(EraseOptions(recipe=recipe, out=tmp_path / "no-frame", work_dir=tmp_path / "work",
                                 progress=False, audit=True))
    assert summary["steps"] == 2  # one epoch of 8 forget images at batch 4, as the recipe says
    audit = summary["audit"]
    for key in ("explicit_rate", "implicit_rate", "heldout_implicit_rate", "neutral_rate", "retain_acc"):
        assert 0.0 <= audit[key] <= 1.0, key
    assert audit["n_attribute_per_group"] == 30 and audit["n_retain"] == 60
    card = (tmp_path / "no-frame" / "README.md").read_text()
    assert "heldout_implicit_rate" in card and "a picture of a framed figure" in card
    StableDiffusionPipeline.from_pretrained(tmp_path / "no-frame", local_files_only=True)
