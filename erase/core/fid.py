"""Frechet distance between two sets of features (FID when the features are Inception's).

Images enter feature extractors as proper uint8 [0, 255] values (``generate.as_uint8``), not the
[-1, 1] floats cast straight to uint8 that the SalUn reference script used.
"""
from __future__ import annotations

import numpy as np
import torch


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) for feature matrices (n, d)."""
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least two images on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular products: regularise, as is customary
        eps = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


@torch.no_grad()
def judge_features(judge, images_uint8: np.ndarray) -> np.ndarray:
    """Toy-world stand-in for Inception features: the judge's penultimate layer (documented in reports)."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).float() / 127.5 - 1.0
    if x.shape[-1] == 3:  # NHWC -> NCHW
        x = x.permute(0, 3, 1, 2)
    return torch.cat([judge.features(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy()
