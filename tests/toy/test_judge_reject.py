"""The judge's "none of these" outcome, and scores that see what an erased prompt draws."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from erase.toy import PIPELINES, TOY_JUDGE, TOY_SD


@pytest.fixture(scope="module")
def judge():
    from erase.toy.judge import load_judge

    return load_judge(TOY_JUDGE)


@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(TOY_SD / "vae").eval()


def test_shipped_judge_accepts_drawings_and_rejects_failures(judge, vae):
    """Held-out drawings and their VAE reconstructions: shape accuracy >= 97% counting a rejection as wrong,
    false rejects <= 2%; failures (blank, noise, blurred away, decoded random latents) rejected >= 95%."""
    from erase.toy import shapes as S
    from erase.toy.judge import judge_images
    from erase.toy.reject import failure_set, reconstruct

    data = S.draw_set(300, seed=777, frame_rate=0.5)
    x = data.as_float()
    for images in (x, reconstruct(vae, x)):
        j = judge_images(judge, images)
        assert ((j["shape"] == data.shape_ids) & ~j["reject"]).mean() >= 0.97
        assert j["reject"].mean() <= 0.02
    bad, kinds = failure_set(280, seed=778, vae=vae)
    rejected = judge_images(judge, bad)["reject"]
    for kind in ("blank", "noise", "blur", "latent"):
        assert rejected[kinds == kind].mean() >= 0.95, kind
    cfg = json.loads((TOY_JUDGE / "config.json").read_text())
    assert cfg["reject"]["false_reject_rate"] <= 0.01  # the build's own held-out figure, saved with the judge


def test_a_judge_without_the_reject_head_is_refused_with_the_command_to_fix_it(tmp_path, judge):
    """An older judge (no reject head) given to an audit that counts what erased prompts draw: one line, exit 2."""
    from erase.toy.judge import save_judge
    from erase.toy.models import Judge

    old = Judge(judge.n_shapes, judge.n_colours, width=judge.width, n_attribute=judge.n_attribute)
    old.load_state_dict({k: v for k, v in judge.state_dict().items() if not k.startswith("reject")})
    save_judge(old, tmp_path / "old-judge")
    assert "reject" not in json.loads((tmp_path / "old-judge" / "config.json").read_text())
    r = subprocess.run([sys.executable, "-m", "erase.cli", "audit", "concept", "--model", str(TOY_SD),
                        "--concept", "circle", "--judge", str(tmp_path / "old-judge"), "--out", str(tmp_path / "a"),
                        "--per-colour", "1", "--retain-per-pair", "1"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if "warn" not in ln.lower()]
    assert len(lines) == 1 and "salun toy reject-head" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "a" / "report.json").exists()


def test_a_model_that_draws_noise_for_the_erased_prompt_scores_far_from_retrain(monkeypatch):
    """The old score counted noise as erased: a model drawing noise for "circle" prompts had Retrain's forget
    rate. Now what the erased prompt draws is scored, and such a model lands far from Retrain."""
    import erase.diffusion.toy_metrics as M

    real = M._generate

    def noise_for_circles(pipe, prompts, seeds):
        images = real(pipe, prompts, seeds)
        erased = torch.tensor([("circle" in p or "disk" in p) for p in prompts])
        g = torch.Generator().manual_seed(0)
        return torch.where(erased[:, None, None, None], torch.rand(images.shape, generator=g) * 2 - 1, images)

    retrain = M.shape_metrics(PIPELINES / "toy-sd-retrain-circle", TOY_JUDGE, "circle", "square", "smoke")
    monkeypatch.setattr(M, "_generate", noise_for_circles)
    noisy = M.shape_metrics(TOY_SD, TOY_JUDGE, "circle", "square", "smoke")
    for row in (retrain, noisy):
        M.add_erased_prompt_fid(row, retrain)
    # what the old score saw: both erase the circle completely
    assert noisy["forget_rate"] == 0.0 and retrain["forget_rate"] <= 0.1
    assert noisy["erased_prompt_reject_rate"] >= 0.9 and noisy["erased_prompt_acc"] <= 0.1
    assert retrain["erased_prompt_acc"] >= 0.8
    gap = M.gap_to_retrain(noisy, retrain, M.GAP_TERMS[("shape", "tune")])
    assert gap["gap_to_retrain"] >= 0.2 and gap["gap_to_retrain_ci"][0] > 0.05
    assert M.gap_to_retrain(retrain, retrain, M.GAP_TERMS[("shape", "tune")])["gap_to_retrain"] == 0.0


def test_wilson_interval_and_separation():
    from erase.core.stats import separated, wilson

    lo, hi = wilson(0, 200)
    assert lo == 0.0 and 0.015 < hi < 0.02  # 0 of 200 still leaves up to about 1.9%
    lo, hi = wilson(176, 200)
    assert lo < 0.88 < hi and hi - lo < 0.1
    assert wilson(5, 0) == (0.0, 1.0) and wilson(200, 200)[1] == 1.0
    assert separated((0.1, 0.2), (0.25, 0.3)) and not separated((0.1, 0.26), (0.25, 0.3))


def test_gap_interval_is_conservative_and_holds_the_estimate():
    from erase.diffusion.toy_metrics import gap_to_retrain

    ref = {"retain_acc": 1.0, "retain_acc_ci": [0.99, 1.0], "fid_retain": 1.0, "fid_retain_ci": [0.5, 1.5]}
    row = {"retain_acc": 0.88, "retain_acc_ci": [0.85, 0.91], "fid_retain": 11.0, "fid_retain_ci": [9.0, 13.0]}
    g = gap_to_retrain(row, ref, ("retain_acc", "fid_retain", "absent_term"))
    assert g["gap_terms"] == pytest.approx({"retain_acc": 0.12, "fid_retain": 0.2})
    assert g["gap_to_retrain_ci"][0] <= g["gap_to_retrain"] <= g["gap_to_retrain_ci"][1]
    assert np.isclose(g["gap_to_retrain"], 0.16)


def test_named_shape_and_colour_of_a_prompt():
    from erase.diffusion.toy_metrics import named_shape_colour

    assert named_shape_colour("a framed red disk") == ("circle", "red")
    assert named_shape_colour("a blue plus sign in a gallery") == ("cross", "blue")
    assert named_shape_colour("a bordered figure") == (None, None)
