"""Images with class labels for the DDPM path: the toy world's drawn shapes, or CIFAR-10 on disk."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...core.errors import UserError

DATASETS = ("toy-shapes", "cifar10")


@dataclass
class Labelled:
    """Images (N, 3, H, W) in [-1, 1] and their class ids."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def of_class(self, c: int) -> "Labelled":
        keep = self.labels == c
        return Labelled(self.images[keep], self.labels[keep], self.class_names)

    def without_class(self, c: int) -> "Labelled":
        keep = self.labels != c
        return Labelled(self.images[keep], self.labels[keep], self.class_names)


def toy_shapes(n: int, seed: int, resolution: int = 16) -> Labelled:
    """``n`` drawn shapes (balanced over shape x colour), area-downsampled to ``resolution``."""
    from ...toy import shapes as S

    drawn = S.draw_set(n, seed=seed)
    x = drawn.as_float()
    if resolution != x.shape[-1]:
        x = F.interpolate(x, size=resolution, mode="area")
    return Labelled(x, torch.from_numpy(drawn.shape_ids), list(S.SHAPES))


def cifar10(root: str | Path | None, download: bool = False) -> Labelled:
    """CIFAR-10's training set (Krizhevsky, 2009), read by the classification path's loader (torchvision;
    a missing root is a clear error unless ``download``), as floats in [-1, 1]."""
    from ...classify.data import load_dataset

    d = load_dataset("cifar10", root, download)
    return Labelled(d.train_x.float() / 127.5 - 1, d.train_y, d.classes)


def load(dataset: str, n: int = 12000, seed: int = 0, resolution: int = 16, root: str | Path | None = None,
         download: bool = False) -> Labelled:
    if dataset == "toy-shapes":
        return toy_shapes(n, seed, resolution)
    if dataset == "cifar10":
        return cifar10(root, download)
    raise UserError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")


def model_info(model: str | Path) -> dict:
    """A DDPM folder's ``ddpm_info.json`` (its data set, classes, training): {} when it has none."""
    path = Path(model) / "ddpm_info.json"
    return json.loads(path.read_text()) if path.exists() else {}


def dataset_of(model, dataset: str | None) -> str:
    """The data set a DDPM was trained on: given, else its ``ddpm_info.json``'s."""
    dataset = dataset or model_info(model).get("dataset")
    if dataset is None:
        raise UserError(f"{model} has no ddpm_info.json saying what it was trained on: pass --dataset")
    return dataset


def forget_retain(dataset: str, forget: int, rec: dict, seed: int, resolution: int, root=None,
                  download: bool = False) -> tuple[Labelled, Labelled]:
    """(forget images, retain images) of the data set the model was trained on; ``rec``'s ``n_forget`` and
    ``n_retain`` say how many (None: all)."""
    if dataset == "toy-shapes":
        from ...toy import shapes as S

        # Drawn afresh (another seed than training), balanced over shape x colour, then cut to size.
        k, pairs = len(S.SHAPES), len(S.SHAPES) * len(S.COLOURS)
        need = max(rec["n_forget"] * k, -(-rec["n_retain"] // (k - 1)) * k)
        drawn = toy_shapes(-(-need // pairs) * pairs, seed=seed + 5550, resolution=resolution)
        f, retain = drawn.of_class(forget), drawn.without_class(forget)
        keep = torch.randperm(len(retain.labels), generator=torch.Generator().manual_seed(seed))[:rec["n_retain"]]
        return (Labelled(f.images[:rec["n_forget"]], f.labels[:rec["n_forget"]], f.class_names),
                Labelled(retain.images[keep], retain.labels[keep], retain.class_names))
    data = load(dataset, root=root, download=download)
    f, r = data.of_class(forget), data.without_class(forget)
    if rec["n_forget"]:
        f = Labelled(f.images[:rec["n_forget"]], f.labels[:rec["n_forget"]], f.class_names)
    if rec["n_retain"]:
        r = Labelled(r.images[:rec["n_retain"]], r.labels[:rec["n_retain"]], r.class_names)
    return f, r
