"""The names the classification CLI offers (data sets, architectures, methods), without importing torch.

``erase.classify.data``, ``.models`` and ``.methods`` import these, so the parser's choices and the code
that implements them cannot drift apart (a test checks ``METHODS`` against ``METHOD_NAMES``).
"""
from __future__ import annotations

DATASETS = ("digits", "shapes", "cifar10", "cifar100", "svhn", "imagefolder")
ARCHS = ("small-cnn", "resnet18")
METHOD_NAMES = ("retrain", "ft", "rl", "ga", "iu", "be", "bs", "l1-sparse", "salun", "salun-soft")
