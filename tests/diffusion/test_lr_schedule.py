"""``--lr-schedule`` / ``--lr-warmup-steps``: the rate of every update follows diffusers' schedules, a resumed
run equals its straight run bit for bit, constant runs keep what they did, and bad values are one-line errors."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from erase.core.lr_schedule import lr_factor
from erase.diffusion.job import erase
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline


def test_factors_follow_diffusers_schedules():
    from diffusers.optimization import get_scheduler

    for name in ("constant", "linear", "cosine"):
        for warmup in (0, 3):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            sched = get_scheduler(name if warmup == 0 or name != "constant" else "constant_with_warmup", opt,
                                  num_warmup_steps=warmup, num_training_steps=10)
            for step in range(10):
                assert lr_factor(name, step, 10, warmup) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12), \
                    (name, warmup, step)
                opt.step()
                sched.step()
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5) and lr_factor("linear", 10, 10) == 0.0
    assert math.isclose(lr_factor("constant", 7, 10), 1.0)


def _opts(model, out, **kw):
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star"], n_forget=4, n_retain=4,
                           batch_size=2, gen_steps=2, lr=1e-3, lr_schedule=kw.pop("schedule", "constant"),
                           lr_warmup_steps=kw.pop("warmup", 0))
    kw.setdefault("work_dir", out.parent / f"{out.name}.work")
    return EraseOptions(recipe=recipe, out=out, model=str(model), steps=4, progress=False, checkpoint_every=2, **kw)


def _unet(path):
    return load_file(path / "unet" / "diffusion_pytorch_model.safetensors")


def test_a_cosine_run_logs_its_rates_resumes_exactly_and_differs_from_constant(tmp_path, interrupt_at):
    from erase.core.masked_optim import MaskedParameters

    model = tiny_pipeline("sd", tmp_path / "sd")
    erase(_opts(model, tmp_path / "constant"))
    erase(_opts(model, tmp_path / "straight", schedule="cosine", warmup=1))
    log = [json.loads(line) for line in (tmp_path / "straight" / "training_log.jsonl").read_text().splitlines()]
    assert [round(e["lr"], 12) for e in log] == [round(1e-3 * lr_factor("cosine", s, 4, 1), 12) for s in range(4)]
    assert "lr" not in (tmp_path / "constant" / "training_log.jsonl").read_text()
    disarm = interrupt_at(MaskedParameters, "step", 3)  # after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        erase(_opts(model, tmp_path / "resumed", schedule="cosine", warmup=1))
    disarm()
    erase(_opts(model, tmp_path / "resumed", schedule="cosine", warmup=1, resume=True))
    a, b, c = _unet(tmp_path / "straight"), _unet(tmp_path / "resumed"), _unet(tmp_path / "constant")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    card = (tmp_path / "straight" / "README.md").read_text()
    assert "Adam lr 0.001 (cosine schedule after 1 warm-up steps)" in card
    recipe = json.loads((tmp_path / "straight" / "recipe.json").read_text())["recipe"]
    assert recipe["lr_schedule"] == "cosine" and recipe["lr_warmup_steps"] == 1


def test_a_resume_under_another_schedule_is_refused(tmp_path, interrupt_at):
    from erase.core.errors import UserError
    from erase.core.masked_optim import MaskedParameters

    model = tiny_pipeline("sd", tmp_path / "sd")
    disarm = interrupt_at(MaskedParameters, "step", 3)
    with pytest.raises(KeyboardInterrupt):
        erase(_opts(model, tmp_path / "o", schedule="cosine"))
    disarm()
    with pytest.raises(UserError, match="settings|resume|restart"):
        erase(_opts(model, tmp_path / "o", schedule="linear", resume=True))


@pytest.mark.parametrize("argv, message", [
    (["--lr-warmup-steps", "-1"], "--lr-warmup-steps must be a whole number of at least 0"),
    (["--method", "uce", "--lr-schedule", "cosine"], "--lr-schedule: --method uce is closed-form"),
    (["--steps", "3", "--lr-warmup-steps", "3"], "--lr-warmup-steps 3: the run has 3 steps"),
])
def test_bad_schedules_are_one_line_errors(erase_refuses, tmp_path, capsys, argv, message):
    model = tiny_pipeline("sd", tmp_path / "sd")
    capsys.readouterr()  # (the fixture's own writing)
    erase_refuses(model, argv, message)


def test_the_ddpm_path_and_a_bad_recipe_value_refuse_it(tmp_path, capsys):
    from erase.cli import main
    from erase.core.errors import UserError
    from erase.toy import PIPELINES

    assert main(["erase", "--model", str(PIPELINES / "toy-ddpm"), "--forget-class", "circle", "--lr-schedule",
                 "cosine", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr-schedule" in err[0] and "DDPM" in err[0], err
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="not a learning-rate schedule"):
        custom_recipe(["a red circle"], ["a red square"], [], lr_schedule="step")
