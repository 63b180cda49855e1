"""The classification path: SalUn's mask keeps non-salient weights bit-identical, MIA separates members
from non-members, forget sets are reproducible, every method runs, and bad input is refused cleanly."""
import json

import numpy as np
import pytest
import torch

from erase.classify.data import ImageData, load_digits
from erase.classify.forget import load_split, make_split, random_indices
from erase.classify.hparams import method_config
from erase.classify.methods import METHODS
from erase.classify.methods.salun import unlearn as salun_unlearn
from erase.classify.metrics import evaluate, mia_efficacy_from_confidence, confidence
from erase.classify.models import build_model
from erase.classify.train import train_original, train_sgd
from erase.cli import main
from erase.core.errors import UserError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = build_model("small-cnn", 1, 10, width=8)
    return train_original(model, digits, epochs=2, lr=0.1, seed=0)


def test_salun_keeps_non_salient_weights_bit_identical(digits, trained):
    split = make_split(digits, fraction=0.1, seed=0)
    base = {n: p.detach().clone() for n, p in trained.named_parameters()}
    # SGD with momentum 0.9 and weight decay 5e-4: both would move masked-out weights if only grads were masked.
    cfg = {"epochs": 1, "lr": 0.05, "keep": 0.5, "momentum": 0.9, "weight_decay": 5e-4}
    out = salun_unlearn(trained, split, cfg, seed=0)
    mask = out.mask
    assert abs(mask.kept / mask.total - 0.5) < 0.01
    moved = 0
    for n, p in out.model.named_parameters():
        m = mask.masks[n]
        assert torch.equal(p[~m], base[n][~m]), n
        moved += int((p[m] != base[n][m]).sum())
    assert moved > 0.9 * mask.kept
    for n, p in trained.named_parameters():  # the original is never touched
        assert torch.equal(p, base[n])


def test_mia_separates_memorised_from_unseen():
    """Random labels on noise: a model that trained on the targets memorised them; one that never saw them
    is as unsure of them as of test data. Efficacy (share called non-member) is low vs high."""
    g = torch.Generator().manual_seed(0)
    n, c = 200, 10

    def sample(k):
        return (torch.randint(0, 256, (k, 1, 8, 8), generator=g, dtype=torch.uint8),
                torch.randint(0, c, (k,), generator=g))

    (rx, ry), (fx, fy), (tx, ty) = sample(n), sample(100), sample(n)
    data = ImageData("noise", torch.cat([rx, fx]), torch.cat([ry, fy]), tx, ty, [str(i) for i in range(c)],
                     (0.5,), (0.29,))
    retain, forget, test = torch.arange(n), torch.arange(n, n + 100), torch.arange(n)

    def fit(idx):
        torch.manual_seed(0)
        model = build_model("small-cnn", 1, c, width=16)
        return train_sgd(model, data, idx, data.train_y[idx], epochs=60, lr=0.05, schedule="const", seed=0)

    def efficacy(model):
        return mia_efficacy_from_confidence(confidence(model, data, retain), confidence(model, data, test, test=True),
                                            confidence(model, data, forget))

    memorised = efficacy(fit(torch.arange(n + 100)))
    unseen = efficacy(fit(retain))
    assert memorised < 20 and unseen > 80, (memorised, unseen)


def test_forget_sets_reproducible(digits):
    a, b = random_indices(1000, 0.1, seed=3), random_indices(1000, 0.1, seed=3)
    assert torch.equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    assert not torch.equal(a, random_indices(1000, 0.1, seed=4))
    s = make_split(digits, forget_class=3)
    assert bool((digits.train_y[s.forget_idx] == 3).all()) and not bool((digits.train_y[s.retain_idx] == 3).any())
    assert not bool((digits.test_y[s.test_idx] == 3).any())
    assert len(s.forget_idx) + len(s.retain_idx) == len(digits.train_y)


def test_forget_indices_round_trip(digits, tmp_path):
    s = make_split(digits, fraction=0.5, seed=1)
    s.save(tmp_path / "forget.json")
    t = load_split(digits, tmp_path / "forget.json")
    assert torch.equal(s.forget_idx, t.forget_idx) and torch.equal(s.retain_idx, t.retain_idx)


@pytest.mark.parametrize("kw", [{"fraction": 0.0}, {"fraction": 1.0}, {"fraction": 1.5}, {"forget_class": 99},
                                {"forget_class": -1}, {}])
def test_bad_forget_sets(digits, kw):
    with pytest.raises(UserError):
        make_split(digits, **kw)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("kind", ["random", "class"])
