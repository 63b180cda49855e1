"""The peers behind the method interface: ESD-x/ESD-u, UCE, FMN (trained ones also run the family x method
contract in test_families.py). Here: what each method computes, checked by hand on tiny pipelines, and
the one-line refusals of options a method does not take."""
import json

import pytest
import torch
from safetensors.torch import load_file

from erase.cli import main
from erase.core.mask import Mask, select_parameters
from erase.diffusion.job import erase
from erase.diffusion.methods import METHODS
from erase.diffusion.methods.esd import output_to_eps
from erase.diffusion.methods.fmn import concept_positions
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe, load_recipe
from fixture_models.tiny_pipelines import tiny_pipeline

UNET = ("unet", "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("peers") / "sd")


def _opts(model, out, method, retain=("a blue star", "a green heart"), **kw):
    recipe = custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"], list(retain),
                           n_forget=4, n_retain=4, batch_size=2, gen_steps=2, lr=1e-3)
    kw.setdefault("steps", 3)
    return EraseOptions(recipe=recipe, out=out, model=str(model), method=method, progress=False, **kw)


def test_uce_solves_its_closed_form(sd, tmp_path):
    """Only cross-attention K/V change, and each edited W is the minimiser of UCE's objective: its gradient
    ``s_e sum_E (W c - W_old c*) c^T + s_p sum_P (W c - W_old c) c^T + lam (W - W_old)`` is zero, computed here
    by hand from the text encoder; the erased rows move toward the target's, the preserved ones stay."""
    from diffusers import StableDiffusionPipeline

    s = erase(_opts(sd, tmp_path / "uce", "uce", method_options={"preserve-scale": 2.0, "uce-lambda": 0.5}))
    assert s["steps"] == 0 and s["method"] == "uce" and s["train_seconds"] < 30
    base, new = load_file(sd.joinpath(*UNET)), load_file((tmp_path / "uce").joinpath(*UNET))
    changed = {k for k in base if not torch.equal(base[k], new[k])}
    assert changed and all(k.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for k in changed)
    assert len(changed) == 2 * sum(k.endswith("attn2.to_k.weight") for k in base)
    pipe = StableDiffusionPipeline.from_pretrained(sd)
    with torch.no_grad():
        enc = lambda p: pipe.text_encoder(pipe.tokenizer(p, padding="max_length", return_tensors="pt")  # noqa: E731
                                          .input_ids)[0][0].double()
        pairs = [(enc(f), enc(t)) for f, t in (("a red circle", "a red square"), ("a blue circle", "a blue square"))]
        keep = torch.cat([enc("a blue star"), enc("a green heart")])
    rows = [((c - c_t).abs().amax(-1) > 0).nonzero()[0].item() for c, c_t in pairs]
    c_e = torch.cat([c[i:] for (c, _), i in zip(pairs, rows)])
    c_t = torch.cat([t[i:] for (_, t), i in zip(pairs, rows)])
    for k in sorted(changed)[:4]:
        w_old, w = base[k].double(), new[k].double()
        grad = ((c_e @ w.T - c_t @ w_old.T).T @ c_e + 2.0 * (keep @ w.T - keep @ w_old.T).T @ keep
                + 0.5 * (w - w_old))
        assert grad.abs().max() < 1e-4 * (c_e.T @ c_e).abs().max() * w_old.abs().max()
        assert (c_e @ w.T - c_t @ w_old.T).norm() < 0.5 * (c_e @ w_old.T - c_t @ w_old.T).norm()


