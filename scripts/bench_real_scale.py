#!/usr/bin/env python
"""Real-scale structure benchmark: SD v1.4's architecture (UNet 860M) with random weights.

Runs the product's path at full size: mask -> masked erase steps -> export -> from_pretrained, and
prints the mask file's size, peak memory, and the masked step's time as a ratio to a plain
fine-tune step measured in the same run (same batch, same optimizer):

    python scripts/bench_real_scale.py --resolution 256 --json bench_real_scale.json   # CPU
    python scripts/bench_real_scale.py --resolution 512 --device cuda                  # GPU

Random weights say nothing about erasure quality; they prove names, shapes, memory and export.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erase.configs import sd14_pipeline  # noqa: E402
from erase.losses import guided_forgetting_loss, misaligned_loss  # noqa: E402
from erase.mask import compute_mask  # noqa: E402
from erase.masked_optim import MaskedParameters  # noqa: E402


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak RSS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=256, help="image size (512 is SD's; 256 keeps CPU runs short)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed steps of each kind (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--workdir", type=Path, default=None, help="where the source and exported pipelines go")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    dev = a.device
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_real_scale_"))
    res = {"resolution": a.resolution, "batch_size": a.batch_size, "device": dev}

    t0 = time.time()
    pipe = sd14_pipeline(seed=0)
    unet = pipe.unet.to(dev)
    res["unet_parameters"] = sum(p.numel() for p in unet.parameters())
    src = work / "sd14-random"
    pipe.save_pretrained(src, safe_serialization=True)
    res["build_and_save_seconds"] = round(time.time() - t0, 1)
    print(f"SD v1.4 architecture: UNet {res['unet_parameters']:,} parameters; saved to {src}")

    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    lat = a.resolution // 8
    g = torch.Generator().manual_seed(0)
    bs = a.batch_size

    def batch():
        z0 = torch.randn(bs, 4, lat, lat, generator=g).to(dev)
        noise = torch.randn(bs, 4, lat, lat, generator=g).to(dev)
        t = torch.randint(0, 1000, (bs,), generator=g).to(dev)
        return z0, noise, t

    ctx_c, ctx_m, ctx_u = (torch.randn(bs, 77, 768, generator=g).to(dev) for _ in range(3))

    def eps(zt, t, c):
        return unet(zt, t, encoder_hidden_states=c).sample

    # 1. mask (two forget batches, guided loss with w = 7.5)
    t1 = time.time()
    mask = compute_mask(unet, lambda _: _guided(eps, sched, batch, ctx_c, ctx_u), [0, 1], keep=a.keep)
    res["mask_seconds"] = round(time.time() - t1, 1)
    mpath = work / "mask.safetensors"
    mask.save(mpath)
    res["mask_file_mib"] = round(mpath.stat().st_size / 2**20, 1)
    res["mask_kept_fraction"] = round(mask.kept / mask.total, 4)
    res["int64_mask_gib_reference_style"] = round(mask.total * 8 / 2**30, 2)
    res["peak_gib_after_mask"] = round(peak_gib(dev), 2)
    print(f"mask: {res['mask_file_mib']} MiB on disk (int64 masks would be {res['int64_mask_gib_reference_style']} GiB)")
    gc.collect()

    mask_time: list[float] = []

    def step(params, opt, masked: MaskedParameters | None):
        z0, noise, t = batch()
        loss = misaligned_loss(eps, sched, z0, ctx_c, ctx_m, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if masked is not None:
            s = time.perf_counter()
            masked.mask_gradients()
            mask_time.append(time.perf_counter() - s)
            opt.step()
            masked.restore()
        else:
            opt.step()
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(masked: MaskedParameters | None, params) -> float:
        opt = torch.optim.Adam(params, lr=1e-5)
        if masked is not None:
            masked.attach(opt)
        step(params, opt, masked)  # warm-up (allocates optimizer state)
        ts = []
        for _ in range(a.steps):
            s = time.perf_counter()
            step(params, opt, masked)
            ts.append(time.perf_counter() - s)
        del opt
        gc.collect()
        return min(ts)

    # 2. plain fine-tune step vs masked step, same run
    for p_ in unet.parameters():
        p_.requires_grad_(True)
    unet.train()
    if a.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    res["gradient_checkpointing"] = a.gradient_checkpointing
    plain = timed(None, list(unet.parameters()))
    res["peak_gib_after_plain_steps"] = round(peak_gib(dev), 2)
    # back to the base weights before the masked run (the plain steps moved everything)
    pipe_src_unet = type(unet).from_pretrained(src / "unet").to(dev)
    unet.load_state_dict(pipe_src_unet.state_dict())
    del pipe_src_unet
    gc.collect()
    masked = MaskedParameters(unet, mask)
    masked_t = timed(masked, masked.parameters())
    res["peak_gib_after_masked_steps"] = round(peak_gib(dev), 2)
    res["plain_step_seconds"] = round(plain, 3)
    res["masked_step_seconds"] = round(masked_t, 3)
    res["masked_to_plain_ratio"] = round(masked_t / plain, 3)
    res["gradient_masking_seconds"] = round(min(mask_time), 3)  # the one pass the mask adds to a step
    print(f"step: plain {plain:.2f} s, masked {masked_t:.2f} s, ratio {masked_t / plain:.3f} "
          f"(gradient masking itself: {min(mask_time):.3f} s)")
    del masked
    gc.collect()

    # 3. export and reload: the product's export on the 860M UNet
    from diffusers import StableDiffusionPipeline

    from erase.export import export_pipeline
    from erase.mask import Mask

    t3 = time.time()
    src_pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    out = work / "sd14-erased"
    export_pipeline(src_pipe, unet.cpu(), out, overwrite=True, mask=Mask.load(mpath))
    back = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    same = all(torch.equal(x, y) for x, y in zip(back.unet.state_dict().values(), unet.state_dict().values()))
    res["export_and_reload_seconds"] = round(time.time() - t3, 1)
    res["reloaded_unet_equals_trained"] = bool(same)
    res["export_folder_gib"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**30, 2)
    res["peak_gib"] = round(peak_gib(dev), 2)
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


def _guided(eps, sched, batch, c, u):
    z0, noise, t = batch()
    return guided_forgetting_loss(eps, sched, z0, c, u, t, noise, 7.5)


if __name__ == "__main__":
    main()
