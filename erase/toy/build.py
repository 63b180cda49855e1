"""Build the toy world from nothing: drawn data, tokenizer, judge, VAE, text encoder and UNet.

One seeded command (``salun toy build``) runs every stage on the CPU. Each stage writes its result
into ``--work-dir`` when it finishes, so an interrupted build resumes at the stage it was in.
The output is a ``StableDiffusionPipeline`` folder (and the judge) that loads offline.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.atomic import atomic_dir
from ..core.outputs import guard_output
from ..core.sampling import EpochSampler
from ..core.errors import UserError
from . import shapes as S
from . import attribute as A
from .judge import (JUDGE_FRAME_RATE, augment_for_judge, classify, detect_attribute, load_judge, require_reject,
                    save_judge)
from .models import SD_SCHEDULER, Judge, make_sdxl_text_encoders, make_sdxl_unet, make_text_encoder, make_unet, make_vae
from .config import BuildConfig  # noqa: F401 - torch-free, so the CLI's parser can read its defaults
from .tokenizer import write_clip_tokenizer
from .training import cosine_lr, encode_latents, fit, seeded as _seed


# What marks this build's outputs, so that --overwrite replaces only them.
SD_FILES = ("build_info.json", "model_index.json")
JUDGE_FILES = ("judge.safetensors", "config.json")


def train_judge(cfg: BuildConfig, out: Path) -> Judge:
    gen = _seed(cfg.seed + 1)
    data = S.draw_set(cfg.n_train, seed=cfg.seed + 101, shapes=cfg.shapes, colours=cfg.colours,
                      frame_rate=JUDGE_FRAME_RATE if cfg.attribute else None)
    x, ys, yc = data.as_float(), torch.from_numpy(data.shape_ids), torch.from_numpy(data.colour_ids)
    yf = torch.from_numpy(data.frame_ids) if cfg.attribute else None
    judge = Judge(len(S.SHAPES), len(S.COLOURS), n_attribute=1 + len(A.KINDS) if cfg.attribute else 0)
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    batches = EpochSampler(len(data), 128, generator=gen)
    judge.train()
    bar = tqdm(range(cfg.judge_steps), desc="judge", dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = 2e-3 * cosine_lr(step, cfg.judge_steps, 50)
        idx = batches.next()
        xa = augment_for_judge(x[idx], gen)
        f = judge.features(xa)
        loss = F.cross_entropy(judge.shape_head(f), ys[idx]) + F.cross_entropy(judge.colour_head(f), yc[idx])
        if yf is not None:
            loss = loss + F.cross_entropy(judge.attribute_head(f), yf[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    judge.eval()
    held = _judge_heldout(cfg, 1200, cfg.seed + 202)
    acc = _accuracy(judge, held.as_float(), held)
    extra = {"heldout_shape_acc": acc[0], "heldout_colour_acc": acc[1]}
    if cfg.attribute:
        extra["heldout_attribute_acc"] = acc[2]
    save_judge(judge, out, extra=extra)
    print(f"judge: held-out shape accuracy {acc[0]:.4f}, colour accuracy {acc[1]:.4f}"
          + (f", attribute accuracy {acc[2]:.4f}" if cfg.attribute else ""))
    return judge


def _judge_heldout(cfg: BuildConfig, n: int, seed: int) -> S.DrawnSet:
    return S.draw_set(n, seed=seed, shapes=cfg.shapes, colours=cfg.colours,
                      frame_rate=JUDGE_FRAME_RATE if cfg.attribute else None)


def _accuracy(judge: Judge, x: torch.Tensor, data: S.DrawnSet) -> tuple[float, ...]:
    """Shape and colour accuracy, and the attribute detector's (its kind) when the data has frames."""
    ps, pc = classify(judge, x)
    out = (float((ps == data.shape_ids).mean()), float((pc == data.colour_ids).mean()))
    if data.frame_ids is not None and judge.attribute_head is not None:
        kinds, _ = detect_attribute(judge, x)
        out += (float((kinds == data.frame_ids).mean()),)
    return out