def test_esd_target_and_selections(sd, tmp_path):
    """ESD-x trains only cross-attention, ESD-u everything else; a masked ESD moves only the mask's weights."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    x, u = set(select_parameters(unet, "attn2")), set(select_parameters(unet, "not-attn2"))
    assert x and u and not x & u and x | u == {n for n, _ in unet.named_parameters()}
    base = load_file(sd.joinpath(*UNET))
    s = erase(_opts(sd, tmp_path / "esd-u", "esd-u", method_options={"sample-steps": 4}))
    assert s["data"]["forget"].startswith("none: esd-u samples x_t")
    changed = {k for k, v in load_file((tmp_path / "esd-u").joinpath(*UNET)).items() if not torch.equal(base[k], v)}
    assert changed and changed <= u
    some = sorted(u)[:3]
    mask = Mask({n: torch.rand(p.shape) < 0.5 if n in some else torch.zeros(p.shape, dtype=torch.bool)
                 for n, p in unet.named_parameters()})
    mask.save(tmp_path / "m.safetensors")
    erase(_opts(sd, tmp_path / "esd-m", "esd-x", mask_path=tmp_path / "m.safetensors",
                method_options={"sample-steps": 4}))
    new = load_file((tmp_path / "esd-m").joinpath(*UNET))
    for k in base:
        assert torch.equal(base[k][~mask.masks[k]], new[k][~mask.masks[k]])


def test_output_to_eps_inverts_each_prediction_type():
    from diffusers import DDPMScheduler

    gen = torch.Generator().manual_seed(0)
    z0, noise, t = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([5, 700])
    for kind in ("epsilon", "v_prediction", "sample"):
        s = DDPMScheduler(prediction_type=kind)
        x = s.add_noise(z0, noise, t)
        out = {"epsilon": noise, "v_prediction": s.get_velocity(z0, noise, t), "sample": z0}[kind]
        assert torch.allclose(output_to_eps(out, x, t, s), noise, atol=1e-3 if kind == "sample" else 1e-5)


def test_fmn_finds_the_concept_tokens_and_lowers_their_attention(sd, tmp_path):
    from diffusers import StableDiffusionPipeline

    tok = StableDiffusionPipeline.from_pretrained(sd).tokenizer
    pos = concept_positions(tok, "a red circle", "a red square")
    assert [tok.decode(tok("a red circle").input_ids[i]) for i in pos] == ["circle"]
    erase(_opts(sd, tmp_path / "fmn", "fmn", steps=6))
    log = [json.loads(line) for line in (tmp_path / "fmn" / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["forget"] < log[0]["forget"]  # the attention mass on "circle" falls


def test_recipe_settings_per_method():
    r = load_recipe("circle", method="esd-x")
    methods = r.extra.get("methods", {})
    if "esd-x" in methods:
        assert r.lr == methods["esd-x"].get("lr", r.lr)
    assert load_recipe("circle", method="esd-x", lr=0.5).lr == 0.5  # the command line wins


def test_refusals(sd, tmp_path, capsys):
    base = ["erase", "--model", str(sd), "--forget-prompt", "a red circle", "--misaligned-prompt", "a red square",
            "--out", str(tmp_path / "o")]
    Mask({"conv_in.weight": torch.ones(3, 3, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    cases = [(["--method", "salun", "--negative-guidance", "2"], "--negative-guidance: an option of esd-x, esd-u"),
             (["--method", "uce", "--mask", str(tmp_path / "m.safetensors")], "closed-form"),
             (["--method", "uce", "--lr", "1e-3"], "--lr: --method uce is closed-form"),
             (["--method", "esd-x", "--alpha", "0.5"], "--alpha: --method esd-x has no retain term"),
             (["--method", "esd-u", "--selection", "all"], "--selection: --method esd-u trains its own weights"),
             (["--method", "fmn", "--keep", "0.3"], "--keep: --method fmn uses no saliency mask"),
             (["--method", "esd-x", "--erase-scale", "2"], "--erase-scale: an option of uce"),
             (["--method", "fmn", "--retain-prompt", "a blue star"], "--retain-prompt: --method fmn has no retain")]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["esd-x", "esd-u", "uce", "fmn", "ant"])
def test_every_peer_exports_a_loadable_pipeline_with_its_record(sd, tmp_path, name):
    from diffusers import StableDiffusionPipeline

    kw = ({"method_options": {"sample-steps": 4}} if name.startswith("esd") else
          {"method_options": {"sample-steps": 4, "early-steps": 1, "heavy-hitters": 1}} if name == "ant" else {})
    erase(_opts(sd, tmp_path / name, name, **kw))
    rec = json.loads((tmp_path / name / "recipe.json").read_text())
    assert rec["summary"]["method"] == name and rec["options"]["method"] == name
    card = (tmp_path / name / "README.md").read_text()
    assert METHODS[name].card in card and "RL method" not in card and "mask guidance" not in card
    assert ("closed-form edit, no training" in card) == (name == "uce")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / name)
    img = pipe(["a red circle"], num_inference_steps=2, output_type="pt").images
    assert torch.isfinite(img).all()
