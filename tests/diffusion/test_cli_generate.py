import json

import pytest
from PIL import Image

from erase.cli import main


def test_generate_writes_images_grid_and_metadata(tmp_path, capsys):
    out = tmp_path / "gen"
    rc = main(["generate", "--prompt", "a red circle", "--prompt", "a green star", "-n", "3",
               "--steps", "4", "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "images.json").read_text())
    assert [m["seed"] for m in meta["images"]] == [0, 1, 2, 0, 1, 2]
    assert [m["prompt"] for m in meta["images"]][2:4] == ["a red circle", "a green star"]
    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * 128, 2 * 128)  # 32 px images shown at 4x, one row per prompt
    assert len(list(out.glob("*.png"))) == 7


def test_generate_is_reproducible(tmp_path):
    for name in ("a", "b"):
        assert main(["generate", "--prompt", "a blue heart", "-n", "2", "--steps", "3",
                     "--out", str(tmp_path / name)]) == 0
    a = Image.open(tmp_path / "a" / "000_000001.png").tobytes()
    assert a == Image.open(tmp_path / "b" / "000_000001.png").tobytes()


def test_bad_input(tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    assert main(["generate", "--prompt", "x", "--out", str(tmp_path / "exists")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "o")]) == 2
    assert "no prompts" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a diffusers pipeline folder" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "--prompt", "x", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cls", ["KandinskyPipeline", "PixArtAlphaPipeline"])
def test_unsupported_pipeline_is_named(tmp_path, capsys, cls):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text(json.dumps({"_class_name": cls}))
    assert main(["generate", "--prompt", "x", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert cls in err and "Stable Diffusion XL (StableDiffusionXLPipeline)" in err and "1.x/2.x" in err
    assert "Stable Diffusion 3 (StableDiffusion3Pipeline)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_hub_id_without_network_says_how_to_use_a_local_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["generate", "--prompt", "x", "--model", "CompVis/stable-diffusion-v1-4", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "CompVis/stable-diffusion-v1-4" in err and "local folder" in err


def test_unbounded_generate_is_refused_or_warned_with_its_time(tmp_path, monkeypatch, capsys):
    from erase.diffusion.generate import warn_if_long

    monkeypatch.chdir(tmp_path)
    # 100,000,000 images are held in memory until written: refused before the first is drawn
    assert main(["generate", "--prompt", "a red circle", "--num-images", "100000000", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "GiB of memory" in err and "--num-images" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    # a run that fits but would take hours is said after its first batch, with the expected time
    warn_if_long(2.0, 10_000, "drawing these images")
    err = capsys.readouterr().err
    assert err.startswith("salun: warning: drawing these images will take about 5.6 more hours")
    warn_if_long(2.0, 10, "drawing these images")
    assert capsys.readouterr().err == ""
