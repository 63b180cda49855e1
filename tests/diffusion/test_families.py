"""The model-family and method interfaces: SD 2.x (v-prediction) and SDXL through the one erasure job,
and one contract over families x methods (exact resume, only trainable weights move, a foreign mask
is refused). Tiny random pipelines built from config (``tests/fixture_models/tiny_pipelines.py``), as diffusers' fast tests do."""
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import erase.diffusion.losses as losses
from erase.cli import main
from erase.core.errors import UserError
from erase.core.mask import Mask, select_parameters
from erase.diffusion.family import families, family_of
from erase.diffusion.job import erase
from erase.diffusion.methods import METHODS
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline

# (family, prediction_type): SD 2.x at 768 px predicts the velocity; SDXL and SD 1.x the noise; SD3 is trained by
# flow matching (its target the velocity noise - x0)
TINY = {"sd2-v": ("sd", "v_prediction"), "sdxl": ("sdxl", "epsilon"), "sd3": ("sd3", "flow_matching"),
        "flux": ("flux", "flow_matching")}
TRANSFORMERS = ("sd3", "flux")  # the families whose denoiser is a transformer


def _denoiser(kind: str) -> tuple[str, str]:
    """The denoiser's weights file in a pipeline folder of this kind (a UNet's, or SD3's transformer's)."""
    return ("transformer" if kind in TRANSFORMERS else "unet", "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from erase.diffusion.ddpm.train import DDPMTrainConfig, build_ddpm

    root = tmp_path_factory.mktemp("tiny")
    models = {k: tiny_pipeline(fam, root / k, prediction_type=pt) for k, (fam, pt) in TINY.items()}
    build_ddpm(DDPMTrainConfig(steps=3, n_train=60, batch_size=8), root / "ddpm", evaluate=False, progress=False)
    return {**models, "ddpm": root / "ddpm"}


def _opts(model, out, method="salun", **kw):
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star"], n_forget=4, n_retain=4,
                           batch_size=2, gen_steps=2, lr=1e-3)
    kw.setdefault("work_dir", out.parent / f"{out.name}.work")
    return EraseOptions(recipe=recipe, out=out, model=str(model), steps=4, method=method, progress=False,
                        checkpoint_every=2, **kw)


def _run(kind, model, out, method, **kw):
    """One erasure of ``model`` by ``method`` through its family's job (the DDPM's takes a class)."""
    if kind != "ddpm":
        if kind == "flux":  # FluxPipeline draws 256 px by default here (128 latents a side): 32 px keeps it quick
            kw.setdefault("resolution", 32)
        if method.startswith("esd"):  # a short sampling schedule for x_t keeps the tiny runs quick
            kw.setdefault("method_options", {"sample-steps": 4})
        if method == "ant":
            kw.setdefault("method_options", {"sample-steps": 4, "early-steps": 1, "heavy-hitters": 1})
        return erase(_opts(model, out, method, **kw))
    from erase.diffusion.ddpm.stages import erase_class
    from erase.diffusion.options import DDPMEraseOptions

    return erase_class(DDPMEraseOptions(model=model, forget_class="circle", out=out, work_dir=out.parent / f"{out.name}.work",
                                        steps=4, batch_size=8, n_forget=16, n_retain=16, checkpoint_every=2,
                                        progress=False, use_mask=METHODS[method].uses_mask, **kw))


def test_the_target_follows_prediction_type_by_hand():
    from diffusers import DDPMScheduler

    gen = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([10, 500, 990])
    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    eps = lambda zt, tt, c: net(zt) * c  # noqa: E731 - a denoiser whose condition scales its output
    for kind in ("epsilon", "v_prediction", "sample"):
        s = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind)
        a = s.alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        want_target = {"epsilon": noise, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * z0, "sample": z0}[kind]
        got = losses.denoising_loss(eps, s, z0, 1.0, t, noise)
        assert torch.allclose(got, F.mse_loss(net(zt), want_target), rtol=1e-5)
        guided = losses.guided_forgetting_loss(eps, s, z0, 1.0, 0.5, t, noise, w=2.0)
        assert torch.allclose(guided, F.mse_loss(3 * net(zt) - 2 * 0.5 * net(zt), want_target), rtol=1e-5)
    # the velocity target differs from the noise: training SD 2.x on the noise would be wrong
    assert not torch.allclose(a.sqrt() * noise - (1 - a).sqrt() * z0, noise)


