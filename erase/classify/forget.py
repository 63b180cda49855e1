"""Forget sets: a seeded random fraction of the training set, or a whole class; saved as JSON indices.

``ForgetSplit`` is what every method and metric sees: the forget and retain indices into the training
set, and the test indices that count for TA (all of them, or, when a class is forgotten, those of the
other classes: a class that is gone cannot be tested).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import UserError
from .data import ImageData

FORGET_FORMAT = "salun-forget/1"


def check_fraction(fraction: float) -> float:
    if not (0.0 < float(fraction) < 1.0):
        raise UserError(f"--forget-fraction must be in (0, 1), got {fraction}")
    return float(fraction)


def check_class(cls: int | str, num_classes: int, classes: list[str] | None = None) -> int:
    """A class id from an id or a name (e.g. ``3`` or ``cat``); unknown ones are a clear error."""
    if isinstance(cls, str) and not cls.lstrip("-").isdigit():
        if classes and cls in classes:
            return classes.index(cls)
        names = f": {', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''}" if classes else ""
        raise UserError(f"class {cls!r} does not exist in this data set{names}")
    if not 0 <= int(cls) < num_classes:
        names = f" ({', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''})" if classes else ""
        raise UserError(f"class {cls} does not exist: this data set has classes 0..{num_classes - 1}{names}")
    return int(cls)


def random_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """``round(fraction * n)`` distinct indices drawn with a seeded generator, sorted."""
    fraction = check_fraction(fraction)
    k = int(round(fraction * n))
    if not 0 < k < n:
        raise UserError(f"--forget-fraction {fraction} of {n} training samples leaves an empty forget or retain set")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:k].sort().values


@dataclass
class ForgetSplit:
    data: ImageData
    forget_idx: torch.Tensor
    retain_idx: torch.Tensor
    test_idx: torch.Tensor
    kind: str  # "random" or "class"
    fraction: float | None = None
    forget_class: int | None = None
    seed: int = 0

    @property
    def scenario(self) -> str:
        """The key settings are tuned under: ``class``, or ``random10``, ``random50``, ... (percent forgotten)."""
        return "class" if self.kind == "class" else f"random{round(100 * self.fraction)}"

    @property
    def n_train(self) -> int:
        return len(self.data.train_y)

    def describe(self) -> dict:
        return {"format": FORGET_FORMAT, "dataset": self.data.name, "kind": self.kind, "fraction": self.fraction,
                "class": self.forget_class, "seed": self.seed, "n_train": self.n_train,
                "n_forget": len(self.forget_idx), "n_retain": len(self.retain_idx), "n_test": len(self.test_idx)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({**self.describe(), "indices": self.forget_idx.tolist()}) + "\n")
        return path


def _split(data: ImageData, forget: torch.Tensor, kind: str, seed: int, fraction=None, cls=None) -> ForgetSplit:
    keep = torch.ones(len(data.train_y), dtype=torch.bool)
    keep[forget] = False
    retain = keep.nonzero().squeeze(1)
    if cls is None:
        test = torch.arange(len(data.test_y))
    else:
        test = (data.test_y != cls).nonzero().squeeze(1)
    return ForgetSplit(data, forget, retain, test, kind, fraction, cls, seed)


def make_split(data: ImageData, fraction: float | None = None, forget_class: int | None = None,
               seed: int = 0) -> ForgetSplit:
    """Exactly one of ``fraction`` (random, seeded) or ``forget_class`` (every training sample of it)."""
    if (fraction is None) == (forget_class is None):
        raise UserError("give exactly one of --forget-fraction or --forget-class")
    if fraction is not None:
        return _split(data, random_indices(len(data.train_y), fraction, seed), "random", seed, fraction=float(fraction))
    cls = check_class(forget_class, data.num_classes, data.classes)
    forget = (data.train_y == cls).nonzero().squeeze(1)
    if len(forget) == 0 or len(forget) == len(data.train_y):
        raise UserError(f"class {cls} has {len(forget)} of {len(data.train_y)} training samples: nothing to forget "
                        "or nothing left")
    return _split(data, forget, "class", seed, cls=cls)


def load_split(data: ImageData, path: str | Path) -> ForgetSplit:
    """A forget set saved by ``ForgetSplit.save`` (checked against the data set)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"forget-set file {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not a forget-set file: {e}") from e
    if d.get("format") != FORGET_FORMAT:
        raise UserError(f"{path} is not a salun forget-set file (format {d.get('format')!r})")
    if d.get("dataset") != data.name or d.get("n_train") != len(data.train_y):
        raise UserError(f"{path} is for {d.get('dataset')} with {d.get('n_train')} training samples, not "
                        f"{data.name} with {len(data.train_y)}")
    idx = torch.tensor(sorted(set(d["indices"])), dtype=torch.int64)
    return _split(data, idx, d.get("kind", "random"), int(d.get("seed", 0)), d.get("fraction"), d.get("class"))
