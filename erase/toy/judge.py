"""Save, load and apply the toy world's judge (which shape, which colour)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..core.errors import UserError
from . import attribute as A
from . import shapes as S
from .models import Judge

# The judge sees the frame on half its pictures, whatever the SD world's rates: it must read shapes
# with and without a frame, and be the attribute's detector.
JUDGE_FRAME_RATE = 0.5
# How to give an older judge its "none of these" (its reject head).
REBUILD = ("salun toy reject-head --judge DIR --vae pipelines/toy-sd --out NEW_DIR (or rebuild the toy world: "
           "salun toy build ... --judge-out DIR)")


def save_judge(judge: Judge, out: str | Path, extra: dict | None = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, out / "judge.safetensors")
    cfg = {"shapes": list(S.SHAPES), "colours": list(S.COLOURS), "width": judge.width, **(extra or {})}
    if judge.n_attribute:
        cfg["attribute"] = {"name": A.NAME, "classes": ["none", *A.KINDS]}
    if judge.reject_head is not None:
        cfg.setdefault("reject", {"threshold": float(judge.reject_threshold)})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))


def load_judge(path: str | Path) -> Judge:
    path = Path(path)
    if not (path / "judge.safetensors").exists():
        raise UserError(f"{path} holds no judge (judge.safetensors): build the toy world first")
    cfg = json.loads((path / "config.json").read_text())
    if cfg["shapes"] != list(S.SHAPES) or cfg["colours"] != list(S.COLOURS):
        raise UserError(f"the judge in {path} was trained on other shapes or colours")
    n_attribute = len(cfg["attribute"]["classes"]) if "attribute" in cfg else 0
    judge = Judge(len(cfg["shapes"]), len(cfg["colours"]), width=cfg["width"], n_attribute=n_attribute,
                  reject="reject" in cfg)
    judge.load_state_dict(load_file(path / "judge.safetensors"))
    judge.source = str(path)
    return judge.eval()


def require_reject(judge: Judge) -> Judge:
    """The audits and benchmarks that count what an erased model draws need the judge's "none of these"."""
    if judge.reject_head is None:
        where = getattr(judge, "source", "this judge")
        raise UserError(f"the toy judge in {where} cannot say 'none of these' (no reject head, an older build): "
                        f"add it with {REBUILD}")
    return judge


@torch.no_grad()
def judge_images(judge: Judge, images: torch.Tensor) -> dict[str, np.ndarray]:
    """What the judge sees in each image in [-1, 1]: ``shape`` and ``colour`` ids, ``reject`` (none of the
    shapes: a blank, noise, a smear, two shapes; needs the reject head) and ``frame`` (the attribute's kind,
    0: none) when the judge has the attribute head."""
    require_reject(judge)
    shape, colour = classify(judge, images)
    out = {"shape": shape, "colour": colour, "reject": judge.reject_score(images) > float(judge.reject_threshold)}
    if judge.attribute_head is not None:
        out["frame"] = detect_attribute(judge, images)[0]
    return out


@torch.no_grad()
def classify(judge: Judge, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Shape and colour ids for images in [-1, 1], (N, 3, 32, 32)."""
    a, b = [], []
    for i in range(0, len(images), 256):
        sa, sb = judge(images[i:i + 256].float())
        a.append(sa.argmax(1))
        b.append(sb.argmax(1))
    return torch.cat(a).numpy(), torch.cat(b).numpy()


@torch.no_grad()
def detect_attribute(judge: Judge, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The frame's kind (0: none, k: ``attribute.KINDS[k - 1]``) and its probability, for images in [-1, 1]."""
    if judge.attribute_head is None:
        raise UserError("this toy judge has no attribute detector: rebuild the toy world (salun toy build)")
    kinds, scores = [], []
    for i in range(0, len(images), 256):
        p = judge.attribute(images[i:i + 256].float()).softmax(1)
        s, k = p.max(1)
        kinds.append(k)
        scores.append(s)
    return torch.cat(kinds).numpy(), torch.cat(scores).numpy()


def augment_for_judge(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur and noise some images so the judge also reads the softer images a decoder draws."""
    n = x.shape[0]
    blur = torch.rand(n, generator=gen) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16
        w = k.expand(3, 1, 3, 3)
        x = torch.where(blur[:, None, None, None], F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w, groups=3), x)
    noise = torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.15
    return (x + noise).clamp(-1, 1)
