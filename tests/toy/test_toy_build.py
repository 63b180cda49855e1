"""The build path stays alive: a few steps of every stage, then a real offline from_pretrained."""
import json

import pytest
import torch

from erase.cli import main
from erase.core.errors import UserError
from erase.toy.build import BuildConfig, build
from erase.toy.build_sd3 import clip_ids, conditioning, t5_states

TINY = BuildConfig(n_train=128, judge_steps=2, vae_steps=2, unet_steps=2, batch_size=16)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    info = build(TINY, root / "sd", judge_out=root / "judge", evaluate=False)
    return root, info


def test_build_writes_a_loadable_pipeline(tiny_world):
    from diffusers import StableDiffusionPipeline

    root, info = tiny_world
    pipe = StableDiffusionPipeline.from_pretrained(root / "sd", local_files_only=True)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert "CrossAttnDownBlock2D" in pipe.unet.config.down_block_types
    assert "CrossAttnUpBlock2D" in pipe.unet.config.up_block_types
    assert any(".attn2.to_k." in n for n, _ in pipe.unet.named_parameters())
    sc = pipe.scheduler.config
    assert (sc.beta_start, sc.beta_end, sc.beta_schedule, sc.num_train_timesteps, sc.prediction_type) == \
        (0.00085, 0.012, "scaled_linear", 1000, "epsilon")
    assert pipe.vae_scale_factor == 4 and pipe.vae.config.scaling_factor > 0
    out = pipe("a red circle", num_inference_steps=2, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 3, 32, 32)
    assert (root / "sd" / "README.md").exists() and (root / "judge" / "judge.safetensors").exists()
    assert json.loads((root / "sd" / "build_info.json").read_text())["config"]["unet_steps"] == 2


def test_build_refuses_an_existing_output(tiny_world):
    root, _ = tiny_world
    before = sorted(p.name for p in (root / "sd").iterdir())
    with pytest.raises(UserError, match="exists"):
        build(TINY, root / "sd", evaluate=False)
    assert sorted(p.name for p in (root / "sd").iterdir()) == before


def test_build_resumes_finished_stages(tiny_world, capsys):
    root, _ = tiny_world
    # Same settings, new output: the cached judge, VAE and UNet are reused, nothing is retrained.
    build(TINY, root / "sd2", work=root / ".sd.work", evaluate=False)
    out = capsys.readouterr().out
    assert "judge: held-out" not in out and "latent scaling factor" not in out


def test_exclude_builds_a_retrain_world(tmp_path):
    cfg = BuildConfig(**{**TINY.__dict__, "exclude": ["circle"]})
    assert "circle" not in cfg.sd_shapes()
    info = build(cfg, tmp_path / "retrain", evaluate=False)
    assert info["config"]["exclude"] == ["circle"]


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["toy", "build", "--out", str(tmp_path / "x"), "--exclude", "octagon", "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown shape 'octagon'" in err[0]
    assert not (tmp_path / "x").exists()
    (tmp_path / "y").mkdir()
    assert main(["toy", "build", "--out", str(tmp_path / "y"), "--no-eval"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_attribute_retrain_world_reuses_the_vae_and_judge(tiny_world, tmp_path):
    from safetensors.torch import load_file

    root, _ = tiny_world
    cfg = BuildConfig(**{**TINY.__dict__, "exclude_attribute": True})
    info = build(cfg, tmp_path / "retrain-frame", vae_from=root / "sd", judge_from=root / "judge", evaluate=False)
    assert info["config"]["exclude_attribute"] and info["reused"]["vae_from"] == str(root / "sd")
    vae = "vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(root / "sd" / vae), load_file(tmp_path / "retrain-frame" / vae)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "frame attribute" in (tmp_path / "retrain-frame" / "README.md").read_text()


def test_cli_attribute_options_are_checked(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["toy", "build", "--out", str(out), "--no-attribute", "--exclude-attribute"]) == 2
    assert "--exclude-attribute needs the attribute" in capsys.readouterr().err
    assert main(["toy", "build", "--out", str(out), "--vae-from", str(tmp_path / "nope")]) == 2
    assert "--vae-from" in capsys.readouterr().err
    assert not out.exists()


def test_an_sd3_build_writes_a_flow_matching_pipeline(tiny_world):
    """``--family sd3``: a StableDiffusion3Pipeline whose transformer and CLIPs learnt by flow matching under a
    frozen T5, with the VAE given SD3's shift and scale; the conditioning training computes is what the
    pipeline's own ``encode_prompt`` feeds the transformer; it draws, and its card names its pipeline class."""
    from diffusers import StableDiffusion3Pipeline

    root, _ = tiny_world
    cfg = BuildConfig(n_train=64, unet_steps=2, batch_size=8, family="sd3")
    info = build(cfg, root / "sd3", vae_from=root / "sd", judge_from=root / "judge", evaluate=False)
    pipe = StableDiffusion3Pipeline.from_pretrained(root / "sd3", local_files_only=True)
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.transformer.config.qk_norm == "rms_norm" and pipe.text_encoder_3 is not None
    assert pipe.vae.config.shift_factor is not None and pipe.vae.config.scaling_factor > 0
    prompts = ["", "a red circle", "a framed blue star in a gallery"]
    with torch.no_grad():
        emb, pooled = conditioning([pipe.text_encoder, pipe.text_encoder_2], clip_ids(pipe, prompts),
                                   t5_states(pipe, prompts))
        want, _, want_pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False)
    assert emb.shape == want.shape and torch.equal(emb, want) and torch.equal(pooled, want_pooled)
    out = pipe("a red circle", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    assert info["config"]["family"] == "sd3"
    assert "StableDiffusion3Pipeline" in (root / "sd3" / "README.md").read_text()


def test_an_interrupted_training_resumes_to_the_same_weights(tiny_world, tmp_path, monkeypatch, interrupt_at, capsys):
    """A build interrupted mid-training resumes from its last checkpoint (weights, EMAs, AdamW, every random
    state) and ends with the weights of a build never interrupted, bit for bit; the finished build leaves no
    checkpoint behind."""
    from safetensors.torch import load_file

    import erase.toy.training as training

    root, _ = tiny_world
    monkeypatch.setattr(training, "CHECKPOINT_EVERY", 2)
    cfg = BuildConfig(n_train=64, unet_steps=5, batch_size=8, family="sd3")
    kw = dict(vae_from=root / "sd", judge_from=root / "judge", evaluate=False)
    build(cfg, tmp_path / "straight", **kw)
    disarm = interrupt_at(torch.nn.utils, "clip_grad_norm_", 4)  # step 4 of 5: after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        build(cfg, tmp_path / "resumed", **kw)
    disarm()
    assert (tmp_path / ".resumed.work" / "sd.checkpoint" / "latest" / "state.json").is_file()
    capsys.readouterr()
    build(cfg, tmp_path / "resumed", **kw)
    assert "transformer: resuming from step 2" in capsys.readouterr().out
    for part in ("transformer", "text_encoder", "text_encoder_2"):
        (a,), (b,) = ((tmp_path / n / part).glob("*.safetensors") for n in ("straight", "resumed"))
        wa, wb = load_file(a), load_file(b)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), part
    assert not (tmp_path / ".resumed.work" / "sd.checkpoint").exists()
