"""The Python API (``erase.erase_concept``): the documented example runs and erases; the API and ``salun erase``
give bit-identical weights for the same settings; bad settings are refused before anything is written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import erase
from erase.cli import main
from erase.core.errors import UserError
from erase.toy import TOY_JUDGE, TOY_SD

ROOT = Path(__file__).resolve().parents[2]
UNET = Path("unet") / "diffusion_pytorch_model.safetensors"
SMALL = dict(steps=3, n_forget=4, n_retain=4, batch_size=2, seed=0)


def _load():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(TOY_SD), torch_dtype=torch.float32)


def test_the_documented_examples_run_and_erase(tmp_path, monkeypatch):
    """docs/python-api.md's examples, as written and in order (the toy model's path made absolute), then the judge:
    the erased pipeline no longer draws circles and still draws the other shapes, and the audit API says so."""
    from erase.diffusion.toy_quality import erasure_rates

    page = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 2, "the erase example and the audit example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for code in blocks:
        exec(compile(code.replace('"pipelines/toy-sd"', repr(str(TOY_SD))), "docs/python-api.md", "exec"), scope)
    result = scope["result"]
    models = scope["audit"].report["models"]
    assert models["base"]["UA"] <= 0.2 and models["erased"]["UA"] >= 0.9, models  # the audit sees the erasure
    assert models["erased"]["path"] == "<in memory: erased>" and scope["audit"].path.exists()
    assert scope["frames"].report["models"]["toy-sd"]["share_with_nudity"] >= 0.5  # the base draws the frame
    assert (tmp_path / "erased-circle" / UNET).exists() and (tmp_path / "erased-circle" / "mask.safetensors").exists()
    saved, live = load_file(tmp_path / "erased-circle" / UNET), result.pipeline.unet.state_dict()
    assert all(torch.equal(saved[k], live[k]) for k in saved)  # what is saved is the pipeline in memory

    rates = erasure_rates(result.pipeline, TOY_JUDGE, "circle", per_colour=5, retain_per_pair=1)
    assert rates["forget_rate"] <= 0.1 and rates["retain_acc"] >= 0.8, rates


def test_the_api_and_the_command_line_give_the_same_weights(tmp_path):
    pipe = _load()
    result = erase.erase_concept(pipe, "circle", out=tmp_path / "api", progress=False, **SMALL)
    assert result.pipeline is pipe and result.path == tmp_path / "api" and result.mask is not None
    assert result.record["method"] == "salun" and result.record["steps"] == 3
    cli = ["erase", "--model", str(TOY_SD), "--concept", "circle", "--out", str(tmp_path / "cli")]
    for k, v in SMALL.items():
        cli += [f"--{k.replace('_', '-')}", str(v)]
    assert main(cli) == 0
    a, b = load_file(tmp_path / "api" / UNET), load_file(tmp_path / "cli" / UNET)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(TOY_SD / UNET)
    assert any(not torch.equal(a[k], base[k]) for k in a)  # it trained

    copy = result.save_pretrained(tmp_path / "copy")
    assert load_file(copy / UNET).keys() == a.keys()
    with pytest.raises((UserError, FileExistsError)):
        result.save_pretrained(tmp_path / "copy")  # exists: only with overwrite
    result.save_pretrained(tmp_path / "copy", overwrite=True)
    with pytest.raises(UserError):
        result.save_pretrained(TOY_SD / "inside")  # never inside the source model


def test_bad_settings_are_refused_before_anything_is_written(tmp_path):
    pipe = _load()
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    with pytest.raises(UserError, match="unknown setting 'stepz'.*steps"):
        erase.erase_concept(pipe, "circle", out=tmp_path / "a", stepz=3)
    with pytest.raises(UserError, match="--keep"):
        erase.erase_concept(pipe, "circle", out=tmp_path / "b", method="rl", keep=0.3)
    with pytest.raises(UserError, match="float32"):
        erase.erase_concept(_load().to(torch.float16), "circle", out=tmp_path / "c", **SMALL)
    assert not any(tmp_path.iterdir())
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
