"""The paper's metrics, in %: UA = 100 - forget accuracy, RA, TA, and MIA-efficacy.

MIA-efficacy (SalUn's reference attack): an RBF SVC (C = 3, gamma "auto") on one feature, the softmax
confidence of the true label, trained on retain samples labelled member (as many as there are test
samples, drawn with a fixed seed) and test samples labelled non-member; the efficacy is the share of
forget samples it calls non-member. High efficacy: the forget set looks unseen.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import ImageData
from .forget import ForgetSplit

MIA_SEED = 0  # which retain samples train the attack: fixed, so that methods are judged on the same attack


@torch.no_grad()
def logits(model: nn.Module, data: ImageData, idx: torch.Tensor, test: bool = False, batch_size: int = 512,
           device: str = "cpu") -> torch.Tensor:
    model.to(device).eval()
    out = []
    for s in range(0, len(idx), batch_size):
        b = idx[s:s + batch_size]
        x = data.test_batch(b, device) if test else data.train_batch(b, device)
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, data.num_classes)


def accuracy(model, data, idx, test=False, device="cpu") -> float:
    y = (data.test_y if test else data.train_y)[idx]
    if len(idx) == 0:
        return float("nan")
    return 100.0 * float((logits(model, data, idx, test, device=device).argmax(1) == y).float().mean())


def confidence(model, data, idx, test=False, device="cpu") -> np.ndarray:
    """Softmax probability of the true label, one per sample."""
    y = (data.test_y if test else data.train_y)[idx]
    p = logits(model, data, idx, test, device=device).softmax(1)
    conf = p.gather(1, y.view(-1, 1)).squeeze(1).numpy().astype(np.float64)
    return np.nan_to_num(conf, nan=0.0)  # a diverged model (GA with a large lr) is confident of nothing


def mia_efficacy_from_confidence(member: np.ndarray, non_member: np.ndarray, target: np.ndarray) -> float:
    """Fit the SVC on member (label 1) vs non-member (label 0) confidences; % of ``target`` called non-member."""
    from sklearn.svm import SVC

    x = np.concatenate([member, non_member]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(non_member))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return 100.0 * float((clf.predict(target.reshape(-1, 1)) == 0).mean())


def mia_efficacy(model, split: ForgetSplit, device="cpu") -> float:
    data = split.data
    g = torch.Generator().manual_seed(MIA_SEED)
    n = min(len(split.test_idx), len(split.retain_idx))
    shadow = split.retain_idx[torch.randperm(len(split.retain_idx), generator=g)[:n]]
    return mia_efficacy_from_confidence(confidence(model, data, shadow, device=device),
                                        confidence(model, data, split.test_idx, test=True, device=device),
                                        confidence(model, data, split.forget_idx, device=device))


def evaluate(model: nn.Module, split: ForgetSplit, device: str = "cpu") -> dict[str, float]:
    """{UA, RA, TA, MIA} in % (TA over ``split.test_idx``: the retained classes' test samples in class-wise forgetting)."""
    data = split.data
    return {"UA": 100.0 - accuracy(model, data, split.forget_idx, device=device),
            "RA": accuracy(model, data, split.retain_idx, device=device),
            "TA": accuracy(model, data, split.test_idx, test=True, device=device),
            "MIA": mia_efficacy(model, split, device=device)}