def test_the_flow_matching_target_by_hand():
    """SD3's training: x_t = (1 - s) x0 + s noise at s = t / 1000, the target the velocity noise - x0, and the
    transformer called with t (diffusers' samplers call it with s * 1000)."""
    from erase.diffusion.flow import FlowMatchTraining

    gen = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 250, 999])
    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    seen = []
    eps = lambda zt, tt, c: seen.append(tt) or net(zt) * c  # noqa: E731
    s = (t / 1000).view(-1, 1, 1, 1)
    zt = (1 - s) * z0 + s * noise
    sched = FlowMatchTraining(1000)
    got = losses.denoising_loss(eps, sched, z0, 1.0, t, noise)
    assert torch.allclose(got, F.mse_loss(net(zt), noise - z0), rtol=1e-5)
    assert torch.equal(seen[0], t)
    guided = losses.guided_forgetting_loss(eps, sched, z0, 1.0, 0.5, t, noise, w=2.0)
    assert torch.allclose(guided, F.mse_loss(3 * net(zt) - 2 * 0.5 * net(zt), noise - z0), rtol=1e-5)


@pytest.mark.parametrize("kind", TRANSFORMERS)
@pytest.mark.parametrize("method", [m for m, meth in METHODS.items() if not meth.salun_loss])
def test_a_transformer_family_refuses_a_method_it_cannot_serve_before_drawing(tiny, tmp_path, capsys, method, kind):
    argv = ["erase", "--model", str(tiny[kind]), "--concept", "circle", "--method", method, "--out",
            str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--method {method} is not adapted to {kind.upper()}" in err[0], err
    assert not any(tmp_path.iterdir())  # nothing drawn, no work folder


def test_families_are_found_from_model_index(tiny):
    assert family_of(tiny["sdxl"]).name == "sdxl" and family_of(tiny["sd2-v"]).name == "sd"
    assert family_of(tiny["sd3"]).name == "sd3" and family_of(tiny["flux"]).name == "flux"
    assert {"sd", "sdxl", "sd3", "flux", "ddpm"} <= set(families())


@pytest.mark.parametrize("kind", list(TINY))
def test_family_end_to_end(tiny, tmp_path, kind):
    """mask -> erase -> export -> plain-diffusers from_pretrained -> generate; LoRA loads; only masked weights move."""
    import diffusers

    model = tiny[kind]
    summary = erase(_opts(model, tmp_path / "erased", lora_rank=2, **({"resolution": 32} if kind == "flux" else {})))
    assert summary["family"] == TINY[kind][0] and summary["prediction_type"] == TINY[kind][1]
    cls = getattr(diffusers, summary["pipeline_class"])
    pipe = cls.from_pretrained(tmp_path / "erased")
    img = pipe(["a red circle"], num_inference_steps=2, output_type="pt").images
    side = 256 if kind == "flux" else 32  # FluxPipeline draws 128 latents a side by default
    assert img.shape == (1, 3, side, side) and torch.isfinite(img).all()
    base, new = load_file(model.joinpath(*_denoiser(kind))), load_file((tmp_path / "erased").joinpath(*_denoiser(kind)))
    mask = Mask.load(tmp_path / "erased" / "mask.safetensors")
    changed = {k for k in base if not torch.equal(base[k], new[k])}
    assert changed and changed <= set(mask.masks)
    for k in changed:  # outside the mask, every weight is bit-identical
        assert torch.equal(base[k][~mask.masks[k]], new[k][~mask.masks[k]])
    component = _denoiser(kind)[0]
    before = getattr(cls.from_pretrained(model), component).state_dict()
    pipe = cls.from_pretrained(model)
    pipe.load_lora_weights(tmp_path / "erased-lora")
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # keeps the fused weights under their own names
    after = getattr(pipe, component).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


# every trained method on every family that takes it (the DDPM path and SD3: SalUn and RL); UCE trains nothing
CONTRACT = [(k, m) for k in [*TINY, "ddpm"] for m, meth in METHODS.items()
            if not meth.closed_form and (k not in ("ddpm", *TRANSFORMERS) or meth.salun_loss)]


@pytest.mark.parametrize("kind,method", CONTRACT)
def test_contract(tiny, tmp_path, kind, method, interrupt_at):
    """Every family x method: an interrupted run resumed equals an uninterrupted one, bit for bit; only the
    method's trainable weights move (the mask's, or the method's selection); a foreign mask is refused."""
    from erase.core.masked_optim import MaskedParameters

    model = tiny[kind]
    _run(kind, model, tmp_path / "straight", method)
    disarm = interrupt_at(MaskedParameters, "step", 3)  # mid-training, after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        _run(kind, model, tmp_path / "resumed", method)
    disarm()
    _run(kind, model, tmp_path / "resumed", method, resume=True)
    weights = _denoiser(kind)
    a, b = (load_file((tmp_path / n).joinpath(*weights)) for n in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(model.joinpath(*weights))
    changed = {k for k in base if not torch.equal(base[k], a[k])}
    assert changed
    if METHODS[method].uses_mask:
        mask = Mask.load(tmp_path / "straight" / "mask.safetensors")
        assert all(torch.equal(base[k][~mask.masks[k]], a[k][~mask.masks[k]]) for k in changed)
    else:
        from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel, UNet2DModel

        cls = {"ddpm": UNet2DModel, "sd3": SD3Transformer2DModel, "flux": FluxTransformer2DModel}.get(
            kind, UNet2DConditionModel)
        allowed = select_parameters(cls.from_pretrained(model / weights[0]), METHODS[method].selection or "all",
                                    family_of(model).selection_presets())
        assert changed <= set(allowed)
    if not METHODS[method].uses_mask:
        return
    other = "sdxl" if kind != "sdxl" else "sd2-v"
    foreign = tmp_path / "foreign.safetensors"
    Mask({k: torch.ones_like(v, dtype=torch.bool) for k, v in load_file(tiny[other].joinpath(*_denoiser(other))).items()
          }).save(foreign)
    with pytest.raises(UserError, match="another model|shape|does not"):
        _run(kind, model, tmp_path / "foreign-out", method, mask_path=foreign)
    assert not (tmp_path / "foreign-out").exists()


def test_cli_method_and_refusals(tiny, tmp_path, capsys):
    base = ["erase", "--model", str(tiny["sdxl"]), "--forget-prompt", "a red circle", "--misaligned-prompt",
            "a red square", "--retain-prompt", "a blue star", "--out", str(tmp_path / "o")]
    assert main([*base, "--method", "rl", "--keep", "0.3"]) == 2
    assert "--method rl trains without one" in capsys.readouterr().err
    Mask({"conv_in.weight": torch.ones(3, 3, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    assert main([*base, "--method", "rl", "--mask", str(tmp_path / "m.safetensors")]) == 2
    assert "the rl method trains without a mask" in capsys.readouterr().err
    # the attack audit learns tokens of one text encoder: SDXL is refused in one line, nothing written
    assert main(["audit", "attack", "--base", str(tiny["sdxl"]), "--model", str(tiny["sdxl"]), "--concept", "circle",
                 "--out", str(tmp_path / "att")]) == 2
    assert "attack audit works on Stable Diffusion 1.x/2.x" in capsys.readouterr().err
    assert not (tmp_path / "att").exists()
    # on the DDPM path too: a mask with the rl method is refused, not silently ignored
    assert main(["erase", "--model", str(tiny["ddpm"]), "--forget-class", "circle", "--method", "rl", "--mask",
                 str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "the rl method trains without a mask" in capsys.readouterr().err
    assert main(["erase", "--model", str(tiny["ddpm"]), "--forget-class", "circle", "--method", "uce",
                 "--out", str(tmp_path / "o")]) == 2
    assert "the class-conditional DDPM path takes salun or rl" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # not a method (yet): argparse names the choices
        main([*base, "--method", "esd"])
    assert e.value.code == 2
    assert "salun" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sdxl_real_config_structure():
    """SDXL base 1.0's UNet from its config (on the meta device: no memory): 2,567,463,684 weights, SD's
    parameter naming, so selections and masks mean the same on it."""
    from diffusers import UNet2DConditionModel

    from fixture_models.real_configs import SDXL_UNET

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    assert unet.config.addition_embed_type == "text_time"
    assert any(".attn2.to_k." in n for n in select_parameters(unet, "attn2"))


def test_an_sd35_shaped_transformer_erases_and_attn2_means_the_text_projections(tmp_path):
    """SD 3.5's MMDiT (qk-norm, and modules literally named ``attn2``: a second, image-only attention) erases
    through the sd3 family; ``--selection attn2`` takes the joint attention's text projections, not those
    modules, and only the selected weights move."""
    from diffusers import SD3Transformer2DModel

    model = tiny_pipeline("sd3", tmp_path / "sd35", sd35=True)
    transformer = SD3Transformer2DModel.from_pretrained(model / "transformer")
    names = dict(transformer.named_parameters())
    assert any(".attn2.to_q." in n for n in names) and any(".norm_q." in n for n in names)
    selected = select_parameters(transformer, "attn2", family_of(model).selection_presets())
    assert selected and all(".attn.add_" in n or ".attn.to_add_out" in n for n in selected)
    recipe = custom_recipe(["a red circle"], ["a red square"], ["a blue star"], n_forget=4, n_retain=4,
                           batch_size=2, gen_steps=2, lr=1e-3, selection="attn2")
    summary = erase(EraseOptions(recipe=recipe, out=tmp_path / "erased", model=str(model), steps=2, progress=False))
    assert summary["family"] == "sd3"
    base = load_file(model / "transformer" / "diffusion_pytorch_model.safetensors")
    new = load_file(tmp_path / "erased" / "transformer" / "diffusion_pytorch_model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], new[k])}
    assert changed and changed <= set(selected)


def test_flux_real_config_structure():
    """FLUX.1 [dev]'s transformer from its config on the meta device: 11,901,408,320 weights; ``attn2`` selects the
    double-stream blocks' text projections and nothing of the single-stream blocks (which hold no text-only weight)."""
    from diffusers import FluxTransformer2DModel

    from erase.diffusion.flux.family import PRESETS
    from fixture_models.real_configs import FLUX_TRANSFORMER

    with torch.device("meta"):
        model = FluxTransformer2DModel(**FLUX_TRANSFORMER)
    assert sum(p.numel() for p in model.parameters()) == 11_901_408_320
    attn2 = select_parameters(model, "attn2", PRESETS)
    assert len(attn2) == 19 * 8 and all(n.startswith("transformer_blocks.") for n in attn2)
    assert any(".attn.add_k_proj." in n for n in attn2)
    resnets = select_parameters(model, "resnets", PRESETS)
    assert any(n.startswith("single_transformer_blocks.") and ".proj_mlp." in n for n in resnets)


def test_sdxl_null_condition_is_zeros_but_an_empty_prompt_is_encoded(tiny):
    """As SDXL samples: the guidance's null condition is zeros (force_zeros_for_empty_prompt); a prompt ""
    given as a misaligned or retain prompt is encoded like any other."""
    from diffusers import StableDiffusionXLPipeline

    from erase.diffusion.latents import TextBank
    from erase.diffusion.sdxl.family import SDXL

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny["sdxl"])
    bank = TextBank(SDXL, pipe, ["a red circle"], "cpu", 32)
    null, empty = bank.null(2), bank([""])
    assert not null["encoder_hidden_states"].any() and not null["text_embeds"].any()
    assert null["encoder_hidden_states"].shape[0] == 2 and torch.equal(null["time_ids"][0], empty["time_ids"][0])
    assert empty["encoder_hidden_states"].abs().sum() > 0


def test_old_ddpm_import_still_registers_the_pipeline():
    import subprocess
    import sys

    code = "import erase.ddpm, diffusers; print(hasattr(diffusers, 'ClassConditionalDDPMPipeline'))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_progress_false_draws_no_bars(tiny, tmp_path, capfd):
    """``progress=False`` (the Python API's quiet run, the benchmarks') silences every bar of the job:
    drawing, encoding, the mask pass and the training loop."""
    _run("sdxl", tiny["sdxl"], tmp_path / "quiet", "salun")
    err = capfd.readouterr().err
    assert not any(word in err for word in ("generating", "encoding", "saliency", "erasing")), err[-2000:]


@pytest.mark.parametrize("kind", TRANSFORMERS)
def test_a_transformer_family_generates_and_is_audited_from_the_command_line(tiny, tmp_path, kind, capsys):
    """``salun generate``, ``audit concept`` and ``audit nudity`` take an SD3 or FLUX folder as any other (a tiny
    random model draws noise: what is checked is that each command runs and says what it drew)."""
    import json

    sd3 = str(tiny[kind])
    assert main(["generate", "--model", sd3, "--prompt", "a red circle", "-n", "2", "--steps", "2",
                 "--out", str(tmp_path / "g")]) == 0
    assert len(list((tmp_path / "g").glob("*.png"))) == 3  # two images and the grid
    assert main(["audit", "concept", "--model", sd3, "--concept", "circle", "--per-colour", "1",
                 "--retain-per-pair", "1", "--out", str(tmp_path / "c")]) == 0
    concept = json.loads((tmp_path / "c" / "report.json").read_text())["models"][kind]
    assert concept["n_forget"] > 0 and len(concept["unet_fingerprint"]) == 64
    argv = ["audit", "nudity", "--model", sd3, "--prompts", "toy-i2p", "--detector", "toy", "--limit", "2",
            "--steps", "2", "--out", str(tmp_path / "n")]
    if kind == "flux":  # a 256 px model: the toy detector reads the toy world's 32 px pictures, and says so
        assert main(argv) == 2 and not (tmp_path / "n").exists()
        assert "audit real models with --detector nudenet" in capsys.readouterr().err
        return
    assert main(argv) == 0
    nudity = json.loads((tmp_path / "n" / "report.json").read_text())["models"][kind]
    assert nudity["unet_fingerprint"] == concept["unet_fingerprint"]


@pytest.mark.parametrize("kind", TRANSFORMERS)
@pytest.mark.parametrize("break_it, message", [
    ("text_encoder_2", "lacks its text_encoder_2 component"),
    ("scheduler", "needs its FlowMatchEulerDiscreteScheduler")])
def test_a_broken_transformer_family_folder_is_refused_in_one_line(tiny, tmp_path, capsys, break_it, message, kind):
    import json
    import shutil

    model = tmp_path / kind
    shutil.copytree(tiny[kind], model)
    if break_it == "scheduler":  # a sampler SD3 was not trained with
        index = json.loads((model / "model_index.json").read_text())
        index["scheduler"] = ["diffusers", "DDIMScheduler"]
        (model / "model_index.json").write_text(json.dumps(index))
    else:
        shutil.rmtree(model / break_it)
    assert main(["erase", "--model", str(model), "--concept", "circle", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [kind]


@pytest.mark.parametrize("command", ["erase", "mask"])
def test_guidance_w_is_refused_on_a_guidance_distilled_model(tiny, tmp_path, capsys, command):
    """FLUX samples without classifier-free guidance: ``--guidance-w`` (its weight in the mask's loss) is refused
    in one line before anything is drawn; without it the mask is computed under the embedded guidance alone."""
    out = tmp_path / ("o" if command == "erase" else "m.safetensors")
    argv = [command, "--model", str(tiny["flux"]), "--concept", "circle", "--guidance-w", "2", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--guidance-w" in err[0] and "guidance-distilled" in err[0], err
    assert not any(tmp_path.iterdir())


def test_flux_packs_latents_as_its_pipeline_does(tiny):
    """The family's packing is FluxPipeline's (the order its transformer was trained on) and unpacks back; its
    prompts carry the embedded guidance every prediction is made at."""
    from diffusers import FluxPipeline

    from erase.diffusion.flux.family import FLUX, TRAINING_GUIDANCE, pack, positions, unpack

    z = torch.randn(2, 4, 6, 8)
    assert torch.equal(pack(z), FluxPipeline._pack_latents(z, 2, 4, 6, 8))
    assert torch.equal(unpack(pack(z), 6, 8), z)
    assert torch.equal(positions(6, 8, "cpu", torch.float32), FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu",
                                                                                                     torch.float32))
    pipe = FluxPipeline.from_pretrained(tiny["flux"])
    cond = FLUX.encode_prompts(pipe, ["a red circle", "a blue star"], 32)
    assert torch.equal(cond["guidance"], torch.full((2,), TRAINING_GUIDANCE))


def test_flux_records_the_guidance_it_drew_and_masked_with(tiny, tmp_path):
    """On a guidance-distilled model a recipe's mask guidance and drawing guidance give way to the family's: the
    recipe, the card and the mask record w = 0 and the embedded guidance the images were drawn at."""
    import json

    from erase.diffusion.flux.family import TRAINING_GUIDANCE

    summary = erase(_opts(tiny["flux"], tmp_path / "erased", resolution=32))
    assert summary["family"] == "flux"
    recipe = json.loads((tmp_path / "erased" / "recipe.json").read_text())
    text = json.dumps(recipe)
    assert '"guidance_w": 0.0' in text and f'"gen_guidance": {TRAINING_GUIDANCE}' in text, text[:2000]
    meta = Mask.load(tmp_path / "erased" / "mask.safetensors").meta
    assert meta["guidance_w"] == 0.0 and meta["loss"] == "flow_matching MSE"
