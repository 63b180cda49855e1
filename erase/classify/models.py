"""Classifiers: ResNet-18 in its CIFAR form (3x3 stem, no max-pool) and a small CNN for tiny data sets.

Every model carries ``.spec`` (architecture name, input channels, classes) so that a method can build
a fresh one (Retrain) and a checkpoint can refuse another architecture. The last layer is ``.fc``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from .names import ARCHS



class SmallCNN(nn.Module):
    """Four 3x3 conv layers (two max-pools), an adaptive 2x2 pool, and a two-layer head: ~0.1M weights at width 32."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(8 * w, 128), nn.ReLU(inplace=True))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(self.hidden(self.features(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (He et al.; the CIFAR variant used by SalUn: 3x3 stem, no max-pool)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def build_model(arch: str, in_channels: int, num_classes: int, width: int | None = None) -> nn.Module:
    if arch == "small-cnn":
        model = SmallCNN(in_channels, num_classes, width or 32)
    elif arch == "resnet18":
        model = ResNet18(in_channels, num_classes, width or 64)
    else:
        raise UserError(f"unknown architecture {arch!r}: choose from {', '.join(ARCHS)}")
    model.spec = {"arch": arch, "in_channels": in_channels, "num_classes": num_classes,
                  "width": width or (32 if arch == "small-cnn" else 64)}
    return model


def fresh_like(model: nn.Module) -> nn.Module:
    """A newly initialised model of the same architecture (uses the global torch seed: seed it first)."""
    return build_model(**model.spec)
