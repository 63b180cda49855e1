"""Every ``salun erase`` method option checked up front, no silent NaN model, no dead ends.

Refusals go through the CLI: exit 2, one line on stderr, no traceback, nothing written; those that need
no model are said before any model loads.
"""
import importlib.util
import json
import os
import re
from types import SimpleNamespace

import pytest
import torch

import erase.diffusion.job as job
import erase.diffusion.data as D
import erase.diffusion.pipeline as pipeline
from erase.cli import main
from erase.core.checkpoints import TrainingDiverged
from erase.core.errors import UserError
from erase.core.workdir import MARK
from erase.diffusion.methods import METHODS
from erase.diffusion.methods.uce import UCE, _inverse

TINY = ["--n-forget", "4", "--n-retain", "4", "--batch-size", "4", "--steps", "2"]
XFORMERS = importlib.util.find_spec("xformers") is not None


def _lines(err: str) -> list[str]:
    """stderr without the progress bars of model loading."""
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not re.search(r"\| *\d+/\d+ \[", ln)]


def _refused(capsys, argv, *fragments, rc=2):
    code = main(argv)
    full = capsys.readouterr().err
    assert code == rc, (argv, full)
    assert "Traceback" not in full
    lines = _lines(full)
    assert len(lines) == 1 and lines[0].startswith("salun: error:"), full
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a pipeline is loaded."""
    def load(*a, **k):
        raise AssertionError("a model was loaded for a refusal that needs none")

    monkeypatch.setattr(pipeline, "load_pipeline", load)


BAD = [
    (["--method", "uce", "--erase-scale", "nan"], "--erase-scale must be a finite number above 0, got nan"),
    (["--method", "uce", "--erase-scale", "inf"], "--erase-scale must be a finite number above 0, got inf"),
    (["--method", "uce", "--erase-scale", "0"], "--erase-scale must be a finite number above 0"),
    (["--method", "uce", "--uce-lambda", "-1"], "--uce-lambda must be a finite number of at least 0"),
    (["--method", "uce", "--uce-lambda", "nan"], "--uce-lambda must be a finite number of at least 0"),
    (["--method", "uce", "--preserve-scale", "-1"], "--preserve-scale must be a finite number of at least 0"),
    (["--method", "uce", "--preserve-scale", "inf"], "--preserve-scale must be a finite number of at least 0"),
    (["--method", "esd-x", "--negative-guidance", "nan"], "--negative-guidance must be a finite number, got nan"),
    (["--method", "esd-x", "--negative-guidance", "inf"], "--negative-guidance must be a finite number, got inf"),
    (["--method", "esd-x", "--sample-steps", "0"], "--sample-steps must be a whole number in [1, 1000], got 0"),
    (["--method", "esd-u", "--sample-steps", "-5"], "--sample-steps must be a whole number in [1, 1000]"),
    (["--method", "esd-x", "--sample-steps", "100000"], "--sample-steps must be a whole number in [1, 1000]"),
    (["--method", "esd-x", "--sample-guidance", "-1"], "--sample-guidance must be a finite number of at least 0"),
    (["--method", "esd-u", "--sample-guidance", "nan"], "--sample-guidance must be a finite number of at least 0"),
    (["--method", "esd-x", "--no-mask"], "--no-mask: --method esd-x has no saliency mask"),
    (["--method", "esd-u", "--no-mask"], "--no-mask: --method esd-u has no saliency mask"),
    (["--method", "uce", "--no-mask"], "--no-mask: --method uce has no saliency mask"),
    (["--method", "fmn", "--no-mask"], "--no-mask: --method fmn has no saliency mask"),
    (["--method", "uce", "--resume"], "--resume: --method uce is closed-form"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_method_options_are_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, no_model, extra,
                                                                message):
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["erase", "--concept", "circle", "--out", "out", *extra], message)
    assert os.listdir(tmp_path) == []  # no output, no work folder, no lock file


def test_a_recipes_method_settings_are_checked_too(tmp_path, capsys, monkeypatch, no_model):
    from erase.diffusion.options import EraseOptions, check_options
    from erase.diffusion.recipes import custom_recipe

    monkeypatch.chdir(tmp_path)
    prompts = {"forget_prompts": ["a red circle"], "misaligned_prompts": ["a red square"],
               "retain_prompts": ["a blue star"]}
    (tmp_path / "a.json").write_text(json.dumps({**prompts, "methods": {"esd-x": {"sample-steps": 0}}}))
    (tmp_path / "b.json").write_text(json.dumps({**prompts, "methods": {"uce": {"erase-scale": -2}}}))
    _refused(capsys, ["erase", "--concept", "a.json", "--method", "esd-x", "--out", "out"],
             "sample-steps", "must be a whole number in [1, 1000], got 0")
    _refused(capsys, ["erase", "--concept", "b.json", "--method", "uce", "--out", "out"],
             "erase-scale", "must be a finite number above 0, got -2")
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json"]
    # a recipe made in code (no file to read) is checked by check_options, naming the recipe's setting
    rec = custom_recipe(["a red circle"], ["a red square"], ["a blue star"])
    rec.extra["methods"] = {"esd-x": {"sample-steps": 0}}
    with pytest.raises(UserError, match=r"the recipe's 'sample-steps' for esd-x must be a whole number in \[1, 1000\]"):
        check_options(EraseOptions(recipe=rec, out=tmp_path / "out", method="esd-x"))
    # the command line wins over the recipe: a good value given there is used, and nothing is refused
    check_options(EraseOptions(recipe=rec, out=tmp_path / "out", method="esd-x", method_options={"sample-steps": 4}))


def test_option_ranges_are_declared_on_every_method_option():
    """Each option of every method says what it takes, and its own default passes."""
    for m in METHODS.values():
        for key, opt in m.options.items():
            assert opt.check(opt.default, f"--{key}") == opt.default
            with pytest.raises(UserError, match=f"--{key} must be"):
                opt.check(float("nan"), f"--{key}")
    with pytest.raises(UserError, match="whole number"):
        METHODS["esd-x"].options["sample-steps"].check(2.5, "--sample-steps")
    with pytest.raises(UserError, match="whole number"):
        METHODS["esd-x"].options["sample-steps"].check(True, "--sample-steps")


@pytest.mark.skipif(XFORMERS, reason="the refusal is for machines without xformers")
def test_xformers_without_the_package_is_refused_up_front(tmp_path, capsys, monkeypatch, no_model):
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["erase", "--concept", "circle", "--out", "out", "--xformers"],
             "xformers is not installed", "gpu extra", 'pip install -e ".[gpu]"', "CUDA")
    assert os.listdir(tmp_path) == []


def test_many_sample_steps_warn_of_the_slowdown(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(job, "erase", lambda opts: {})  # the warning comes before the job; the job is not run
    assert main(["erase", "--concept", "circle", "--method", "esd-x", "--sample-steps", "400", "--out", "o"]) == 0
    lines = _lines(capsys.readouterr().err)
    assert lines == [("salun: warning: --sample-steps 400 is 8x the default 50: each training step takes roughly "
                      "8x as long")]
    assert main(["erase", "--concept", "circle", "--method", "esd-x", "--sample-steps", "200", "--out", "o"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_esd_refuses_more_sample_steps_than_the_models_schedule_has():
    ctx = SimpleNamespace(scheduler=SimpleNamespace(config=SimpleNamespace(num_train_timesteps=100)),
                          options={"negative-guidance": 1.0, "sample-steps": 500, "sample-guidance": 3.0},
                          frozen=None, bank=SimpleNamespace(null=None))
    with pytest.raises(UserError, match="--sample-steps 500: this model's noise schedule has 100 timesteps"):
        METHODS["esd-x"].bind(ctx)
    ctx.options["sample-steps"] = 100
    assert METHODS["esd-x"].bind(ctx).sample_steps == 100


def test_uce_singular_or_overflowing_system_is_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match="singular.*--uce-lambda 0.*positive --uce-lambda"):
        _inverse(torch.zeros(3, 3, dtype=torch.float64), 0.0)
    with pytest.raises(UserError, match="overflow"):
        _inverse(torch.full((3, 3), float("inf"), dtype=torch.float64), 0.1)
    assert torch.allclose(_inverse(2 * torch.eye(3, dtype=torch.float64), 0.1), 0.5 * torch.eye(3, dtype=torch.float64))
    # through the CLI: an erase scale that underflows with no regulariser leaves nothing to invert
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["erase", "--concept", "circle", "--method", "uce", "--erase-scale", "1e-320", "--preserve-scale",
                      "0", "--uce-lambda", "0", "--out", "o"], "singular", "positive --uce-lambda")
    assert os.listdir(tmp_path) == []  # the work folder it made is gone too


def test_a_non_finite_uce_edit_stops_with_exit_1_and_exports_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = UCE.edit

    def nan_edit(self, ctx):
        names = real(self, ctx)
        dict(ctx.unet.named_parameters())[names[-1]].data[0, 0] = float("nan")
        return names

    monkeypatch.setattr(UCE, "edit", nan_edit)
    err = _refused(capsys, ["erase", "--concept", "circle", "--method", "uce", "--lora-rank", "4", "--out", "o"],
                   "the uce edit made", "attn2.to_v.weight NaN or infinite", "nothing was written", rc=1)
    assert "lower --lr" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o-lora").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_export_refuses_non_finite_weights(tmp_path):
    from diffusers import StableDiffusionPipeline

    from erase.core.export import export_pipeline, lora_from_delta, write_lora
    from erase.toy import TOY_SD

    pipe = StableDiffusionPipeline.from_pretrained(TOY_SD)
    with torch.no_grad():
        pipe.unet.conv_in.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="conv_in.weight"):
        export_pipeline(pipe, pipe.unet, tmp_path / "out")
    assert os.listdir(tmp_path) == []
    base = {"a.weight": torch.zeros(4, 4)}
    with pytest.raises(TrainingDiverged, match="a.weight"):
        lora_from_delta(base, {"a.weight": torch.full((4, 4), float("nan"))}, 2)
    state = {"a.lora_A.weight": torch.full((2, 4), float("nan")), "a.lora_B.weight": torch.ones(4, 2)}
    with pytest.raises(TrainingDiverged, match="a.lora_A.weight"):
        write_lora(type(pipe), state, {"rank": 2}, tmp_path / "lora")
    assert os.listdir(tmp_path) == []


def test_lora_rank_bound():
    from erase.core.export import check_lora_rank, lora_rank_bound

    weights = {"lin.weight": torch.zeros(5, 3), "conv.weight": torch.zeros(64, 4, 3, 3), "lin.bias": torch.zeros(5),
               "norm.weight": torch.zeros(64)}
    assert lora_rank_bound(weights) == 36  # the conv: min(64 out, 4 x 3 x 3 in)
    check_lora_rank(36, weights)
    with pytest.raises(UserError, match="--lora-rank 37 is above 36"):
        check_lora_rank(37, weights)
    with pytest.raises(UserError, match="no Linear or Conv2d weight"):
        check_lora_rank(1, {"lin.bias": torch.zeros(5)})


def test_a_useless_lora_rank_is_refused_once_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawn = []
    monkeypatch.setattr(D, "generate_image_folder", lambda *a, **k: drawn.append(1))
    _refused(capsys, ["erase", "--concept", "circle", "--method", "uce", "--lora-rank", "100000", "--out", "o"],
             "--lora-rank 100000 is above 128", "give at most 128")
    _refused(capsys, ["erase", "--concept", "circle", *TINY, "--lora-rank", "100000", "--out", "o"],
             "--lora-rank 100000 is above 256")  # salun on every weight: the time embedding's 256 x 256
    assert not drawn and os.listdir(tmp_path) == []


def test_closed_form_after_an_interrupted_trained_run_takes_restart(tmp_path, capsys, monkeypatch):
    """An interrupted ``--method salun`` run left checkpoints in the default work folder of ``--out o``:
    ``--method uce --out o`` must offer a way on (``--restart``), not ``--resume``, which it refuses."""
    monkeypatch.chdir(tmp_path)
    work = tmp_path / ".o.work"
    (work / "checkpoint-3").mkdir(parents=True)
    (work / MARK).write_text(json.dumps({"out": str(tmp_path / "o")}) + "\n")
    argv = ["erase", "--concept", "circle", "--method", "uce", "--out", "o"]
    err = _refused(capsys, argv, "checkpoint-3", "--restart")
    assert "--resume" not in err
    assert (work / "checkpoint-3").is_dir() and not (tmp_path / "o").exists()
    assert main([*argv, "--restart"]) == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "unet").is_dir() and not work.exists()
