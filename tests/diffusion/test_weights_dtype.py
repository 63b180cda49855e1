"""Issue 29's --weights-dtype bf16: the UNet held in bf16 while it trains, the masked entries on float32
masters. Saved as float32, weights outside the mask are the base's bf16 rounding, bit for bit; the masters make Adam's small steps
count (the same trajectory as float32 Adam on the same gradients); a checkpoint keeps them; bad input is one
line."""
from __future__ import annotations

import json

import pytest
import torch

from erase.core.mask import Mask, compute_mask
from erase.core.masked_optim import MaskedAdam, MaskedParameters
from erase.diffusion.job import erase
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from erase.toy.models import make_unet
from fixture_models.tiny_pipelines import tiny_pipeline


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("wdtype") / "sd")


def test_a_bf16_erasure_moves_the_masked_entries_and_rounds_the_rest_only(sd, tmp_path):
    from safetensors.torch import load_file

    recipe = custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"], ["a green star"],
                           n_forget=4, n_retain=4, batch_size=2, gen_steps=2, lr=3e-3, alpha=0.5)
    out = tmp_path / "out"
    summary = erase(EraseOptions(recipe=recipe, out=out, model=str(sd), progress=False, steps=3,
                                 weights_dtype="bf16"))
    base = load_file(sd / "unet" / "diffusion_pytorch_model.safetensors")
    new = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    mask = Mask.load(out / "mask.safetensors")
    assert {t.dtype for t in new.values()} == {torch.float32}  # saved as float32 ...
    assert all(torch.equal(t, t.to(torch.bfloat16).float()) for t in new.values())  # ... holding bf16 values
    moved = 0
    for n, m in mask.masks.items():
        rounded = base[n].to(torch.bfloat16).float()
        assert torch.equal(new[n][~m], rounded[~m]), n
        moved += int((new[n][m] != rounded[m]).sum())
    assert moved > 0.5 * summary["mask"]["kept"]
    rec = json.loads((out / "recipe.json").read_text())
    assert rec["options"]["weights_dtype"] == "bf16" and rec["options"]["mixed_precision"] == "bf16"
    assert "held in bf16" in (out / "README.md").read_text()
    from diffusers import StableDiffusionPipeline as P

    given = P.from_pretrained(sd, local_files_only=True)  # a pipeline handed over in memory: float32 again after
    erase(EraseOptions(recipe=recipe, out=tmp_path / "again", model=str(sd), progress=False, steps=3,
                       weights_dtype="bf16"), pipe=given)
    assert given.unet.dtype == torch.float32 and given.text_encoder.dtype == torch.float32
    assert given(["a red square"], num_inference_steps=2, height=32, width=32, output_type="np").images.shape[0] == 1
    again = load_file(tmp_path / "again" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(again[n], p.detach()) for n, p in given.unet.named_parameters())
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert pipe(["a red square"], num_inference_steps=2, height=32, width=32, output_type="np").images.shape[0] == 1


class _WholeMasterAdam(MaskedAdam):
    """MaskedAdam as it was before issue 29's split masters: a whole float32 master per bf16 weight."""

    @staticmethod
    def _store_master(p, state, values):
        state["master"] = values