def test_every_method_runs(digits, trained, method, kind):
    split = make_split(digits, fraction=0.1, seed=0) if kind == "random" else make_split(digits, forget_class=2)
    cfg = method_config(method, "digits", kind, {"epochs": 0.2 if method != "retrain" else 0.1,
                                                 "fisher_samples": 64})
    if method == "iu":
        cfg = {k: v for k, v in cfg.items() if k != "epochs"}
    out = METHODS[method](trained, split, cfg, 0)
    assert out.model is not trained
    metrics = evaluate(out.model, split)
    assert set(metrics) == {"UA", "RA", "TA", "MIA"} and all(np.isfinite(v) for v in metrics.values())
    assert out.model(digits.train_batch(torch.arange(4))).shape == (4, 10)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "ckpt"
    assert main(["classify", "train", "--dataset", "digits", "--out", str(out), "--epochs", "2", "--threads", "1"]) == 0
    return out


def test_cli_train_unlearn_evaluate(checkpoint, tmp_path, capsys):
    out = tmp_path / "un"
    assert main(["classify", "unlearn", "--checkpoint", str(checkpoint), "--method", "salun", "--forget-fraction",
                 "0.1", "--epochs", "1", "--out", str(out), "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".salun-output.json", "config.json", "forget.json",
                                                     "mask.safetensors", "metrics.json", "model.safetensors"]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["unlearned"]) == {"UA", "RA", "TA", "MIA", "RTE"} and report["forget"]["n_forget"] == 144
    assert json.loads((out / "forget.json").read_text())["indices"] == random_indices(1438, 0.1, 0).tolist()
    capsys.readouterr()
    assert main(["classify", "evaluate", "--checkpoint", str(out), "--forget", str(out / "forget.json")]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["UA"] == pytest.approx(report["unlearned"]["UA"])
    # an existing output is refused without --overwrite
    assert main(["classify", "unlearn", "--checkpoint", str(checkpoint), "--method", "ft", "--forget-class", "1",
                 "--epochs", "0.1", "--out", str(out)]) == 2


def _other_arch(checkpoint, tmp_path):
    """A checkpoint whose config claims resnet18 but whose weights are a small CNN's."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg["model"]["arch"] = "resnet18"
    (bad / "config.json").write_text(json.dumps(cfg))
    return bad


@pytest.mark.parametrize("case", ["fraction0", "fraction1.5", "class99", "class-name", "keep0", "arch", "weights",
                                  "root", "no-ckpt", "over-source"])
def test_cli_bad_input_writes_nothing(checkpoint, tmp_path, capsys, case):
    out = tmp_path / "out"
    ck = str(checkpoint)
    argv = {
        "fraction0": ["unlearn", "--checkpoint", ck, "--forget-fraction", "0"],
        "fraction1.5": ["unlearn", "--checkpoint", ck, "--forget-fraction", "1.5"],
        "class99": ["unlearn", "--checkpoint", ck, "--forget-class", "99"],
        "class-name": ["unlearn", "--checkpoint", ck, "--forget-class", "dog"],
        "keep0": ["unlearn", "--checkpoint", ck, "--forget-class", "1", "--keep", "0"],
        "arch": ["unlearn", "--checkpoint", ck, "--arch", "resnet18", "--forget-class", "1"],
        "weights": ["unlearn", "--checkpoint", str(_other_arch(checkpoint, tmp_path)), "--forget-class", "1"],
        "root": ["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "missing")],
        "no-ckpt": ["unlearn", "--checkpoint", str(tmp_path / "nope"), "--forget-class", "1"],
        "over-source": ["unlearn", "--checkpoint", ck, "--forget-class", "1", "--overwrite"],
    }[case]
    if case == "over-source":
        out = checkpoint
        before = (checkpoint / "model.safetensors").read_bytes()
    assert main(["classify", *argv, "--out", str(out)]) == 2
    if case == "over-source":
        assert (checkpoint / "model.safetensors").read_bytes() == before
        return
    err = capsys.readouterr().err
    assert err.startswith("salun: error:") and len(err.strip().splitlines()) == 1
    if case == "root":
        assert "--download" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["bad"])


def test_cifar_resnet18_structure():
    """The CIFAR ResNet-18 (3x3 stem, no max-pool): ~11.2M weights, 32x32 in, logits out. Not trained here."""
    model = build_model("resnet18", 3, 10)
    n = sum(p.numel() for p in model.parameters())
    assert 11_000_000 < n < 11_300_000, n
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
