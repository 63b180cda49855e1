"""SalUn's and RL's --distill (issue 27's first retain-preserving ingredient): the outputs under the recipe's
preserve prompts are held to a frozen copy of the base's, at the forget batch's noisy latents. Here: it holds
them (measured against the plain loss on the same run), the paper's loss is unchanged without it, and the
refusals of bad input come before any work."""
from __future__ import annotations

import json

import pytest
import torch

from erase.core.errors import UserError
from erase.diffusion.job import _method_key, erase
from erase.diffusion.methods import METHODS
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe, load_recipe
from fixture_models.tiny_pipelines import tiny_pipeline

PRESERVE = ["a blue star", "a green heart", "a yellow cross"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("distill") / "sd")


def _opts(model, out, distill: float | None, preserve=PRESERVE, options: dict | None = None, **kw):
    recipe = custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"], ["a green star"],
                           n_forget=4, n_retain=4, batch_size=2, gen_steps=2, lr=3e-3, alpha=0.0)
    recipe.preserve_prompts = list(preserve)
    given = {**({} if distill is None else {"distill": distill}), **(options or {})}
    return EraseOptions(recipe=recipe, out=out, model=str(model), method="salun", method_options=given,
                        progress=False, steps=8, **kw)


def _drift(base_dir, erased_dir, prompts) -> float:
    """Mean squared difference of the UNet outputs under ``prompts`` between two pipelines, at fixed noisy inputs."""
    from diffusers import StableDiffusionPipeline

    outs = []
    for d in (base_dir, erased_dir):
        pipe = StableDiffusionPipeline.from_pretrained(d)
        ids = pipe.tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt").input_ids
        g = torch.Generator().manual_seed(0)
        size = pipe.unet.config.sample_size
        z = torch.randn(len(prompts) * 4, pipe.unet.config.in_channels, size, size, generator=g)
        t = torch.randint(0, 1000, (len(z),), generator=g)
        with torch.no_grad():
            cond = pipe.text_encoder(ids)[0].repeat(4, 1, 1)
            outs.append(pipe.unet(z, t, encoder_hidden_states=cond).sample)
    return float(((outs[0] - outs[1]) ** 2).mean())


