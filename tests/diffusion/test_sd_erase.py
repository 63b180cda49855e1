"""The SD erasure job end to end on the shipped toy pipeline, with tiny settings."""
import hashlib
import json

import pytest
import torch

import erase.diffusion.losses as losses
from erase.cli import main
from erase.core.errors import UserError
from erase.core.mask import Mask
from erase.diffusion.recipes import custom_recipe, load_recipe
from erase.diffusion.job import EraseOptions, TrainingDiverged, erase
from erase.toy import TOY_SD

TINY = dict(n_forget=8, n_retain=8, steps=4, batch_size=4, gen_steps=3)


def _opts(tmp_path, name="out", **kw):
    recipe = load_recipe("circle", **{k: v for k, v in TINY.items()})
    return EraseOptions(recipe=recipe, out=tmp_path / name, work_dir=tmp_path / "work", progress=False,
                        checkpoint_every=2, **kw)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def erased(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("erase")
    summary = erase(_opts(tmp, lora_rank=4, audit=True))
    return tmp, summary


def test_export_loads_offline_and_only_masked_weights_moved(erased):
    from diffusers import StableDiffusionPipeline

    tmp, summary = erased
    out = tmp / "out"
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    base = StableDiffusionPipeline.from_pretrained(TOY_SD, local_files_only=True)
    mask = Mask.load(out / "mask.safetensors")
    assert mask.meta["n_forget"] == 8 and mask.meta["keep"] == 0.5 and "a red circle" in mask.meta["prompts"]
    b = dict(base.unet.named_parameters())
    changed = 0
    for n, p in pipe.unet.named_parameters():
        m = mask.masks[n]
        assert torch.equal(p.detach()[~m], b[n].detach()[~m]), n
        changed += int((p.detach()[m] != b[n].detach()[m]).sum())
    assert changed > 0
    # untouched components are copied file for file
    for f in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer.json"):
        assert _sha(out / f) == _sha(TOY_SD / f)
    rec = json.loads((out / "recipe.json").read_text())
    assert rec["recipe"]["name"] == "circle" and rec["summary"]["steps"] == 4
    card = (out / "README.md").read_text()
    assert "SalUn" in card and "## Audit" in card
    assert 0 <= summary["audit"]["UA"] <= 1 and f'"retain_acc": {summary["audit"]["retain_acc"]}' in card
    assert len((out / "training_log.jsonl").read_text().splitlines()) == 4
    assert not any(p.name.endswith(".tmp") for p in tmp.iterdir())


def test_lora_adapter_applies_to_the_base(erased):
    from diffusers import StableDiffusionPipeline

    tmp, summary = erased
    assert 0 <= summary["lora"]["relative_error"] < 1
    pipe = StableDiffusionPipeline.from_pretrained(TOY_SD, local_files_only=True)
    before = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.detach().clone()
    pipe.load_lora_weights(tmp / "out-lora")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    after = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.detach()
    assert not torch.equal(before, after)


def test_refuses_source_and_existing_output(tmp_path, erased):
    tmp, _ = erased
    with pytest.raises(UserError, match="source model"):
        erase(EraseOptions(recipe=load_recipe("circle"), out=TOY_SD, model=str(TOY_SD), overwrite=True))
    with pytest.raises(UserError, match="source model"):  # the default model is protected too
        erase(EraseOptions(recipe=load_recipe("circle"), out=TOY_SD / "unet", overwrite=True))
    with pytest.raises(UserError, match="exists"):
        erase(_opts(tmp))


def test_resume_continues_to_the_same_weights(tmp_path, interrupt_at):
    from safetensors.torch import load_file

    erase(_opts(tmp_path, "straight"))
    disarm = interrupt_at(losses, "misaligned_loss", 3)
    with pytest.raises(KeyboardInterrupt):
        erase(_opts(tmp_path, "resumed"))
    assert not (tmp_path / "resumed").exists()
    assert (tmp_path / "work" / "checkpoint-2" / "state.json").exists()
    disarm()
    other = _opts(tmp_path, "other", resume=True)
    other.recipe.keep = 0.3  # another mask: the checkpoint's weights moved outside it
    with pytest.raises(UserError, match="another mask"):
        erase(other)
    erase(_opts(tmp_path, "resumed", resume=True))
    a = load_file(tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "resumed" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_stops_with_a_clear_message(tmp_path, monkeypatch):
    real = losses.misaligned_loss
    calls = {"n": 0}

    def nan_at_3(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(losses, "misaligned_loss", nan_at_3)
    with pytest.raises(TrainingDiverged, match="checkpoint-2"):
        erase(_opts(tmp_path))
    assert not (tmp_path / "out").exists() and (tmp_path / "work" / "checkpoint-2").exists()


def test_full_disk_mid_export_keeps_earlier_output(tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    (out / "model_index.json").write_text("{}")  # an earlier export (salun's: with its recipe.json), which
    (out / "recipe.json").write_text("{}")  # --overwrite may replace

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(UNet2DConditionModel, "save_pretrained", full)
    with pytest.raises(OSError, match="No space"):
        erase(_opts(tmp_path, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "model_index.json", "recipe.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_mask_from_another_model_is_refused(tmp_path):
    Mask({"conv_in.weight": torch.ones(3, 3, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    with pytest.raises(UserError, match="another model"):
        erase(_opts(tmp_path, mask_path=tmp_path / "m.safetensors"))


def test_bad_recipes():
    with pytest.raises(UserError, match="non-empty"):
        custom_recipe([], ["x"], ["y"])
    with pytest.raises(UserError, match="non-empty"):
        custom_recipe(["a circle"], [""], ["y"])
    with pytest.raises(UserError, match="unknown concept"):
        load_recipe("octagon")


def test_cli_mask_then_erase(tmp_path, capsys):
    tiny = ["--n-forget", "8", "--batch-size", "4", "--work-dir", str(tmp_path / "w")]
    assert main(["mask", "--concept", "square", "--out", str(tmp_path / "m.safetensors"), *tiny]) == 0
    assert "weights (50.0%)" in capsys.readouterr().out
    rc = main(["erase", "--forget-prompt", "a red square", "--misaligned-prompt", "a red star",
               "--retain-prompt", "a blue heart", "--mask", str(tmp_path / "m.safetensors"), "--steps", "2",
               "--n-retain", "4", "--out", str(tmp_path / "e"), *tiny])
    # the mask was computed from the square recipe's prompts, on the same model: accepted
    assert rc == 0 and (tmp_path / "e" / "model_index.json").exists()
    assert main(["erase", "--forget-prompt", "a red square", "--out", str(tmp_path / "f")]) == 2
    assert "--misaligned-prompt" in capsys.readouterr().err


def test_bf16_mixed_precision_and_gradient_checkpointing_run_on_cpu(tmp_path):
    summary = erase(_opts(tmp_path, mixed_precision="bf16", gradient_checkpointing=True, device="cpu"))
    assert summary["steps"] == 4 and (tmp_path / "out" / "unet" / "config.json").exists()


def test_lora_factors_of_large_matrices_use_a_truncated_svd():
    """A rank-3 change of a 300 x 200 matrix (and of a conv) is recovered exactly by the randomised SVD;
    a full-rank change's error is close to the exact SVD's optimum."""
    from erase.core.export import lora_from_delta

    g = torch.Generator().manual_seed(0)
    base = {"a.weight": torch.randn(300, 200, generator=g), "c.weight": torch.randn(96, 64, 3, 3, generator=g),
            "a.bias": torch.zeros(300)}
    low = torch.randn(300, 3, generator=g) @ torch.randn(3, 200, generator=g)
    tuned = {"a.weight": base["a.weight"] + low, "c.weight": base["c.weight"].clone(), "a.bias": torch.ones(300)}
    tuned["c.weight"] += (torch.randn(96, 2, generator=g) @ torch.randn(2, 64 * 9, generator=g)).reshape(96, 64, 3, 3)
    state, report = lora_from_delta(base, {k: v for k, v in tuned.items() if k != "a.bias"}, rank=4)
    assert report["relative_error"] < 1e-4 and report["modules"] == 2 and report["seconds"] >= 0
    b, a = state["a.lora_B.weight"], state["a.lora_A.weight"]
    assert torch.allclose(b @ a, low, atol=1e-3)
    _, with_bias = lora_from_delta(base, tuned, rank=4)
    total = low.pow(2).sum() + (tuned["c.weight"] - base["c.weight"]).pow(2).sum() + 300
    assert with_bias["not_represented"] == ["a.bias"]  # the bias change is all of the error
    assert abs(with_bias["relative_error"] - float((300 / total).sqrt())) < 1e-4
    full = {"a.weight": base["a.weight"] + torch.randn(300, 200, generator=g)}
    _, rep = lora_from_delta(base, full, rank=8, names=["a.weight"])
    s = torch.linalg.svdvals(full["a.weight"] - base["a.weight"])
    optimum = float((s[8:].pow(2).sum() / s.pow(2).sum()).sqrt())
    assert optimum <= rep["relative_error"] <= optimum * 1.01


def test_lora_base_weights_are_read_from_the_source_files():
    from diffusers import StableDiffusionPipeline

    from erase.core.export import SourceWeights, base_unet_weights

    pipe = StableDiffusionPipeline.from_pretrained(TOY_SD, local_files_only=True)
    base = base_unet_weights(pipe, pipe.unet)
    assert isinstance(base, SourceWeights)  # memory-mapped, one tensor at a time: no second UNet in memory
    params = dict(pipe.unet.named_parameters())
    assert set(base) == set(params) and all(torch.equal(base[n], params[n].detach()) for n in list(params)[:20])