def train_vae(cfg: BuildConfig, data: S.DrawnSet, out: Path):
    gen = _seed(cfg.seed + 2)
    vae = make_vae()
    x = data.as_float()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    batches = EpochSampler(len(x), cfg.batch_size, generator=gen)
    bar = tqdm(range(cfg.vae_steps), desc="vae", dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = 1e-3 * cosine_lr(step, cfg.vae_steps, 100)
        xb = x[batches.next()]
        post = vae.encode(xb).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        kl = post.kl().mean() / xb[0].numel()
        loss = F.mse_loss(rec, xb) + 0.5 * F.l1_loss(rec, xb) + cfg.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    # Latents get SD's treatment: scaled so their standard deviation is about 1, the scale the
    # noise schedule assumes. SD's 0.18215 was found the same way for its own VAE.
    with torch.no_grad():
        z = torch.cat([vae.encode(x[i:i + 512]).latent_dist.mean for i in range(0, min(len(x), 4096), 512)])
    scale = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=scale)
    vae.save_pretrained(out, safe_serialization=True)
    print(f"vae: latent scaling factor {scale:.4f}")
    return vae


class _SDText:
    """The SD family's conditioning while training: the text encoder's last hidden states."""

    def __init__(self):
        self.encoders = [make_text_encoder()]

    def __call__(self, tok, drop):
        return self.encoders[0](tok)[0], {}


class _SDXLText:
    """SDXL's conditioning while training, as ``StableDiffusionXLPipeline.encode_prompt`` computes it at
    sampling time: both encoders' penultimate hidden states concatenated, the second's pooled projection
    and the size/crop time ids; a dropped caption is all zeros (SDXL's ``force_zeros_for_empty_prompt``)."""

    def __init__(self, resolution: int = 32):
        self.encoders = list(make_sdxl_text_encoders())
        self.time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)

    def __call__(self, tok, drop):
        o1 = self.encoders[0](tok, output_hidden_states=True)
        o2 = self.encoders[1](tok, output_hidden_states=True)
        keep = (~drop).float()
        emb = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1) * keep[:, None, None]
        pooled = o2.text_embeds * keep[:, None]
        return emb, {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": self.time_ids.expand(len(tok), -1)}}


def train_unet(cfg: BuildConfig, data: S.DrawnSet, vae, tokenizer, checkpoint=None):
    """Train the text encoder(s) and the UNet together; returns their EMA copies ([encoders], unet)
    (``checkpoint``: ``training.fit``'s folder, from which an interrupted training resumes)."""
    from diffusers import DDPMScheduler

    gen = _seed(cfg.seed + 3)
    unet = make_sdxl_unet() if cfg.family == "sdxl" else make_unet(cross_attention_dim=make_text_encoder().config.hidden_size)
    # SDXL's time ids name the image size: the UNet's latent size times the VAE's downsampling (32 px here)
    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    text = _SDXLText(size) if cfg.family == "sdxl" else _SDText()
    sched = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "set_alpha_to_one"})
    mean, std = encode_latents(vae, data.as_float())
    scale = vae.config.scaling_factor
    ids = tokenizer(data.captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                      return_tensors="pt").input_ids
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        tok = ids[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < cfg.cond_dropout
        tok[drop] = empty
        cond, extra = text(tok, drop)
        pred = unet(zt, t, cond, **extra).sample
        # Min-SNR weighting (Hang et al., 2023): stops the easy low-noise steps from dominating.
        w = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]
        return (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()

    unet, *encoders = fit([unet, *text.encoders], len(mean), cfg, gen, loss_of, "unet", checkpoint)
    return encoders, unet


def make_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**{k: v for k, v in SD_SCHEDULER.items()
                                          if k not in ("clip_sample", "set_alpha_to_one")})


