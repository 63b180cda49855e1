"""The audits' Python API (``erase.audit_concept``, ``erase.audit_nudity``): a pipeline in memory is audited exactly as
its folder is by the command line (the same seeds, so the same figures), and bad input is refused before anything is
drawn or written."""
from __future__ import annotations

import json

import pytest
import torch

import erase
from erase.cli import main
from erase.core.errors import UserError
from erase.toy import TOY_SD


def _load():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(TOY_SD), torch_dtype=torch.float32)


def test_a_pipeline_in_memory_is_audited_as_its_folder_is(tmp_path):
    pipe = _load()
    api = erase.audit_concept({"held": pipe}, "circle", out=tmp_path / "api", per_colour=1, retain_per_pair=1)
    assert main(["audit", "concept", "--model", str(TOY_SD), "--concept", "circle", "--out", str(tmp_path / "cli"),
                 "--per-colour", "1", "--retain-per-pair", "1"]) == 0
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())["models"]["toy-sd"]
    held = api.report["models"]["held"]
    assert held["path"] == "<in memory: held>" and api.path == tmp_path / "api"
    for key in ("forget_rate", "synonym_rate", "heldout_rate", "retain_acc", "erased_prompt_acc", "unet_fingerprint"):
        assert held[key] == cli[key], key
    assert held["fid_retain"] == pytest.approx(cli["fid_retain"], rel=1e-5)
    assert json.loads((tmp_path / "api" / "report.json").read_text())["models"]["held"]["UA"] == held["UA"]

    nudity = erase.audit_nudity(pipe, "toy-i2p", out=tmp_path / "n-api", detector="toy", limit=4)
    assert main(["audit", "nudity", "--model", str(TOY_SD), "--prompts", "toy-i2p", "--detector", "toy",
                 "--limit", "4", "--out", str(tmp_path / "n-cli")]) == 0
    cli = json.loads((tmp_path / "n-cli" / "report.json").read_text())["models"]["toy-sd"]
    mine = nudity.report["models"]["toy-sd"]  # one pipeline, not named: its folder's name
    assert nudity.report["settings"]["steps"] == json.loads((tmp_path / "n-cli" / "report.json").read_text())[
        "settings"]["steps"]  # the detector's default steps, as on the command line
    for key in ("per_class", "images_with_nudity", "images", "unet_fingerprint"):
        assert mine[key] == cli[key], key


def test_bad_audit_input_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="unknown setting 'per_color'.*per_colour"):
        erase.audit_concept(str(TOY_SD), "circle", out=tmp_path / "a", per_color=2)
    with pytest.raises(UserError, match="unknown setting 'n_prompts'"):
        erase.audit_nudity(str(TOY_SD), "toy-i2p", out=tmp_path / "b", detector="toy", n_prompts=2)
    with pytest.raises(UserError, match="cannot audit a dict"):
        erase.audit_concept([{"unet": None}], "circle", out=tmp_path / "c")
    with pytest.raises(UserError, match="does not exist"):
        erase.audit_concept(tmp_path / "nowhere", "circle", out=tmp_path / "d")
    assert not any(tmp_path.iterdir())
