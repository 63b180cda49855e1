"""Image classification data sets held in memory as uint8 tensors (N, C, H, W), normalised per batch.

Offline: ``digits`` (scikit-learn's bundled 8x8 digits, 1,797 images, 10 classes; split 80/20 with a
fixed seed) and ``shapes`` (the toy world's drawn shapes, 32x32, 6 classes). Through torchvision
(users download, or point ``root`` at a local copy): ``cifar10``, ``cifar100``, ``svhn``. Any
``imagefolder`` (``root/train`` and ``root/test``, or one folder split 80/20 with a fixed seed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from .names import DATASETS

SPLIT_SEED = 1234  # the train/test split of data sets that ship without one: fixed, never the run's seed


@dataclass
class ImageData:
    """Train and test images (uint8, N x C x H x W) and labels, with the normalisation and augmentation."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"  # none | crop | crop-flip (random 4-pixel-padded crops, horizontal flips)
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def train_batch(self, idx: torch.Tensor, device="cpu", augment: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.train_x[idx]
        if augment and self.augment != "none":
            x = _augment(x, self.augment, generator)
        return self.normalise(x.to(device))

    def test_batch(self, idx: torch.Tensor, device="cpu") -> torch.Tensor:
        return self.normalise(self.test_x[idx].to(device))

    def pixel_std(self) -> float:
        """Mean std in [0, 1] pixel units: to turn a pixel-space step into a normalised one."""
        return float(np.mean(self.std))


def _augment(x: torch.Tensor, kind: str, g: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=g)
    dx = torch.randint(0, 9, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # n x h
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # n x w
    out = pad[torch.arange(n).view(n, 1, 1), :, rows.view(n, h, 1), cols.view(n, 1, w)]  # n h w c
    out = out.permute(0, 3, 1, 2)
    if kind == "crop-flip":
        flip = torch.rand(n, generator=g) < 0.5
        out[flip] = out[flip].flip(-1)
    return out.contiguous()


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    f = x.float() / 255.0
    return tuple(f.mean((0, 2, 3)).tolist()), tuple(f.std((0, 2, 3)).clamp_min(1e-3).tolist())


def _split(n: int, test_share: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(round(n * test_share))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def load_digits() -> ImageData:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # 0..16 -> 0..255
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, te = _split(len(y))
    mean, std = _stats(x[tr])
    return ImageData("digits", x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], mean, std,
                     info={"source": "sklearn.datasets.load_digits", "split_seed": SPLIT_SEED})


def load_shapes(n_train: int = 1200, n_test: int = 300) -> ImageData:
    from ..toy.shapes import SHAPES, draw_set

    def part(n, seed):
        s = draw_set(n, seed)
        return torch.from_numpy(s.images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(s.shape_ids)

    trx, tr_y = part(n_train, 101)
    tex, te_y = part(n_test, 202)
    mean, std = _stats(trx)
    return ImageData("shapes", trx, tr_y, tex, te_y, list(SHAPES), mean, std, augment="crop",
                     info={"source": "erase.toy.shapes.draw_set", "seeds": [101, 202]})


def _need_root(name: str, root) -> Path:
    if root is None:
        raise UserError(f"the {name} data set needs --data-root (a folder; add --download to fetch it there)")
    return Path(root)


def _torchvision(name: str, root, download: bool) -> ImageData:
    import torchvision

    root = _need_root(name, root)
    if not download and not root.is_dir():
        raise UserError(f"data root {root} does not exist: point --data-root at a local copy of {name}, "
                        "or add --download to fetch it there")
    try:
        if name == "svhn":
            tr = torchvision.datasets.SVHN(str(root), split="train", download=download)
            te = torchvision.datasets.SVHN(str(root), split="test", download=download)
            trx, tr_y = torch.from_numpy(tr.data), torch.as_tensor(tr.labels, dtype=torch.int64)
            tex, te_y = torch.from_numpy(te.data), torch.as_tensor(te.labels, dtype=torch.int64)
            classes, augment = [str(i) for i in range(10)], "crop"
        else:
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            tr = cls(str(root), train=True, download=download)
            te = cls(str(root), train=False, download=download)
            trx, tr_y = torch.from_numpy(tr.data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(tr.targets)
            tex, te_y = torch.from_numpy(te.data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(te.targets)
            classes, augment = list(tr.classes), "crop-flip"
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise UserError(f"{name} not found under {root} ({e}); add --download to fetch it there") from e
    mean, std = _stats(trx[:10000])
    return ImageData(name, trx, tr_y.long(), tex, te_y.long(), classes, mean, std, augment=augment,
                     info={"source": f"torchvision.datasets ({root})"})


def _image_folder(root, image_size: int) -> ImageData:
    from PIL import Image

    root = _need_root("imagefolder", root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist (imagefolder wants class subfolders, or train/ and test/)")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}

    def scan(folder: Path):
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        items = [(f, i) for i, c in enumerate(classes) for f in sorted((folder / c).rglob("*"))
                 if f.suffix.lower() in exts]
        return classes, items

    def read(items):
        xs = [np.asarray(Image.open(f).convert("RGB").resize((image_size, image_size), Image.BILINEAR))
              for f, _ in items]
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor([i for _, i in items], dtype=torch.int64)

    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, tr_items = scan(root / "train")
        test_classes, te_items = scan(root / "test")
        if test_classes != classes:
            raise UserError(f"{root}/train and {root}/test have different class folders")
        if not tr_items or not te_items:
            raise UserError(f"no images under {root}/train or {root}/test")
        (trx, tr_y), (tex, te_y) = read(tr_items), read(te_items)
    else:
        classes, items = scan(root)
        if len(items) < 2:
            raise UserError(f"no images under {root} (imagefolder wants <root>/<class>/<image>)")
        x, y = read(items)
        tr, te = _split(len(y))
        trx, tr_y, tex, te_y = x[tr], y[tr], x[te], y[te]
    mean, std = _stats(trx)
    return ImageData("imagefolder", trx, tr_y, tex, te_y, classes, mean, std, augment="crop-flip",
                     info={"source": str(root), "image_size": image_size})


def load_dataset(name: str, root: str | Path | None = None, download: bool = False,
                 image_size: int = 32) -> ImageData:
    """A data set by name (see ``DATASETS``); a missing root is a ``UserError`` naming ``--download``."""
    if name == "digits":
        return load_digits()
    if name == "shapes":
        return load_shapes()
    if name in ("cifar10", "cifar100", "svhn"):
        return _torchvision(name, root, download)
    if name == "imagefolder":
        return _image_folder(root, image_size)
    raise UserError(f"unknown data set {name!r}: choose from {', '.join(DATASETS)}")