def _bf16_run(steps: int, resume_at: int | None = None, cls=MaskedAdam, resume_cls=None):
    """Masked Adam on the toy UNet in bf16 (keep 0.3), small steps; the weights, the optimizer and the masters'
    float32 reference (torch Adam on float32 copies fed the same gradients)."""
    torch.manual_seed(0)
    unet = make_unet()
    z, t, ctx = torch.randn(2, 4, 8, 8), torch.randint(0, 1000, (2,)), torch.randn(2, 77, 64)
    mask = compute_mask(unet, lambda b: unet(z, t, ctx).sample.pow(2).mean(), [0], keep=0.3, progress=False)
    unet.to(torch.bfloat16)
    tp = MaskedParameters(unet, mask)
    opt = cls(tp, lr=1e-4)
    ref = {n: p.detach().float().clone().requires_grad_(True) for n, p in tp.params.items()}
    ref_opt = torch.optim.Adam(ref.values(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        if step == resume_at:
            saved = opt.state_dict()
            opt.close()
            opt = (resume_cls or cls)(tp, lr=1e-4)
            opt.load_state_dict(saved)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = unet(torch.randn(2, 4, 8, 8, generator=gen).bfloat16(), t, ctx.bfloat16()).sample.float().pow(2).mean()
        grads = torch.autograd.grad(loss, list(tp.params.values()), retain_graph=True)
        for (n, r), g in zip(ref.items(), grads):  # the same gradients, masked, in float32
            r.grad = g.float() * mask.masks[n]
        ref_opt.step()
        loss.backward()
        tp.step(opt)
    return unet, opt, mask, ref


def test_bf16_masters_follow_float32_adam_and_resume():
    unet, opt, mask, ref = _bf16_run(6)
    params = dict(unet.named_parameters())
    for p, st in opt.state.items():
        n = next(k for k, v in params.items() if v is p)
        i = opt.index.get(p)
        want = ref[n].detach().reshape(-1) if i is None else ref[n].detach().reshape(-1)[i.long()]
        master = opt.master_of(p).reshape(-1)
        assert master.dtype == torch.float32 and torch.allclose(master, want, rtol=1e-6, atol=1e-8), n
        assert "master" not in st and st["master_low"].dtype == torch.int16  # 16 bits beside the weight
        got = p.detach().reshape(-1) if i is None else p.detach().reshape(-1)[i.long()]
        assert torch.equal(got, master.to(torch.bfloat16))  # the weight is its master's rounding
    resumed, _, _, _ = _bf16_run(6, resume_at=3)
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), resumed.state_dict().values()))
    opt.close()


def test_split_masters_train_bit_for_bit_as_whole_float32_masters_and_convert_them():
    """The 16-bit masters are the float32 masters: the same weights bit for bit, and a checkpoint holding whole
    masters (before issue 29's split) resumes into the same run."""
    split, opt, _, _ = _bf16_run(6)
    whole, whole_opt, _, _ = _bf16_run(6, cls=_WholeMasterAdam)
    assert any("master" in st for st in whole_opt.state.values())
    assert all(torch.equal(a.view(torch.int16), b.view(torch.int16))
               for a, b in zip(split.state_dict().values(), whole.state_dict().values()))
    converted, conv_opt, _, _ = _bf16_run(6, resume_at=3, cls=_WholeMasterAdam, resume_cls=MaskedAdam)
    assert not any("master" in st for st in conv_opt.state.values())
    assert all(torch.equal(a.view(torch.int16), b.view(torch.int16))
               for a, b in zip(split.state_dict().values(), converted.state_dict().values()))
    for o in (opt, whole_opt, conv_opt):
        o.close()


@pytest.mark.parametrize("argv, message", [
    (["--weights-dtype", "bf16", "--mixed-precision", "fp16"], "drop --mixed-precision fp16"),
    (["--weights-dtype", "bf16", "--lora-rank", "2"], "export a LoRA from an fp32 run"),
    (["--weights-dtype", "bf16", "--method", "uce"], "--method uce is closed-form"),
])
def test_cli_refuses_bad_weights_dtype_input_in_one_line(sd, erase_refuses, argv, message):
    erase_refuses(sd, argv, message)


def test_a_dtype_the_device_cannot_compute_in_is_refused_in_one_line():
    from erase.core.errors import UserError
    from erase.diffusion.prepare import check_compute_dtype

    check_compute_dtype(torch.device("cpu"), torch.bfloat16, "--weights-dtype bf16")  # this CPU can
    with pytest.raises(UserError, match="cannot compute in") as e:  # no convolution in float8 on a CPU
        check_compute_dtype(torch.device("cpu"), torch.float8_e4m3fn, "--weights-dtype x")
    assert len(str(e.value).splitlines()) == 1
