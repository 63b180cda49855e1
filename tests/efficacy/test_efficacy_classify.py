"""SalUn's class-wise forgetting on the digits classifier forgets the class and keeps the others."""
import pytest
import torch

from erase.classify.data import load_digits
from erase.classify.forget import make_split
from erase.classify.hparams import method_config
from erase.classify.methods import METHODS
from erase.classify.metrics import evaluate
from erase.classify.models import build_model
from erase.classify.train import train_original

# The original: the digits small CNN (erase/classify/hparams.py ORIGINAL: width 32, 30 epochs at lr 0.1),
# trained for 15 epochs. SalUn with the tuned class-wise settings (lr 0.05, keep 0.5) for 3 epochs, not 10.
ORIGINAL = {"epochs": 15, "lr": 0.1, "seed": 0}
UNLEARN = {"epochs": 3}
FORGET_CLASS = 2
# The project's figures (erase/classify/metrics.py, in %) turned so that higher means "still there" for the
# forget side: forget_acc = 100 - UA, and mia_member = 100 - MIA-efficacy (the share of forget samples the
# membership attack still calls members). RA and TA are retain-set and test accuracy (other classes).
BARS = {"forget": {"forget_acc": 20.0, "mia_member": 20.0}, "retain": {"RA": 90.0, "TA": 90.0},
        "shown": 80.0, "max_drop": 5.0}


def figures(model, split) -> dict:
    m = evaluate(model, split)
    return {"forget_acc": 100.0 - m["UA"], "mia_member": 100.0 - m["MIA"], "RA": m["RA"], "TA": m["TA"]}


def test_class_is_forgotten_and_other_classes_kept(assert_erased):
    """Measured at these settings (one torch thread, 2-core CPU):

    - original (seeds 0-2): forget_acc 100, mia_member 100, RA 100, TA 97.5;
    - unlearned, class 2, seeds 0-2: forget_acc 0, mia_member 0, RA 99.9-100, TA 95.4-98.5; seed 0, classes
      0, 1, 3, 5, 7, 9: forget_acc 0, mia_member 0, RA 99.8-100, TA 97.2-99.4 (within 0.4 of the original's);
    - the same run at lr 0: exactly the original's figures (the check below must reject them).
    Thresholds: forget_acc and mia_member <= 20; RA and TA >= 90 and within 5 points of the original's.
    Even 1 epoch forgets (forget_acc 0), with TA 94.8-96.3.
    Cost: 10 s of CPU for this file alone, imports included (one torch thread; 15 s wall on the busy 2 cores).
    """
    data = load_digits()
    torch.manual_seed(0)
    original = train_original(build_model("small-cnn", 1, data.num_classes), data, **ORIGINAL)
    split = make_split(data, forget_class=FORGET_CLASS)
    base = figures(original, split)
    cfg = method_config("salun", "digits", "class", UNLEARN)
    erased = figures(METHODS["salun"](original, split, cfg, 0).model, split)
    assert_erased(base, erased, **BARS)
    # a no-op: the same unlearning at learning rate 0 keeps the original's figures, which the check rejects
    still = figures(METHODS["salun"](original, split, {**cfg, "lr": 0.0}, 0).model, split)
    with pytest.raises(AssertionError, match="not erased: forget_acc"):
        assert_erased(base, still, **BARS)