def assemble_pipeline(vae, text_encoders, tokenizer, unet):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if len(text_encoders) == 2:
        return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoders[0], text_encoder_2=text_encoders[1],
                                         tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                         scheduler=make_scheduler())
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoders[0], tokenizer=tokenizer, unet=unet,
                                   scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build(cfg: BuildConfig, out: Path, work: Path | None = None, overwrite: bool = False,
          judge_out: Path | None = None, evaluate: Callable[..., dict] | None = None, vae_from: Path | None = None,
          judge_from: Path | None = None) -> dict:
    """Run every stage and write the pipeline to ``out`` (and the judge to ``judge_out``).

    ``evaluate``: what the finished pipeline draws, recorded in build_info.json and the card as ``quality``
    (``salun toy build`` passes ``erase.diffusion.toy_quality.evaluate_quality``; the toy world does not
    import the layer that draws with its pipelines). ``None`` (the default, which until the move was ``True``):
    no evaluation.

    ``vae_from`` / ``judge_from``: take the VAE (a ``vae/`` folder, or a pipeline folder holding one) and the
    judge from an earlier build instead of training them. The Retrain worlds are built this way, so that
    they differ from the base only in what learns concepts: the text encoder and the UNet.
    """
    from transformers import CLIPTokenizer

    S.check_shapes(cfg.shapes)
    S.check_colours(cfg.colours)
    S.check_shapes(cfg.exclude)
    if not cfg.sd_shapes():
        raise UserError("--exclude leaves no shape to train on")
    if cfg.family not in ("sd", "sdxl", "sd3"):
        raise UserError(f"--family {cfg.family!r}: the toy build trains sd, sdxl or sd3")
    out = Path(out)
    guard_output(out, "toy build", reads=[vae_from, judge_from], overwrite=overwrite, signature=SD_FILES,
                 makes_model=True)
    if judge_out is not None:
        guard_output(judge_out, "toy build", reads=[vae_from, judge_from], overwrite=overwrite,
                     signature=JUDGE_FILES, makes_model=True, option="--judge-out")
    work = Path(work) if work else out.parent / f".{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    tok_dir = work / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        write_clip_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    if judge_from is not None:
        judge_dir = Path(judge_from)
        judge = load_judge(judge_dir)
    else:
        judge_dir = _stage(work / "judge", cfg, "seed shapes colours n_train judge_steps attribute")
        judge = load_judge(judge_dir) if (judge_dir / "judge.safetensors").exists() else train_judge(cfg, judge_dir)

    data = S.draw_set(cfg.n_train, seed=cfg.seed, shapes=cfg.sd_shapes(), colours=cfg.colours,
                      attribute=cfg.attribute, render_attribute=not cfg.exclude_attribute)
    from diffusers import AutoencoderKL

    if vae_from is not None:
        vae_from = Path(vae_from)
        vae = AutoencoderKL.from_pretrained(vae_from / "vae" if (vae_from / "vae").is_dir() else vae_from)
    else:
        vae_dir = _stage(work / "vae", cfg, "seed shapes colours exclude n_train vae_steps vae_kl_weight batch_size "
                                            "attribute exclude_attribute")
        vae = AutoencoderKL.from_pretrained(vae_dir) if (vae_dir / "config.json").exists() else \
            train_vae(cfg, data, vae_dir)
    if judge.reject_head is None:
        if judge_from is not None:
            require_reject(judge)  # never write into a folder the build reads
        # "none of these" needs the VAE (its reconstructions are accepted, its random decodes rejected)
        from .reject import train_reject_head

        extra = {k: v for k, v in json.loads((judge_dir / "config.json").read_text()).items()
                 if k not in ("shapes", "colours", "width", "attribute", "reject")}
        figures = train_reject_head(judge, vae, seed=cfg.seed)
        save_judge(judge, judge_dir, extra={**extra, "reject": figures})
        print(f"judge: reject head, false-reject rate {figures['false_reject_rate']:.4f}, "
              f"failures caught {figures['caught_rate']:.4f}")
    rec_acc = _reconstruction_accuracy(vae, judge, cfg)
    print(f"vae: judge on reconstructions: shape {rec_acc[0]:.4f}, colour {rec_acc[1]:.4f}"
          + (f", attribute {rec_acc[2]:.4f}" if len(rec_acc) > 2 else ""))

    sd_dir = _stage(work / "sd", cfg, " ".join(asdict(cfg)), extra={"vae_from": str(vae_from or "")})
    # the training's checkpoints, kept beside the stage and tied to its settings (another stage key: discarded)
    ckpt = work / "sd.checkpoint"
    key = (work / "sd.json").read_text()
    if ckpt.exists() and ((ckpt / "key.json").read_text() if (ckpt / "key.json").exists() else None) != key:
        shutil.rmtree(ckpt)
    if not (sd_dir / "model_index.json").exists():
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "key.json").write_text(key)
        training = ckpt / "latest"
        if cfg.family == "sd3":
            from .build_sd3 import train_sd3

            pipe = train_sd3(cfg, data, copy.deepcopy(vae), tokenizer, training)
        else:
            text_encoders, unet = train_unet(cfg, data, vae, tokenizer, training)
            pipe = assemble_pipeline(vae, text_encoders, tokenizer, unet)
        pipe.save_pretrained(sd_dir, safe_serialization=True)
    shutil.rmtree(ckpt, ignore_errors=True)  # the stage is done: its checkpoints are not needed again
    seconds = time.time() - t0
    info = {"config": asdict(cfg), "build_seconds": round(seconds, 1),
            "vae_reconstruction_judge_acc": {"shape": rec_acc[0], "colour": rec_acc[1]}}
    if len(rec_acc) > 2:
        info["vae_reconstruction_judge_acc"]["attribute"] = rec_acc[2]
    if vae_from is not None or judge_from is not None:
        info["reused"] = {"vae_from": str(vae_from) if vae_from else None,
                          "judge_from": str(judge_from) if judge_from else None}
    (work / "build_info.json").write_text(json.dumps(info, indent=2))

    quality = None
    if evaluate:
        quality = evaluate(sd_dir, judge_dir, shapes=cfg.sd_shapes(), colours=cfg.colours,
                                   attribute=cfg.attribute)
        info["quality"] = quality
    from .card import write_toy_card

    with atomic_dir(out, overwrite=overwrite, mark="toy build") as tmp:
        shutil.copytree(sd_dir, tmp, dirs_exist_ok=True)
        write_toy_card(tmp, info)
        (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
    if judge_out is not None:
        with atomic_dir(Path(judge_out), overwrite=overwrite, mark="toy build") as tmp:
            shutil.copytree(judge_dir, tmp, dirs_exist_ok=True)
    return info


def _stage(folder: Path, cfg: BuildConfig, fields: str, extra: dict | None = None) -> Path:
    """A stage's folder, keyed by the settings it depends on: a finished stage is reused on resume
    only if those settings match, so changing e.g. the UNet steps does not retrain the VAE."""
    key = {f: asdict(cfg)[f] for f in fields.split()} | (extra or {})
    stamp = folder.parent / f"{folder.name}.json"
    if stamp.exists() and json.loads(stamp.read_text()) != key and folder.exists():
        shutil.rmtree(folder)
    stamp.write_text(json.dumps(key, indent=2))
    return folder


@torch.no_grad()
def _reconstruction_accuracy(vae, judge, cfg: BuildConfig) -> tuple[float, ...]:
    held = _judge_heldout(cfg, 600, cfg.seed + 303)
    x = held.as_float()
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 200]).latent_dist.mean).sample.clamp(-1, 1)
                     for i in range(0, len(x), 200)])
    return _accuracy(judge, rec, held)
