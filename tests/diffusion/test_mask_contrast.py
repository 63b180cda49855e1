"""SalUn's contrastive saliency (issue 27: "saliency that spares what must be kept"): weights ranked by forget
saliency / (1 + C x retain saliency / its mean). Here: the engine spares a weight the retain loss needs and
leaves the paper's map alone at C = 0; the job draws retain images for it, records it, and reuses its cache
only for the same C; bad input is refused before any work."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import erase.diffusion.data as D
from erase.cli import main
from erase.core.mask import Mask, compute_mask, contrast_scores
from erase.diffusion.job import erase
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from erase.toy import TOY_DDPM
from fixture_models.tiny_pipelines import tiny_pipeline


def _two_weight_model():
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, 1.0]]))
    return m


def test_the_contrast_spares_the_weight_the_retain_loss_needs():
    """Forget loss: both weights equally salient, the first a little more; retain loss: only the first."""
    forget_x, retain_x = torch.tensor([[1.01, 1.0]]), torch.tensor([[5.0, 0.0]])

    def mask(contrast):
        m = _two_weight_model()
        return compute_mask(m, lambda x: m(x).sum(), [forget_x], keep=0.5, progress=False, contrast=contrast,
                            spare=(lambda x: m(x).pow(2).sum(), [retain_x], 1)).masks["weight"].tolist()

    assert mask(0.0) == [[True, False]]  # the paper's map: the larger forget gradient
    assert mask(1.0) == [[False, True]]  # the first weight carries the retain loss: spared


def test_contrast_zero_is_the_papers_map_and_scores_stay_non_negative():
    g = torch.Generator().manual_seed(0)
    forget = {"a": torch.randn(50, generator=g), "b": torch.randn(7, 3, generator=g)}
    retain = {k: torch.randn(v.shape, generator=g) for k, v in forget.items()}
    same = contrast_scores({k: v.clone() for k, v in forget.items()}, {k: v.clone() for k, v in retain.items()}, 0.0)
    assert all(torch.equal(same[k], forget[k].abs()) for k in forget)
    spared = contrast_scores({k: v.clone() for k, v in forget.items()}, {k: v.clone() for k, v in retain.items()}, 2.0)
    assert all(bool((spared[k] >= 0).all()) and bool((spared[k] <= forget[k].abs()).all()) for k in forget)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("contrast") / "sd")


def _opts(model, out, contrast: float, alpha: float = 0.0, **kw):
    recipe = custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"],
                           ["a green star", "a yellow heart"], n_forget=4, n_retain=4, batch_size=2, gen_steps=2,
                           lr=3e-3, alpha=alpha, mask_contrast=contrast)
    return EraseOptions(recipe=recipe, out=out, model=str(model), progress=False, steps=2, **kw)


def test_the_job_draws_retain_images_for_the_mask_and_records_the_contrast(sd, tmp_path):
    plain = erase(_opts(sd, tmp_path / "plain", 0.0))
    spared = erase(_opts(sd, tmp_path / "spared", 1.0))  # alpha 0: training takes no retain images, the mask does
    assert "mask_contrast" not in plain["mask"] and spared["mask"]["mask_contrast"] == 1.0
    assert spared["mask"]["n_retain"] == 4 and spared["n_retain"] == 0
    a, b = Mask.load(tmp_path / "plain" / "mask.safetensors"), Mask.load(tmp_path / "spared" / "mask.safetensors")
    assert a.kept == pytest.approx(b.kept, rel=1e-3)  # the same share of weights ...
    assert any(not torch.equal(a.masks[n], b.masks[n]) for n in a.masks)  # ... chosen otherwise
    assert b.meta["mask_contrast"] == 1.0 and b.meta["retain_prompts"] == ["a green star", "a yellow heart"]
    card = (tmp_path / "spared" / "README.md").read_text()
    assert "contrastive, sparing the retain images' salient weights" in card and "contrastive" not in (
        tmp_path / "plain" / "README.md").read_text()
    recipe = json.loads((tmp_path / "spared" / "recipe.json").read_text())
    assert json.dumps(recipe).count('"mask_contrast": 1.0') >= 1


def test_a_cached_mask_is_reused_only_for_the_same_contrast(sd, tmp_path, monkeypatch):
    import erase.diffusion.saliency as S

    made = []
    real = S.mask_for
    monkeypatch.setattr(S, "mask_for", lambda *a, **k: made.append(a[1].mask_contrast) or real(*a, **k))
    work = tmp_path / "work"
    for i, c in enumerate((1.0, 1.0, 2.0)):
        erase(_opts(sd, tmp_path / f"o{i}", c, work_dir=work))
    assert made == [1.0, 2.0]


def _refused(capsys, argv, fragment):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1 and fragment in lines[0], (rc, err)


def test_a_contrast_without_retain_data_is_refused_before_any_drawing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawn = []
    monkeypatch.setattr(D, "generate_image_folder", lambda *a, **k: drawn.append(1))
    custom = ["--forget-prompt", "a red circle", "--misaligned-prompt", "a red square", "--mask-contrast", "1"]
    _refused(capsys, ["erase", *custom, "--out", "o"], "recipe 'custom' has none (give --retain-prompt")
    _refused(capsys, ["mask", "--forget-prompt", "a red circle", "--mask-contrast", "1", "--out", "m.safetensors"],
             "spares the weights the retain images need")
    for cmd in ("erase", "mask"):  # the class-conditional DDPM's mask is the paper's
        _refused(capsys, [cmd, "--model", str(TOY_DDPM), "--forget-class", "circle", "--mask-contrast", "1",
                          "--out", "o"], "--mask-contrast")
    assert not drawn and sorted(os.listdir(tmp_path)) == []


def test_salun_mask_computes_the_contrastive_mask_alone(sd, tmp_path):
    from erase.diffusion.saliency import make_mask

    opts = _opts(sd, tmp_path / "unused", 1.0)
    mask = make_mask(opts.recipe, tmp_path / "m.safetensors", model=str(sd))
    saved = Mask.load(tmp_path / "m.safetensors")
    assert saved.meta["mask_contrast"] == 1.0 and saved.meta["n_retain"] == 4 and saved.kept == mask.kept
    # an erase given this mask records its contrast, as it records its keep and selection
    out = erase(_opts(sd, tmp_path / "given", 0.0, mask_path=tmp_path / "m.safetensors"))
    assert out["mask"]["mask_contrast"] == 1.0


def test_retain_data_given_at_contrast_zero_changes_nothing():
    forget_x, retain_x = torch.tensor([[1.01, 1.0]]), torch.tensor([[5.0, 0.0]])
    m = _two_weight_model()
    plain = compute_mask(m, lambda x: m(x).sum(), [forget_x], keep=0.5, progress=False)
    m = _two_weight_model()
    given = compute_mask(m, lambda x: m(x).sum(), [forget_x], keep=0.5, progress=False, contrast=0.0,
                         spare=(lambda x: m(x).pow(2).sum(), [retain_x], 1))
    assert torch.equal(plain.masks["weight"], given.masks["weight"]) and "mask_contrast" not in given.meta
