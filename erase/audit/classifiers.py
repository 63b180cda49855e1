"""Classifiers for concept audits beyond the toy world.

- ImageNet ResNet-50 (torchvision) for the Imagenette classes, as in the SalUn paper's object audit.
  Weights: a local state-dict file (.safetensors, or .pth loaded with weights_only=True), or
  ``imagenet`` to let torchvision download ResNet50_Weights.IMAGENET1K_V2 for users with network.
- CLIP zero-shot (open_clip) for any other concept, and CLIP score (100 x cosine, floored at 0).
  Weights: an open_clip pretrained tag (downloaded) or a local checkpoint file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.errors import UserError

# ImageNet-1k indices of the ten Imagenette classes (Howard, fast.ai).
IMAGENETTE_TO_IMAGENET = {
    "tench": 0, "English springer": 217, "cassette player": 482, "chain saw": 491, "church": 497,
    "French horn": 566, "garbage truck": 569, "gas pump": 571, "golf ball": 574, "parachute": 701,
}
_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _load_state_dict(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"classifier weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class ImageNetResNet50:
    """Top-1 ImageNet class of images in [-1, 1] (N, 3, H, W), resized to 224 like torchvision's eval."""

    def __init__(self, weights: str | Path = "imagenet", device: str = "cpu"):
        import torchvision

        if str(weights) == "imagenet":
            try:
                model = torchvision.models.resnet50(weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
            except Exception as e:  # noqa: BLE001 - download errors come in many types
                raise UserError("could not download torchvision's ResNet-50 ImageNet weights "
                                f"({type(e).__name__}); pass a local file with --classifier-weights") from e
        else:
            model = torchvision.models.resnet50(weights=None)
            try:
                model.load_state_dict(_load_state_dict(Path(weights)))
            except RuntimeError as e:
                raise UserError(f"{weights} is not a torchvision ResNet-50 state dict: {str(e)[:200]}") from e
        self.model = model.eval().to(device)
        self.device = device

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            x = (images[i:i + batch_size].float().clamp(-1, 1) + 1) / 2
            x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
            x = ((x - _IMAGENET_MEAN) / _IMAGENET_STD).to(self.device)
            out.append(self.model(x).argmax(1).cpu())
        return torch.cat(out)


class ClipModel:
    """open_clip image/text embeddings: zero-shot classification and CLIP score."""

    def __init__(self, arch: str = "ViT-B-32", pretrained: str | None = "openai", device: str = "cpu"):
        import open_clip

        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        except Exception as e:  # noqa: BLE001 - missing weights or no network
            raise UserError(f"could not load CLIP {arch} weights {pretrained!r} ({type(e).__name__}: {e}); pass a "
                            "local checkpoint file with --clip-weights") from e
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.model = self.model.eval().to(device)
        self.device = device
        size = self.model.visual.image_size
        self.size = size[0] if isinstance(size, (tuple, list)) else size

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        mean = torch.tensor(open_clip_mean()).view(1, 3, 1, 1)
        std = torch.tensor(open_clip_std()).view(1, 3, 1, 1)
        out = []
        for i in range(0, len(images), batch_size):
            x = (images[i:i + batch_size].float().clamp(-1, 1) + 1) / 2
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False)
            x = ((x - mean) / std).to(self.device)
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tok).float(), dim=-1).cpu()

    def zero_shot(self, images: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
        """Index of the best-matching label text for each image."""
        return (self.image_embeddings(images) @ self.text_embeddings(labels).T).argmax(1)

    def clip_score(self, images: torch.Tensor, prompts: Sequence[str]) -> float:
        """Mean of 100 x max(cos(image, prompt), 0) (Hessel et al., 2021)."""
        sims = (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)
        return float((100 * sims.clamp(min=0)).mean())


def open_clip_mean():
    from open_clip.constants import OPENAI_DATASET_MEAN

    return OPENAI_DATASET_MEAN


def open_clip_std():
    from open_clip.constants import OPENAI_DATASET_STD

    return OPENAI_DATASET_STD


class InceptionFeatures:
    """2048-d pool features of torchvision's Inception-v3, for FID on real-image audits.

    torchvision's ImageNet weights are not the TF-Inception weights of the original FID code, so
    figures are comparable between models audited here, not with numbers in papers.
    """

    def __init__(self, weights: str | Path = "imagenet", device: str = "cpu"):
        import torchvision

        if str(weights) == "imagenet":
            try:
                model = torchvision.models.inception_v3(weights=torchvision.models.Inception_V3_Weights.IMAGENET1K_V1)
            except Exception as e:  # noqa: BLE001
                raise UserError("could not download torchvision's Inception-v3 weights "
                                f"({type(e).__name__}); pass a local file with --inception-weights") from e
        else:
            model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
            try:
                model.load_state_dict(_load_state_dict(Path(weights)))
            except RuntimeError as e:
                raise UserError(f"{weights} is not a torchvision Inception-v3 state dict: {str(e)[:200]}") from e
        model.fc = torch.nn.Identity()
        self.model, self.device = model.eval().to(device), device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            # through uint8 first: the images a user would save, not raw decoder floats
            x = ((images[i:i + batch_size].float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
            x = F.interpolate(x, size=(299, 299), mode="bilinear", antialias=True, align_corners=False)
            x = ((x - _IMAGENET_MEAN) / _IMAGENET_STD).to(self.device)
            out.append(self.model(x).cpu())
        return torch.cat(out)
