"""ANT (issue 27's peer): the guidance of the concept kept on early steps and reversed on late ones, the
unconditional output held to the base's. Here: its targets by hand against a stand-in denoiser, ESD's sampler
unchanged by the shared trajectory code, the training log's terms, and the refusals."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMScheduler

from erase.cli import main
from erase.core.errors import UserError
from erase.diffusion.job import erase
from erase.diffusion.methods import METHODS, Batch, Context
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline


class _Bank:
    @staticmethod
    def null(n):
        return {"h": torch.zeros(n, 1)}


def _eps(scale):
    """A stand-in denoiser: e(x, t, c) = scale * x + c (a condition is one number per image)."""
    return lambda x, t, cond: scale * x + cond["h"].view(-1, 1, 1, 1)


def _bind(options):
    sched = DDPMScheduler(num_train_timesteps=1000)
    ant = METHODS["ant"]
    opts = {k: o.default for k, o in ant.options.items()} | options
    return ant.bind(Context(None, None, None, _Bank(), sched, None, opts, frozen=_eps(1.0))), sched


def test_the_targets_keep_the_guidance_early_and_reverse_it_late():
    ant, sched = _bind({"sample-steps": 10, "early-steps": 3, "sample-guidance": 0.0, "null-weight": 0.0})
    noise = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    cond = {"h": torch.full((1, 1), 2.0)}
    batch = Batch(torch.zeros_like(noise), noise, torch.tensor([530]), cond)
    # the frozen model's guidance direction is e0(c) - e0(null) = 2 everywhere: early target x + 2, late x - 2
    (xe, te), (xl, tl) = ant._sample(_eps(1.0), sched, batch, [530 % 3, 3 + 530 * 7 // 1000])
    trained = _eps(1.0)  # the base itself: early loss 0 (its guidance is kept), late loss (2 - -2)^2 = 16
    out = ant.losses(trained, sched, batch, None, 0.0)
    assert out["early"].item() == pytest.approx(0.0, abs=1e-10)
    assert out["forget"].item() == pytest.approx(16.0, rel=1e-5)
    assert out["loss"].item() == pytest.approx(16.0, rel=1e-5)  # late + 1.0 x early, null weight 0
    assert int(tl[0]) < int(te[0])  # the late step is less noisy


def test_the_null_terms_hold_the_unconditional_output():
    ant, sched = _bind({"sample-steps": 10, "early-steps": 3, "null-weight": 0.5, "early-weight": 2.0})
    noise = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    batch = Batch(torch.zeros_like(noise), noise, torch.tensor([10]), {"h": torch.zeros(1, 1)})
    out = ant.losses(_eps(1.5), sched, batch, None, 0.0)
    assert out["late_null"].item() > 0 and out["early_null"].item() > 0
    want = out["forget"] + 0.5 * out["late_null"] + 2.0 * (out["early"] + 0.5 * out["early_null"])
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)


def test_no_early_steps_is_a_late_reversal_alone():
    ant, sched = _bind({"sample-steps": 10, "early-steps": 0, "null-weight": 0.0})
    noise = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    out = ant.losses(_eps(1.0), sched, Batch(noise * 0, noise, torch.tensor([999]), {"h": torch.ones(1, 1)}), None, 0)
    assert "early" not in out and out["loss"].item() == pytest.approx(out["forget"].item())


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("ant") / "sd")


def test_an_ant_run_logs_its_terms_and_records_its_settings(sd, tmp_path):
    recipe = custom_recipe(["a red circle"], ["a red square"], [], n_forget=2, batch_size=1, gen_steps=2, lr=1e-3)
    erase(EraseOptions(recipe=recipe, out=tmp_path / "o", model=str(sd), method="ant", progress=False, steps=3,
                       method_options={"sample-steps": 4, "early-steps": 1, "heavy-hitters": 0}))
    log = [json.loads(line) for line in (tmp_path / "o" / "training_log.jsonl").read_text().splitlines()]
    assert {"early", "early_null", "late_null"} <= set(log[0])
    rec = json.loads((tmp_path / "o" / "recipe.json").read_text())
    assert rec["summary"]["method_options"]["early-steps"] == 1
    assert "Set You Straight" in (tmp_path / "o" / "README.md").read_text()


def test_refusals(tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match="give fewer than --sample-steps 10"):
        _bind({"sample-steps": 10, "early-steps": 10})
    monkeypatch.chdir(tmp_path)
    for extra, message in [(["--early-steps", "-1"], "--early-steps must be a whole number of at least 0"),
                           (["--null-weight", "nan"], "--null-weight must be"),
                           (["--method", "salun", "--early-steps", "3"], "--early-steps: an option of ant")]:
        argv = ["erase", "--concept", "circle", "--out", "o", *(["--method", "ant"] if "--method" not in extra else []),
                *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    from erase.toy import TOY_DDPM

    assert main(["erase", "--model", str(TOY_DDPM), "--forget-class", "circle", "--method", "ant", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "ant" in err and err.count("\n") == 1, err


def test_heavy_hitters_train_the_intersection_of_its_own_saliency_masks(sd, tmp_path):
    from safetensors.torch import load_file

    from erase.core.mask import Mask

    recipe = custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"], [], n_forget=2,
                           batch_size=1, gen_steps=2, lr=1e-3)
    summary = erase(EraseOptions(recipe=recipe, out=tmp_path / "o", model=str(sd), method="ant", progress=False,
                                 steps=3, method_options={"sample-steps": 4, "early-steps": 1, "heavy-hitters": 3}))
    mask = Mask.load(tmp_path / "o" / "mask.safetensors")
    views = mask.meta["per_view_kept"]
    assert len(views) == 3 and mask.kept <= min(views) and mask.kept > 0
    assert mask.kept < max(views)  # the views differ: their intersection is smaller than one of them
    assert summary["mask"]["per_view_kept"] == views
    base = load_file(sd / "unet" / "diffusion_pytorch_model.safetensors")
    new = load_file(tmp_path / "o" / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(base[k], new[k]) for k in base)
    for k in base:  # only the heavy hitters moved
        if k in mask.masks:
            assert torch.equal(base[k][~mask.masks[k]], new[k][~mask.masks[k]])
    card = (tmp_path / "o" / "README.md").read_text()
    assert "the intersection of 3 saliency masks of ant's own loss" in card


def test_a_given_mask_and_heavy_hitters_contradict(tmp_path, capsys):
    from erase.core.mask import Mask

    Mask({"conv_in.weight": torch.ones(1, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    assert main(["erase", "--concept", "circle", "--method", "ant", "--mask", str(tmp_path / "m.safetensors"),
                 "--heavy-hitters", "3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--heavy-hitters shapes ant's own mask: a given --mask replaces it" in err and err.count("\n") == 1


def test_the_two_steps_come_from_the_batch_timestep(monkeypatch):
    """The early step is the timestep's remainder modulo early-steps, the late one spreads it over the rest."""
    from erase.diffusion.methods.ant import ANT

    seen = []
    real = ANT._sample
    monkeypatch.setattr(ANT, "_sample", lambda self, eps, sched, batch, stops: seen.append(list(stops)) or
                        real(self, eps, sched, batch, stops))
    ant, sched = _bind({"sample-steps": 10, "early-steps": 3})
    noise = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    for t in (0, 530, 999):
        ant.losses(_eps(1.0), sched, Batch(noise * 0, noise, torch.tensor([t]), {"h": torch.ones(1, 1)}), None, 0)
    assert seen == [[0, 3], [530 % 3, 3 + 530 * 7 // 1000], [999 % 3, 9]]


def test_esds_sampler_is_the_one_it_was():
    """ESD's x_t, through the shared trajectory code, equals a plain DDIM loop written out here."""
    sched = DDPMScheduler(num_train_timesteps=1000)
    esd = METHODS["esd-x"].bind(Context(None, None, None, _Bank(), sched, None, {"negative-guidance": 1.0,
                                        "sample-steps": 10, "sample-guidance": 3.0}, frozen=_eps(1.0)))
    eps = lambda x, t, c: 0.3 * x + c["h"].view(-1, 1, 1, 1) * (t.float().view(-1, 1, 1, 1) / 1000)  # noqa: E731
    noise = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    cond = {"h": torch.tensor([[1.0], [2.0]])}
    acp = sched.alphas_cumprod.float()
    for t0 in (0, 450, 999):
        x_t, t = esd._x_t(eps, sched, Batch(noise * 0, noise, torch.tensor([t0, t0]), cond))
        k, x = t0 * 10 // 1000, noise
        steps = [900 - 100 * i for i in range(10)]
        for i in range(k):
            tt = torch.tensor([steps[i]] * 2)
            out = eps(x, tt, _Bank.null(2)) + 3.0 * (eps(x, tt, cond) - eps(x, tt, _Bank.null(2)))
            a = acp[steps[i]]
            a_prev = acp[steps[i + 1]] if i + 1 < 10 else torch.tensor(1.0)
            x0 = (x - (1 - a).sqrt() * out) / a.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * out
        assert torch.allclose(x_t, x) and int(t[0]) == steps[k]


def test_keep_shapes_the_heavy_hitters_and_is_refused_without_them(tmp_path):
    from erase.api import _erase_args
    from erase.cli.erase import erase_options

    opts = erase_options(_erase_args(tmp_path / "o", None, "circle", None, None, None, False,
                                     {"method": "ant", "keep": 0.3}, None))
    assert opts.recipe.keep == 0.3
    with pytest.raises(UserError, match="--keep: --method ant uses no saliency mask of its own"):
        erase_options(_erase_args(tmp_path / "o", None, "circle", None, None, None, False,
                                  {"method": "ant", "keep": 0.3, "heavy_hitters": 0}, None))
