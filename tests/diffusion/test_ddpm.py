"""The class-conditional DDPM path: pipeline format, SalUn erasure, audit, bad input."""
import json

import pytest
import torch

import erase.diffusion.losses as losses
from erase.cli import main
from erase.diffusion.ddpm.pipeline import ClassConditionalDDPMPipeline, load_ddpm
from erase.diffusion.ddpm.train import DDPMTrainConfig, build_ddpm, make_pipeline, make_unet
from erase.diffusion.ddpm.stages import erase_class
from erase.diffusion.options import DDPMEraseOptions
from erase.core.errors import UserError
from erase.core.mask import Mask
from erase.toy import TOY_JUDGE

TINY_ERASE = dict(steps=4, batch_size=8, n_forget=16, n_retain=16, checkpoint_every=2, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A toy-shapes DDPM trained for 3 steps: the real format and code path, in seconds."""
    out = tmp_path_factory.mktemp("ddpm") / "tiny-ddpm"
    build_ddpm(DDPMTrainConfig(steps=3, n_train=60, batch_size=8), out, evaluate=False, progress=False)
    return out


def _opts(tmp_path, model, name="out", **kw):
    return DDPMEraseOptions(model=model, forget_class="circle", out=tmp_path / name, work_dir=tmp_path / "work",
                            **{**TINY_ERASE, **kw})


def test_saved_pipeline_loads_with_diffusion_pipeline(tiny):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny)
    assert isinstance(pipe, ClassConditionalDDPMPipeline)
    assert pipe.class_names == ["circle", "square", "triangle", "star", "cross", "heart"]
    assert pipe.null_class == 6 and pipe.unet.config.num_class_embeds == 7
    assert json.loads((tiny / "ddpm_info.json").read_text())["dataset"] == "toy-shapes"
    g = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    out = pipe(["circle", 3], num_inference_steps=3, generator=g, output_type="pt").images
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    pil = pipe("star", num_inference_steps=2).images
    assert len(pil) == 1 and pil[0].size == (16, 16)


def test_guidance_is_one_plus_w_cond_minus_w_null(tiny):
    pipe = load_ddpm(tiny)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([500, 500])
    e_c, e_null = pipe.eps(x, t, torch.tensor([0, 0])), pipe.eps(x, t, torch.tensor([6, 6]))
    seen = {}
    real_step = pipe.scheduler.step

    def spy(e, t, x, **k):
        seen["e"] = e
        return real_step(e, t, x, **k)

    pipe.scheduler.step = spy
    pipe.scheduler.set_timesteps(1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    pipe([0], guidance_scale=2.0, num_inference_steps=1, generator=g, output_type="pt")
    t1 = pipe.scheduler.timesteps[0].expand(1)
    want = 3 * pipe.eps(noise, t1, torch.tensor([0])) - 2 * pipe.eps(noise, t1, torch.tensor([6]))
    assert torch.allclose(seen["e"], want, atol=1e-5)
    assert not torch.allclose(e_c, e_null)


def test_bad_classes_and_models_are_clear_errors(tiny, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    pipe = load_ddpm(tiny)
    with pytest.raises(UserError, match="no class 'dog'"):
        pipe.class_id("dog")
    with pytest.raises(UserError, match="out of range"):
        pipe.class_id(6)
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "uncond")
    with pytest.raises(UserError, match="unconditional"):
        load_ddpm(tmp_path / "uncond")
    with pytest.raises(UserError, match="no class embedding"):
        ClassConditionalDDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    assert main(["erase", "--model", str(tmp_path / "uncond"), "--forget-class", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["erase", "--model", str(tiny), "--forget-class", "dog", "--out", str(tmp_path / "y")]) == 2
    assert main(["erase", "--model", str(tiny), "--forget-class", "circle", "--lora-rank", "4",
                 "--out", str(tmp_path / "z")]) == 2
    assert main(["erase", "--forget-class", "circle", "--out", str(tmp_path / "w")]) == 2  # SD: use --concept
    assert not any((tmp_path / n).exists() for n in "xyzw")


@pytest.fixture(scope="module")
def erased(tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("erased")
    return tmp, erase_class(_opts(tmp, tiny))


def test_erasure_moves_only_masked_weights_and_exports(tiny, erased):
    from diffusers import DiffusionPipeline

    tmp, summary = erased
    out = tmp / "out"
    pipe, base = DiffusionPipeline.from_pretrained(out), load_ddpm(tiny)
    mask = Mask.load(out / "mask.safetensors")
    assert mask.meta["clip_grad_norm"] == 1.0 and mask.meta["guidance_w"] == 2.0
    assert mask.meta["forget_class"] == "circle" and abs(mask.stats()["kept_fraction"] - 0.5) < 1e-3
    b = dict(base.unet.named_parameters())
    changed = 0
    for n, p in pipe.unet.named_parameters():
        m = mask.masks[n]
        assert torch.equal(p.detach()[~m], b[n].detach()[~m]), n
        changed += int((p.detach()[m] != b[n].detach()[m]).sum())
    assert changed > 0
    assert summary["target_class"] == "square" and summary["steps"] == 4
    assert summary["lr"] == 1e-4 and summary["alpha"] == 1.0
    info = json.loads((out / "ddpm_info.json").read_text())
    assert info["erased"]["forget_class"] == "circle" and info["dataset"] == "toy-shapes"
    assert "SalUn" in (out / "README.md").read_text()
    assert len((out / "training_log.jsonl").read_text().splitlines()) == 4


def test_mask_from_another_model_is_refused(tiny, erased, tmp_path):
    from safetensors.torch import save_file

    tmp, _ = erased
    # The erased model's mask on the erased weights: same architecture, other weights.
    base_mask = tmp / "out" / "mask.safetensors"
    with pytest.raises(UserError, match="other weights"):
        erase_class(_opts(tmp_path, tmp / "out", mask_path=base_mask))
    # A mask for another architecture (a toy SD UNet's names).
    other = Mask({"conv_in.weight": torch.ones(3, 3, dtype=torch.bool)}, {"fingerprint": "x"})
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(UserError):
        erase_class(_opts(tmp_path, tiny, mask_path=tmp_path / "other.safetensors"))
    assert not (tmp_path / "out").exists()
    save_file  # noqa: B018 - imported to make sure safetensors is there


def test_resume_continues_to_the_same_weights(tiny, tmp_path, interrupt_at):
    from safetensors.torch import load_file

    erase_class(_opts(tmp_path, tiny, "straight"))
    disarm = interrupt_at(losses, "misaligned_loss", 3)
    with pytest.raises(KeyboardInterrupt):
        erase_class(_opts(tmp_path, tiny, "resumed"))
    assert not (tmp_path / "resumed").exists()
    disarm()
    with pytest.raises(UserError, match="another mask"):  # another recipe: refused, not mixed
        erase_class(_opts(tmp_path, tiny, "other", resume=True, lr=3e-4))
    erase_class(_opts(tmp_path, tiny, "resumed", resume=True))
    a = load_file(tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "resumed" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the exported log has every step, not only those after the resume
    assert (tmp_path / "straight" / "training_log.jsonl").read_text() == \
        (tmp_path / "resumed" / "training_log.jsonl").read_text()


@pytest.mark.parametrize("bad, match", [(dict(keep=0.0), "keep"), (dict(keep=1.5), "keep"),
                                        (dict(n_forget=0), "n-forget"), (dict(batch_size=0), "batch-size"),
                                        (dict(lr=0.0), "lr"), (dict(target_class="circle"), "differ"),
                                        (dict(method="esd-x"), "takes salun or rl"),
                                        (dict(method_options={"distill": 1.0}), "distill: not an option")])
def test_bad_settings_are_refused_before_any_work(tiny, tmp_path, bad, match):
    with pytest.raises(UserError, match=match):
        erase_class(_opts(tmp_path, tiny, **bad))
    assert not any(tmp_path.iterdir())  # no output, no work folder


def test_a_class_erasure_without_a_model_is_refused(tmp_path):
    with pytest.raises(UserError, match="give --model"):
        erase_class(DDPMEraseOptions(forget_class="circle", out=tmp_path / "o", progress=False))
    assert not any(tmp_path.iterdir())


def test_cli_erase_mask_generate_and_audit(tiny, tmp_path):
    assert main(["mask", "--model", str(tiny), "--forget-class", "circle", "--n-forget", "8", "--batch-size", "8",
                 "--out", str(tmp_path / "m.safetensors")]) == 0
    assert main(["erase", "--model", str(tiny), "--forget-class", "circle", "--steps", "2", "--batch-size", "8",
                 "--n-forget", "8", "--n-retain", "8", "--mask", str(tmp_path / "m.safetensors"), "--audit",
                 "--out", str(tmp_path / "e")]) == 0
    assert Mask.load(tmp_path / "e" / "mask.safetensors").meta["n_forget"] == 8
    assert "## Audit" in (tmp_path / "e" / "README.md").read_text()
    info = json.loads((tmp_path / "e" / "ddpm_info.json").read_text())
    assert info["erased"]["forget_class"] == "circle" and "quality" not in info and info["dataset"] == "toy-shapes"
    assert main(["generate", "--model", str(tmp_path / "e"), "--prompt", "circle", "--prompt", "star", "-n", "2",
                 "--steps", "2", "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "grid.png").exists() and len(list((tmp_path / "g").glob("*.png"))) == 5
    assert main(["audit", "concept", "--model", str(tiny), "--model", str(tmp_path / "e"), "--concept", "circle",
                 "--per-colour", "1", "--retain-per-pair", "1", "--out", str(tmp_path / "audit")]) == 0
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert set(report["models"]) == {"tiny-ddpm", "e"}
    m = report["models"]["e"]
    assert m["synonym_rate"] is None and m["n_forget"] == 5 and m["n_retain"] == 25 and 0 <= m["UA"] <= 1
    assert set(m["retain_per_class"]) == {"square", "triangle", "star", "cross", "heart"}
    assert m["fid_retain"] >= 0 and (tmp_path / "audit" / "grid.png").exists()
    # a toy SD and a DDPM in one audit would not compare
    from erase.toy import TOY_SD

    assert main(["audit", "concept", "--model", str(TOY_SD), "--model", str(tiny), "--concept", "circle",
                 "--out", str(tmp_path / "mixed")]) == 2


def test_make_pipeline_round_trip_keeps_weights(tmp_path):
    unet = make_unet("toy", 3)
    make_pipeline(unet, ["a", "b", "c"]).save_pretrained(tmp_path / "p")
    pipe = load_ddpm(tmp_path / "p")
    assert pipe.class_names == ["a", "b", "c"]
    assert all(torch.equal(p, q) for p, q in zip(unet.parameters(), pipe.unet.parameters()))
    assert TOY_JUDGE.exists()


def test_mask_is_never_written_inside_the_source_model(tiny):
    from erase.toy import TOY_SD

    assert main(["mask", "--model", str(tiny), "--forget-class", "circle", "--out", str(tiny / "m.safetensors")]) == 2
    assert main(["mask", "--concept", "circle", "--out", str(TOY_SD / "m.safetensors")]) == 2
    assert not (tiny / "m.safetensors").exists() and not (TOY_SD / "m.safetensors").exists()
