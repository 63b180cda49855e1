"""``--timestep-density``: which timesteps a flow-matching erasure draws. ``uniform`` keeps every draw it made
before; ``logit-normal`` is SD3's training density (Esser et al., 2024) under the scheduler's shift, truncated to
``--forget-t-max``'s window; a UNet family or the DDPM path refuses it in one line."""
import json

import pytest
import torch

from erase.cli import main
from erase.core.mask import Mask
from erase.diffusion.flow import FlowMatchTraining
from erase.diffusion.job import erase
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline


def test_uniform_draws_what_randint_draws():
    a = FlowMatchTraining(1000).draw(64, torch.Generator().manual_seed(3), 0, 1000)
    b = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    a = FlowMatchTraining(1000).draw(64, torch.Generator().manual_seed(3), 0, 600)
    assert torch.equal(a, torch.randint(0, 600, (64,), generator=torch.Generator().manual_seed(3)))


def test_logit_normal_is_sd3s_density():
    """Unshifted: s = sigmoid(u), u ~ N(0, 1): median 0.5, and P(s < 0.25) = Phi(logit 0.25) = 0.136 (uniform:
    0.25); the extremes are rare (P(s > 0.95) = 0.0016)."""
    t = FlowMatchTraining(1000, "logit-normal").draw(200_000, torch.Generator().manual_seed(0))
    s = (t.double() + 0.5) / 1000
    assert t.min() >= 0 and t.max() <= 999 and t.dtype == torch.long
    assert abs(s.median().item() - 0.5) < 0.005
    assert abs((s < 0.25).double().mean().item() - 0.1367) < 0.004
    assert (s > 0.95).double().mean().item() < 0.003


def test_the_shift_moves_the_draws_to_higher_noise_as_diffusers_sd3_script_does():
    """Shift 3 (SD3 medium's scheduler): sigma = 3 s / (1 + 2 s), so the median noise level is 0.75."""
    t = FlowMatchTraining(1000, "logit-normal", shift=3.0).draw(100_000, torch.Generator().manual_seed(1))
    assert abs(((t.double() + 0.5) / 1000).median().item() - 0.75) < 0.005


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_a_window_truncates_the_density(shift):
    """--forget-t-max 300: every draw lies in [0, 300), distributed as the density conditioned on the window."""
    sched = FlowMatchTraining(1000, "logit-normal", shift=shift)
    t = sched.draw(100_000, torch.Generator().manual_seed(2), 0, 300)
    assert t.min() >= 0 and t.max() <= 299
    whole = sched.draw(400_000, torch.Generator().manual_seed(4))
    inside = whole[whole < 300]
    for cut in (100, 200):  # the conditional distribution function at two points, each way
        assert abs((t < cut).double().mean().item() - (inside < cut).double().mean().item()) < 0.01
    lo = FlowMatchTraining(1000, "logit-normal").draw(1000, torch.Generator().manual_seed(5), 900, 1000)
    assert lo.min() >= 900 and lo.max() <= 999


def _opts(model, out, **kw):
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star"], n_forget=4, n_retain=4,
                           batch_size=2, gen_steps=2, lr=1e-3, timestep_density=kw.pop("density", "uniform"))
    return EraseOptions(recipe=recipe, out=out, model=str(model), steps=2, progress=False,
                        work_dir=out.parent / f"{out.name}.work", **kw)


def test_an_sd3_erasure_under_logit_normal_is_recorded_and_moves_other_weights(tmp_path):
    model = tiny_pipeline("sd3", tmp_path / "sd3")
    plain = erase(_opts(model, tmp_path / "uniform"))
    ln = erase(_opts(model, tmp_path / "ln", density="logit-normal"))
    assert plain["family"] == ln["family"] == "sd3"
    meta = Mask.load(tmp_path / "ln" / "mask.safetensors").meta
    assert meta["timestep_density"] == "logit-normal"
    assert "timestep_density" not in Mask.load(tmp_path / "uniform" / "mask.safetensors").meta
    assert json.loads((tmp_path / "ln" / "recipe.json").read_text())["recipe"]["timestep_density"] == "logit-normal"
    card = (tmp_path / "ln" / "README.md").read_text()
    assert "drawn logit-normal" in card and "drawn logit-normal" not in (tmp_path / "uniform" / "README.md").read_text()
    from safetensors.torch import load_file

    a = load_file(tmp_path / "uniform" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "ln" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # other timesteps, another erasure


@pytest.mark.parametrize("command", ["erase", "mask"])
def test_a_unet_family_refuses_logit_normal_in_one_line_before_drawing(tmp_path, capsys, command):
    model = tiny_pipeline("sd", tmp_path / "sd")
    capsys.readouterr()  # (the fixture's own writing)
    out = tmp_path / "runs" / ("o" if command == "erase" else "m.safetensors")
    out.parent.mkdir()
    argv = [command, "--model", str(model), "--concept", "circle", "--timestep-density", "logit-normal",
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--timestep-density logit-normal" in err[0] and "Stable Diffusion 1.x/2.x" in err[0], err
    assert not any(out.parent.iterdir())


def test_another_method_on_a_unet_family_and_a_bad_recipe_value_are_refused(tmp_path, capsys):
    model = tiny_pipeline("sd", tmp_path / "sd")
    capsys.readouterr()
    assert main(["erase", "--model", str(model), "--concept", "circle", "--method", "esd-x", "--timestep-density",
                 "logit-normal", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--timestep-density logit-normal: Stable Diffusion 1.x/2.x" in err[0], err
    from erase.core.errors import UserError

    with pytest.raises(UserError, match="not a timestep density"):
        custom_recipe(["a red circle"], ["a red square"], [], timestep_density="normal")


@pytest.mark.parametrize("command", ["erase", "mask"])
def test_the_ddpm_path_refuses_it(tmp_path, capsys, command):
    from erase.toy import PIPELINES

    out = tmp_path / ("o" if command == "erase" else "m.safetensors")
    assert main([command, "--model", str(PIPELINES / "toy-ddpm"), "--forget-class", "circle", "--timestep-density",
                 "logit-normal", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--timestep-density" in err[0] and "DDPM" in err[0], err
    assert not any(tmp_path.iterdir())


def test_checking_a_recipe_imports_no_torch():
    """A recipe is checked before the heavy imports (a bad option costs no torch import)."""
    import subprocess
    import sys

    code = ("import sys; from erase.diffusion.recipes import custom_recipe; "
            "custom_recipe(['a red circle'], ['a red square'], [], timestep_density='logit-normal', "
            "lr_schedule='cosine', lr_warmup_steps=2); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