def test_distill_holds_the_preserve_prompts_to_the_base(sd, tmp_path):
    """On a tiny random pipeline (its text encoder tells prompts apart little, so this checks the mechanics;
    what it buys an erasure is measured on the toy world by scripts/bench_erasure.py)."""
    plain = erase(_opts(sd, tmp_path / "plain", None))
    held = erase(_opts(sd, tmp_path / "held", 1.0))
    assert plain["method_options"]["distill"] == 0.0 and held["method_options"]["distill"] == 1.0
    d_plain, d_held = _drift(sd, tmp_path / "plain", PRESERVE), _drift(sd, tmp_path / "held", PRESERVE)
    assert d_plain > 0 and d_held < 0.5 * d_plain, (d_held, d_plain)
    log = [json.loads(line) for line in (tmp_path / "held" / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["forget"] < 0.5 * log[0]["forget"]  # the forget term still falls
    assert "preserve" in log[0] and "preserve" not in json.loads(
        (tmp_path / "plain" / "training_log.jsonl").read_text().splitlines()[0])
    card = (tmp_path / "held" / "README.md").read_text()
    assert "distill 1.0" in card and "`a blue star`" in card and "preserve prompts held" not in (tmp_path / "plain" / "README.md").read_text()


def test_the_python_api_takes_preserve_prompts_as_a_string_or_a_list(tmp_path):
    from erase.api import _erase_args

    args = _erase_args(tmp_path / "o", "m", "circle", None, None, None, False, {"distill": 1.0}, "a blue star")
    assert args.preserve_prompt == ["a blue star"] and args.distill == 1.0


def test_the_papers_loss_keeps_its_resume_key():
    salun = METHODS["salun"]
    assert _method_key(salun, {"distill": 0.0}, []) == []
    assert _method_key(salun, {"distill": 1.0}, PRESERVE) == [{"distill": 1.0}, PRESERVE]


def test_toy_recipes_ship_preserve_prompts_that_never_name_the_concept():
    circle = load_recipe("circle")
    assert len(circle.preserve_prompts) == 25 and not any("circle" in p for p in circle.preserve_prompts)
    assert len(load_recipe("frame").preserve_prompts) == 30
    nudity = load_recipe("nudity")
    nudity.check_preserve()  # none is the forget prompt
    assert len(nudity.preserve_prompts) >= 100 and not any("nude" in p for p in nudity.preserve_prompts)
    from erase.diffusion.combine import combine

    joint = combine([load_recipe("circle"), load_recipe("triangle")])
    assert joint.preserve_prompts and not any(w in p for p in joint.preserve_prompts for w in ("circle", "triangle"))


def test_a_preserve_prompt_that_is_a_forget_prompt_is_refused(sd, tmp_path):
    with pytest.raises(UserError, match="also a forget prompt"):
        erase(_opts(sd, tmp_path / "x", 1.0, preserve=["a blue star", "A red  circle"]))
    with pytest.raises(UserError, match="no preserve prompts"):
        erase(_opts(sd, tmp_path / "y", 1.0, preserve=[]))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("argv, message", [
    (["--distill", "1", "--preserve-prompt", "a red circle"], "also a forget prompt"),
    (["--distill", "1", "--preserve-prompt", "a circle, that is red"], "names the erased circle"),
    (["--distill", "1", "--preserve-prompt", " "], "preserve prompts must be non-empty strings"),
    (["--method", "esd-x", "--preserve-prompt", "a blue star"], "--method esd-x does not take --distill"),
    (["--preserve-prompt", "a blue star"], "--preserve-prompt: the prompts --distill keeps"),
    (["--distill", "-1"], "--distill must be a finite number of at least 0"),
    (["--method", "esd-x", "--distill", "1"], "--distill: an option of salun, rl"),
])
def test_cli_refuses_bad_distill_input_in_one_line(sd, erase_refuses, argv, message):
    erase_refuses(sd, argv, message)


def test_forget_t_max_draws_the_forget_timesteps_below_it(sd, tmp_path, monkeypatch):
    """--forget-t-max (ANT's window): the forget batches' timesteps stay below it; the default draws the same
    timesteps as the paper's loss did (same random stream), and a window past the schedule is refused."""
    import erase.diffusion.job as J

    seen: list = []
    real = J.noise_batch

    def spy(*a, **kw):
        out = real(*a, **kw)
        seen.append((a[8] if len(a) > 8 else kw.get("t_range"), out[2].tolist()))
        return out

    monkeypatch.setattr(J, "noise_batch", spy)
    s = erase(_opts(sd, tmp_path / "w", None, options={"forget-t-max": 300}))
    assert s["method_options"]["forget-t-max"] == 300
    forget = [ts for window, ts in seen if window == (0, 300)]
    assert len(forget) == 8 and all(t < 300 for ts in forget for t in ts)
    card = (tmp_path / "w" / "README.md").read_text()
    assert "forget-t-max 300" in card
    with pytest.raises(UserError, match="--forget-t-max 1001: this model's noise schedule has 1000 timesteps"):
        erase(_opts(sd, tmp_path / "x", None, options={"forget-t-max": 1001}))
    assert not (tmp_path / "x").exists()
    assert _method_key(METHODS["salun"], {"distill": 0.0, "forget-t-max": 0}, []) == []
    # the default window is the whole schedule, drawn with the very same random numbers as before the option
    from diffusers import DDPMScheduler

    from erase.diffusion.latents import noise_batch

    mean, std, sched = torch.zeros(4, 4, 8, 8), torch.ones(4, 4, 8, 8), DDPMScheduler()
    draws = [noise_batch(mean, std, [0, 1, 2], (1.0, 0.0), sched, torch.Generator().manual_seed(3), "cpu", torch.float32,
                         w)
             for w in (None, METHODS["salun"].forget_timesteps({"forget-t-max": 0}, 1000))]
    assert all(torch.equal(a, b) for a, b in zip(*draws))


def test_the_forget_window_refuses_a_schedule_shorter_than_it():
    with pytest.raises(UserError, match="has 500 timesteps"):
        METHODS["salun"].forget_timesteps({"forget-t-max": 800}, 500)
    assert METHODS["salun"].forget_timesteps({"forget-t-max": 800}, 1000) == (0, 800)
    assert METHODS["salun"].forget_timesteps({"forget-t-max": 0}, 500) == (0, 500)
    assert METHODS["esd-x"].forget_timesteps({}, 1000) == (0, 1000)
