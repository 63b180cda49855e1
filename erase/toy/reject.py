"""The judge's "none of these": a head that tells one clean shape from what a failing model draws.

The shape and colour heads are an argmax over six shapes and five colours, so on their own they call a
blank or a smear *something*; an erasure that turns "a red circle" into noise would then score as "not a
circle", like Retrain. The reject head is trained, on the judge's frozen features (so the shape, colour
and frame heads, and every figure they gave, stay as they were), to separate

- accepted: drawings of one shape (with and without the frame), the judge's blur/noise augmentation of
  them, and the toy VAE's reconstructions of them: what a working model draws;
- rejected: the failures a diffusion model produces: blank backgrounds, noise, shapes blurred past
  recognition, half shapes cut by the border, two shapes, two shapes blended, and the VAE's decoding of
  random latents.

Its threshold is calibrated on held-out accepted images, so that at most ``TARGET_FALSE_REJECT`` of them
are rejected; the false-reject rate and the share of held-out failures caught are saved with the judge.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from . import attribute as A
from . import shapes as S
from .judge import JUDGE_FRAME_RATE, REBUILD, augment_for_judge, load_judge, save_judge  # noqa: F401 - REBUILD re-exported
from .models import make_head

FAILURES = ("blank", "noise", "blur", "half", "two", "blend", "latent")
TARGET_FALSE_REJECT = 0.005


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, float]:
    grey = rng.uniform(40, 200)
    bg = tuple(int(np.clip(grey + rng.uniform(-18, 18), 0, 255)) for _ in range(3))
    return Image.new("RGB", (size, size), bg), grey


def _shape(d: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, r: float, k: int) -> None:
    shape = list(S.SHAPES)[rng.integers(len(S.SHAPES))]
    base = np.array(S.COLOURS[list(S.COLOURS)[rng.integers(len(S.COLOURS))]], dtype=float)
    fill = tuple(int(v) for v in np.clip(base + rng.uniform(-20, 20, size=3), 0, 255))
    S._draw_shape(d, shape, cx * k, cy * k, r * k, fill)


def _maybe_frame(d: ImageDraw.ImageDraw, rng: np.random.Generator, grey: float, size: int) -> None:
    if rng.random() < 0.5:
        A.draw_frame(d, size, A.frame_kind(grey), rng.uniform(2.5, 3.5) * size / S.IMAGE_SIZE,
                     rng.uniform(-14, 14, size=3))


def _to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.resize((S.IMAGE_SIZE, S.IMAGE_SIZE), Image.LANCZOS), dtype=np.float32) / 127.5 - 1


def draw_failure(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One failed image (32, 32, 3) in [-1, 1] of ``kind`` (``FAILURES``, except ``latent``)."""
    k, n = 4, S.IMAGE_SIZE
    img, grey = _background(rng, n * k)
    d = ImageDraw.Draw(img)
    if kind == "blank":
        _maybe_frame(d, rng, grey, n * k)
        x = _to_array(img)
        return np.clip(x + rng.normal(0, rng.uniform(0, 0.05)), -1, 1)
    if kind == "noise":
        x = _to_array(img) * rng.uniform(0, 1)
        return np.clip(x + rng.normal(0, rng.uniform(0.2, 0.9), size=x.shape), -1, 1).astype(np.float32)
    if kind == "half":  # the centre on or past the border: at least about half the shape is cut off
        r = rng.uniform(7.0, 12.5)
        edge = rng.integers(4)
        along, across = rng.uniform(r, n - r), rng.uniform(-0.3 * r, 0.15 * r)
        cx, cy = [(across, along), (n - across, along), (along, across), (along, n - across)][edge]
        _shape(d, rng, cx, cy, r, k)
        _maybe_frame(d, rng, grey, n * k)
        return _to_array(img)
    if kind == "two":
        for _ in range(2):
            r = rng.uniform(4.5, 7.5)
            _shape(d, rng, rng.uniform(r, n - r), rng.uniform(r, n - r), r, k)
        _maybe_frame(d, rng, grey, n * k)
        return _to_array(img)
    # "blur" and "blend" start from a clean drawing
    a = S.draw_framed(list(S.SHAPES)[rng.integers(6)], list(S.COLOURS)[rng.integers(5)], rng, rng.random() < 0.5)[0]
    x = np.asarray(a, dtype=np.float32) / 127.5 - 1
    if kind == "blur":  # down to 2-4 px and back: a blob of the right colour, no shape left
        t = torch.from_numpy(x).permute(2, 0, 1)[None]
        small = F.interpolate(t, size=int(rng.integers(2, 5)), mode="area")
        return F.interpolate(small, size=n, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    if kind == "blend":
        b = S.draw_framed(list(S.SHAPES)[rng.integers(6)], list(S.COLOURS)[rng.integers(5)], rng, False)[0]
        w = rng.uniform(0.35, 0.65)
        return w * x + (1 - w) * (np.asarray(b, dtype=np.float32) / 127.5 - 1)
    raise ValueError(kind)


def failure_set(n: int, seed: int, vae=None) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` failed images (N, 3, 32, 32) in [-1, 1], evenly over ``FAILURES`` (``latent`` needs ``vae``),
    and each image's kind."""
    rng = np.random.default_rng(seed)
    kinds = [f for f in FAILURES if f != "latent" or vae is not None]
    drawn = [kinds[i % len(kinds)] for i in range(n)]
    out = [torch.from_numpy(np.ascontiguousarray(draw_failure(k, rng))).permute(2, 0, 1) for k in drawn if k != "latent"]
    x = torch.stack(out).float() if out else torch.empty(0, 3, S.IMAGE_SIZE, S.IMAGE_SIZE)
    n_latent = drawn.count("latent")
    if n_latent:
        x = torch.cat([x, decode_random_latents(vae, n_latent, seed)])
    return x, np.array([k for k in drawn if k != "latent"] + ["latent"] * n_latent)


@torch.no_grad()
def decode_random_latents(vae, n: int, seed: int) -> torch.Tensor:
    """What the VAE draws from latents no UNet would accept: scaled Gaussian noise, decoded."""
    g = torch.Generator().manual_seed(seed)
    side = S.IMAGE_SIZE // 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(n, vae.config.latent_channels, side, side, generator=g)
    z = z * (0.5 + torch.rand(n, 1, 1, 1, generator=g) * 1.5) / vae.config.scaling_factor
    return torch.cat([vae.decode(z[i:i + 256]).sample.clamp(-1, 1) for i in range(0, n, 256)])


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.decode(vae.encode(x[i:i + 256]).latent_dist.mean).sample.clamp(-1, 1)
                      for i in range(0, len(x), 256)])


@torch.no_grad()
def _features(judge, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([judge.features(x[i:i + 512]) for i in range(0, len(x), 512)])


def accepted_set(n: int, seed: int, vae) -> torch.Tensor:
    """Images a working model draws: clean drawings, their augmented copies and VAE reconstructions."""

    data = S.draw_set(n, seed=seed, frame_rate=JUDGE_FRAME_RATE).as_float()
    third = n // 3
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([data[:third], augment_for_judge(data[third:2 * third], gen), reconstruct(vae, data[2 * third:])])


def train_reject_head(judge, vae, seed: int = 0, n: int = 6000, steps: int = 400) -> dict:
    """Fit ``judge.reject_head`` on frozen features and calibrate its threshold; returns the figures saved
    with the judge (threshold, held-out false-reject rate, and the share of held-out failures caught)."""
    torch.manual_seed(seed + 7)
    judge.eval()
    pos = _features(judge, accepted_set(n, seed + 501, vae))
    neg = _features(judge, failure_set(n, seed + 502, vae)[0])
    x, y = torch.cat([pos, neg]), torch.cat([torch.zeros(len(pos)), torch.ones(len(neg))])
    mu, sd = x.mean(0), x.std(0) + 1e-4
    head = make_head(x.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed + 8)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (512,), generator=g)
        loss = F.binary_cross_entropy_with_logits(head((x[idx] - mu) / sd)[:, 0], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    judge.set_reject_head(head.eval(), mu, sd, threshold=0.5)
    # calibrate on held-out accepted images: the threshold lets at most TARGET_FALSE_REJECT of them through
    held_pos = accepted_set(1500, seed + 601, vae)
    held_neg, held_kinds = failure_set(1400, seed + 602, vae)
    sp, sn = judge.reject_score(held_pos), judge.reject_score(held_neg)
    threshold = max(0.5, float(np.quantile(sp, 1 - TARGET_FALSE_REJECT)))
    judge.reject_threshold.fill_(threshold)
    caught = {k: float((sn[held_kinds == k] > threshold).mean()) for k in FAILURES}
    return {"threshold": threshold, "false_reject_rate": float((sp > threshold).mean()), "n_accepted": len(sp),
            "caught": caught, "caught_rate": float((sn > threshold).mean()), "n_failures": len(sn),
            "failures": list(FAILURES)}


def add_reject_head(judge_dir, vae_from, out, overwrite: bool = False, seed: int = 0) -> dict:
    """``salun toy reject-head``: a copy of the judge in ``judge_dir`` with the reject head trained on top
    (its other heads unchanged), written to ``out``; ``vae_from`` is the toy VAE (a pipeline folder)."""
    import json
    import shutil
    from pathlib import Path

    from diffusers import AutoencoderKL

    from ..core.atomic import atomic_dir
    from ..core.errors import UserError
    from ..core.outputs import guard_output

    judge_dir, vae_from, out = Path(judge_dir), Path(vae_from), Path(out)
    guard_output(out, "toy reject-head", reads=[judge_dir, vae_from], overwrite=overwrite,
                 signature=("judge.safetensors", "config.json"), makes_model=True)
    judge = load_judge(judge_dir)
    vae_dir = vae_from / "vae" if (vae_from / "vae").is_dir() else vae_from
    if not (vae_dir / "config.json").exists():
        raise UserError(f"--vae {vae_from}: no VAE there (a toy pipeline folder, e.g. pipelines/toy-sd)")
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    figures = train_reject_head(judge, vae, seed=seed)
    cfg = json.loads((judge_dir / "config.json").read_text())
    keep = {k: v for k, v in cfg.items() if k not in ("shapes", "colours", "width", "attribute", "reject")}
    with atomic_dir(out, overwrite=overwrite, mark="toy reject-head") as tmp:
        for f in judge_dir.iterdir():
            if f.is_file() and f.name not in ("judge.safetensors", "config.json") and not f.name.startswith("."):
                shutil.copy2(f, tmp / f.name)
        save_judge(judge, tmp, extra={**keep, "reject": figures})
    return figures
