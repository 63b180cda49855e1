#!/usr/bin/env python
"""Real-scale benchmark: SD v1.4's (UNet 860M), SDXL's (UNet 2.6B) or SD3 medium's (transformer 2.0B)
architecture with random weights, on the product's path.

Every phase runs in a process of its own, so that each peak memory figure (the process's peak RSS on
CPU, torch's peak allocation on CUDA) belongs to that phase alone; the parent prints them side by side:

- ``fwdbwd``: one plain forward + backward of the mask's loss (guided noise MSE, w = 7.5) on one batch, in one
  graph: what one gradient of that loss costs the plain way;
- ``mask``: the mask pass as the job runs it (``compute_mask`` over 2 forget batches, global top ``--keep``, the two
  guided terms backpropagated one after the other) and the mask file;
- ``mask_accumulator``: the same with a separate float32 accumulator (the way the DDPM recipe's
  per-batch clipping needs it, and the way every mask pass worked before);
- ``steps``: a plain fine-tune step (Adam, every weight) against a masked SalUn step, same batch and
  optimizer, timed in one process (the ratio), then the export and a ``from_pretrained`` reload;
- ``masked_adam`` and ``masked_lean``: masked steps alone in a process, for their peak memory: torch's Adam
  over every tensor the mask touches (full gradients, full moments, a float32 gate per partly masked tensor:
  the job before ``MaskedAdam``) against ``MaskedAdam`` (moments and gradients of the masked entries only,
  a bool mask); the ``steps`` phase times both beside a plain step, in one process;
- ``erase`` and ``erase_lora``: the whole ``salun erase`` job (load, encode 2 + 2 images, mask, 2 steps,
  final checkpoint, export) without and with ``--lora-rank 4``: peak memory and the LoRA export's time
  and relative error, and ``stages``: each stage the job's progress bars name, when it began, the host RSS then
  and its peak there, kept when the system kills the phase (``reached``: the stage it was in).

    python scripts/bench_real_scale.py --resolution 256 --json bench_real_scale.json      # CPU, ~15 min
    python scripts/bench_real_scale.py --resolution 512 --device cuda --mixed-precision bf16  # GPU
    python scripts/bench_real_scale.py --family sdxl --weights-dtype bf16 --resolution 256 \
        --phases fwdbwd,mask,steps --json bench_sdxl.json                                   # SDXL on CPU
    python scripts/bench_real_scale.py --family sd3 --weights-dtype bf16 --resolution 256 \
        --json bench_sd3.json                          # SD3 medium's transformer (2.0B): mask pass, masked steps
    python scripts/bench_real_scale.py --smoke --json /tmp/real.json      # every phase on the toy SD: the path only

``--under-load`` records in --json that other jobs shared the machine: its seconds are not cost figures (peak
memory is each phase's own either way).

Random weights say nothing about erasure quality; they prove names, shapes, memory, time and export.
``--weights-dtype bf16`` keeps the UNet's weights in bfloat16: in the ``erase`` phases that is ``salun erase
--weights-dtype bf16`` (float32 masters for the masked entries); in the step phases ``MaskedAdam`` keeps the job's
float32 masters and moments of the masked entries, while torch's Adam (``masked_adam``, ``steps``' plain step) keeps
its moments in bf16 beside the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # fixture_models: the real configs, built with random weights
PHASES = ("fwdbwd", "mask", "mask_accumulator", "steps", "masked_adam", "masked_lean", "erase", "erase_lora")
SD3_PHASES = ("fwdbwd", "mask", "masked_adam", "masked_lean")  # the denoiser's own: no pipeline, no export


def _peak_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _family(a):
    from erase.diffusion.family import families

    return families()[a.family]


def _eps(a, unet):
    """The family's denoiser call (SDXL adds pooled text and time ids)."""
    fam = _family(a)
    return lambda zt, t, cond: fam.denoise(unet, zt, t, cond)


def _setup(a):
    """The saved random pipeline's UNet on the device, a noise scheduler, a batch maker and three
    conditions (forget, misaligned, empty) of the family's shape."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel

    dtype = torch.bfloat16 if a.weights_dtype == "bf16" else torch.float32
    if a.family == "sd3":
        return _setup_sd3(a, dtype)
    unet = UNet2DConditionModel.from_pretrained(a.src / "unet", torch_dtype=dtype).to(a.device)
    sched = DDPMScheduler.from_pretrained(a.src / "scheduler")
    vae = json.loads((a.src / "vae" / "config.json").read_text())
    lat, bs = a.resolution // 2 ** (len(vae["block_out_channels"]) - 1), a.batch_size
    dim = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(0)

    def batch():
        return (torch.randn(bs, 4, lat, lat, generator=g).to(a.device, dtype),
                torch.randn(bs, 4, lat, lat, generator=g).to(a.device, dtype),
                torch.randint(0, 1000, (bs,), generator=g).to(a.device))

    def cond():
        c = {"encoder_hidden_states": torch.randn(bs, 77, dim, generator=g).to(a.device, dtype)}
        if unet.config.addition_embed_type == "text_time":
            pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            c["text_embeds"] = torch.randn(bs, pooled, generator=g).to(a.device, dtype)
            c["time_ids"] = torch.tensor([[a.resolution, a.resolution, 0, 0, a.resolution, a.resolution]] * bs,
                                         dtype=dtype, device=a.device)
        return c

    ctx = [cond() for _ in range(3)]
    return unet, sched, batch, ctx


def _setup_sd3(a, dtype):
    """``_setup`` for SD3 medium's transformer: 16 latent channels at 1/8 of the resolution, flow matching, and
    random conditions of the pipeline's shapes (333 text tokens 4096 wide, pooled 2048)."""
    import torch
    from diffusers import SD3Transformer2DModel

    from erase.diffusion.flow import FlowMatchTraining
    from fixture_models.real_configs import SD3_TEXT_TOKENS

    model = SD3Transformer2DModel.from_pretrained(a.src / "transformer", torch_dtype=dtype).to(a.device)
    cfg, lat, bs = model.config, a.resolution // 8, a.batch_size
    g = torch.Generator().manual_seed(0)

    def batch():
        return (torch.randn(bs, cfg.in_channels, lat, lat, generator=g).to(a.device, dtype),
                torch.randn(bs, cfg.in_channels, lat, lat, generator=g).to(a.device, dtype),
                torch.randint(0, 1000, (bs,), generator=g).to(a.device))

    def cond():
        return {"encoder_hidden_states": torch.randn(bs, SD3_TEXT_TOKENS, cfg.joint_attention_dim,
                                                     generator=g).to(a.device, dtype),
                "pooled_projections": torch.randn(bs, cfg.pooled_projection_dim, generator=g).to(a.device, dtype)}

    return model, FlowMatchTraining(1000), batch, [cond() for _ in range(3)]


def _autocast(a):
    import torch

    dev = "cuda" if a.device.startswith("cuda") else "cpu"
    return torch.autocast(dev, dtype=torch.bfloat16, enabled=a.mixed_precision == "bf16")


def phase_fwdbwd(a) -> dict:
    from erase.diffusion.losses import guided_forgetting_loss

    unet, sched, batch, (c, _, u) = _setup(a)
    if a.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    for p in unet.parameters():
        p.requires_grad_(True)
    eps = _eps(a, unet)
    t0 = time.perf_counter()
    z0, noise, t = batch()
    with _autocast(a):
        loss = guided_forgetting_loss(eps, sched, z0, c, u, t, noise, 7.5)
    loss.backward()
    return {"seconds": round(time.perf_counter() - t0, 2)}


def phase_mask(a, clip: float | None = None) -> dict:
    from erase.diffusion.losses import each_under, guided_forgetting_terms
    from erase.core.mask import compute_mask

    unet, sched, batch, (c, _, u) = _setup(a)
    if a.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    eps = _eps(a, unet)

    def loss_fn(_):  # the job's mask pass: the two guided terms backpropagated one after the other
        z0, noise, t = batch()
        return each_under(lambda: _autocast(a), guided_forgetting_terms(eps, sched, z0, c, u, t, noise, 7.5))

    t0 = time.perf_counter()
    mask = compute_mask(unet, loss_fn, [0, 1], keep=a.keep, clip_grad_norm=clip, progress=False)
    seconds = time.perf_counter() - t0
    path = a.work / ("mask.safetensors" if clip is None else "mask-accumulator.safetensors")
    mask.save(path)
    return {"seconds": round(seconds, 2), "mask_file_mib": round(path.stat().st_size / 2**20, 1),
            "kept_fraction": round(mask.kept / mask.total, 4), "gradient_sum": mask.meta["gradient_sum"],
            "int64_mask_gib_reference_style": round(mask.total * 8 / 2**30, 2)}


def phase_mask_accumulator(a) -> dict:
    """The mask pass as it was before the sum moved into the gradients: a float32 accumulator beside
    them (forced by a per-batch clip at infinity, which changes no value)."""
    return phase_mask(a, clip=float("inf"))


def _training(a):
    """The UNet in training mode, the batch maker, and ``backward(opt, batch)``: SalUn's misaligned loss on the
    batch, the optimizer's gradients cleared, then backward (the step the ``steps`` and ``masked_*`` phases
    share)."""
    from erase.diffusion.losses import misaligned_loss

    unet, sched, batch, (c, m, _) = _setup(a)
    if a.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    eps = _eps(a, unet)

    def backward(opt, drawn) -> None:
        z0, noise, t = drawn
        with _autocast(a):
            loss = misaligned_loss(eps, sched, z0, c, m, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    return unet, batch, backward


def _sync(a) -> None:
    """Wait for the device, so a step's time is its own."""
    import torch

    if a.device.startswith("cuda"):
        torch.cuda.synchronize()


def phase_steps(a) -> dict:
    import gc

    import torch
    from erase.core.export import export_pipeline
    from erase.core.mask import Mask
    from erase.core.masked_optim import MaskedAdam, MaskedParameters

    unet, batch, backward = _training(a)
    mask = Mask.load(a.work / "mask.safetensors")
    masking: list[float] = []

    batches = [batch() for _ in range(a.steps + 1)]  # the same data for each kind of step

    def step(opt, masked, i):
        backward(opt, batches[i])
        if isinstance(opt, MaskedAdam):
            masked.step(opt)
        elif masked is not None:
            s = time.perf_counter()
            masked.mask_gradients()
            masking.append(time.perf_counter() - s)
            opt.step()
            masked.restore()
        else:
            opt.step()
        _sync(a)

    def timed(masked, params, lean: bool = False) -> float:
        opt = MaskedAdam(masked, lr=1e-5) if lean else torch.optim.Adam(params, lr=1e-5)
        if masked is not None:
            masked.attach(opt)
        step(opt, masked, 0)  # warm-up (allocates the optimizer state)
        ts = []
        for i in range(1, a.steps + 1):
            s = time.perf_counter()
            step(opt, masked, i)
            ts.append(time.perf_counter() - s)
        opt.zero_grad(set_to_none=True)  # no gradient outlives its run (the next one must fit beside it)
        if lean:
            opt.close()
        del opt
        gc.collect()
        return min(ts)

    def rewind() -> None:  # back to the base weights
        base = type(unet).from_pretrained(a.src / "unet", torch_dtype=unet.dtype).to(a.device)
        unet.load_state_dict(base.state_dict())
        del base
        gc.collect()

    for p in unet.parameters():
        p.requires_grad_(True)
    plain = timed(None, list(unet.parameters()))
    rewind()
    masked = MaskedParameters(unet, mask)
    masked_t = timed(masked, masked.parameters())
    del masked
    rewind()
    masked = MaskedParameters(unet, mask)
    lean_t = timed(masked, masked.parameters(), lean=True)
    trained = _digest(unet)  # a hash of every byte, not a second copy of the weights (it would not fit beside)
    del masked
    rewind()  # the old masked step once more from the base: the lean one must have made the same weights
    masked = MaskedParameters(unet, mask)
    timed(masked, masked.parameters())
    lean_same = _digest(unet) == trained
    del masked
    gc.collect()
    t3 = time.time()
    cls, fam = _family(a).pipeline_class(), _family(a)
    src_pipe = cls.from_pretrained(a.src, **fam.load_kwargs())
    out = a.work / f"{a.family}-erased"
    export_pipeline(src_pipe, unet.cpu(), out, overwrite=True, mask=mask)
    back = cls.from_pretrained(out, local_files_only=True, torch_dtype=unet.dtype)
    same = all(torch.equal(x, y) for x, y in zip(back.unet.state_dict().values(), unet.state_dict().values()))
    return {"plain_step_seconds": round(plain, 3), "masked_step_seconds": round(masked_t, 3),
            "masked_to_plain_ratio": round(masked_t / plain, 3),
            "lean_masked_step_seconds": round(lean_t, 3), "lean_masked_to_plain_ratio": round(lean_t / plain, 3),
            "lean_equals_masked_adam": bool(lean_same),
            "gradient_masking_seconds": round(min(masking), 3),
            "export_and_reload_seconds": round(time.time() - t3, 1), "reloaded_unet_equals_trained": bool(same),
            "export_folder_gib": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**30, 2)}


def _masked_only(a, lean: bool) -> dict:
    """A few masked steps, nothing else in the process: its peak memory is the masked step's."""
    import torch
    from erase.core.mask import Mask
    from erase.core.masked_optim import MaskedAdam, MaskedParameters

    unet, batch, backward = _training(a)
    masked = MaskedParameters(unet, Mask.load(a.work / "mask.safetensors"))
    opt = (MaskedAdam(masked, lr=1e-5, state_bits=8 if a.use_8bit_adam else 32) if lean
           else torch.optim.Adam(masked.parameters(), lr=1e-5))
    masked.attach(opt)
    ts = []
    for _ in range(a.steps + 1):  # the first allocates the optimizer state
        s = time.perf_counter()
        backward(opt, batch())
        masked.step(opt)
        _sync(a)
        ts.append(time.perf_counter() - s)
    state = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
                if torch.is_tensor(v))
    return {"step_seconds": round(min(ts[1:]), 3), "optimizer_state_gib": round(state / 2**30, 2),
            "trainable_weights": masked.n_trainable(),
            "weights_gib": round(sum(p.numel() * p.element_size() for p in unet.parameters()) / 2**30, 2)}


def phase_masked_adam(a) -> dict:
    return _masked_only(a, lean=False)


def phase_masked_lean(a) -> dict:
    return _masked_only(a, lean=True)


def _digest(model) -> str:
    """A hash of every weight's bytes, in the model's order."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for n, p in model.named_parameters():
        h.update(n.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _image_folders(a) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = []
    for kind, caption in (("forget", "a photo of a nude person"), ("retain", "a photo of a person wearing clothes")):
        d = a.work / f"{kind}-images"
        d.mkdir(exist_ok=True)
        rows = []
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (a.resolution, a.resolution, 3), dtype=np.uint8)).save(d / f"{i}.png")
            rows.append(json.dumps({"file_name": f"{i}.png", "text": caption}))
        (d / "metadata.jsonl").write_text("\n".join(rows) + "\n")
        folders.append(d)
    return folders[0], folders[1]


class StageTrace:
    """The erase phase's stages as its progress bars name them ("saliency 1/2", "erasing 2/2", "after erasing":
    from the last step's end to the job's, the checkpoint and export), each with the process's RSS, appended line
    by line to ``<work>/<phase>.trace.jsonl`` as they happen: a phase the system kills for memory still leaves
    which stage it reached and what it held there. The RSS is also sampled every 0.5 s (Linux:
    /proc/self/status), so a stage's peak is seen between its progress updates."""

    _BAR = re.compile(r"^\s*([a-z][a-z ]*?):\s+\d+%\|.*?\|\s*(\d+)/(\d+)")  # "erasing:  50%|###  | 1/2 ..."

    def __init__(self, path: Path):
        import threading

        self.file, self.t0, self.stage = open(path, "w", buffering=1), time.time(), "load"
        self.stderr = sys.stderr  # everything still goes there too: warnings, errors and the bars themselves
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._write("load")
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def rss_gib() -> float | None:
        try:
            with open("/proc/self/status") as f:
                return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 2**20
        except (OSError, StopIteration):
            return None

    def _write(self, stage: str) -> None:
        rss = self.rss_gib()
        with self._lock:  # (the sampling thread writes too: whole lines only)
            self.file.write(json.dumps({"t": round(time.time() - self.t0, 1), "stage": stage,
                                        "rss_gib": None if rss is None else round(rss, 2)}) + "\n")

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self._write(self.stage)

    def close(self) -> None:
        self._stop.set()

    def write(self, text: str) -> int:  # stands in for stderr, where the job's progress bars go
        self.stderr.write(text)
        for part in re.split(r"[\r\n]+", text):
            m = self._BAR.match(part)
            if m:
                n, total = int(m.group(2)), int(m.group(3))  # (a finished bar: what follows it, until the next)
                stage = f"{m.group(1)} {n + 1}/{total}" if n < total else f"after {m.group(1)}"
                if stage != self.stage:
                    self.stage = stage
                    self._write(stage)
        return len(text)

    def flush(self) -> None:
        self.stderr.flush()


def trace_path(work: Path, phase: str) -> Path:
    """Where a phase's ``StageTrace`` goes: the child writes it, the parent reads it."""
    return work / f"{phase}.trace.jsonl"


def stages_of(path: Path) -> list[dict]:
    """``StageTrace``'s file, one entry a stage in the order reached: when it began, its RSS then, its peak RSS."""
    out: list[dict] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:  # the last line of a killed process may be cut
            continue
        if not out or out[-1]["stage"] != r["stage"]:
            out.append({"stage": r["stage"], "start_s": r["t"], "rss_gib_at_start": r["rss_gib"],
                        "peak_rss_gib": r["rss_gib"]})
        elif r["rss_gib"] is not None:
            out[-1]["peak_rss_gib"] = max(out[-1]["peak_rss_gib"] or 0.0, r["rss_gib"])
    return out


def _phase_erase(a, lora_rank: int | None) -> dict:
    from erase.diffusion.recipes import load_recipe
    from erase.diffusion.job import EraseOptions, erase

    import shutil

    name = "erase-lora" if lora_rank else "erase"
    sys.stderr = StageTrace(trace_path(a.work, a.phase))  # the job's progress bars, read for its stages
    forget, retain = _image_folders(a)
    recipe = load_recipe("nudity", batch_size=a.batch_size, n_forget=2, n_retain=2, keep=a.keep)
    shutil.rmtree(a.work / f"{name}.work", ignore_errors=True)  # the whole job: no mask or image cached by a run before
    summary = erase(EraseOptions(recipe=recipe, out=a.work / name, model=str(a.src), steps=2,
                                 resolution=a.resolution, forget_data=forget, retain_data=retain,
                                 work_dir=a.work / f"{name}.work", overwrite=True, lora_rank=lora_rank,
                                 device=a.device, mixed_precision=a.mixed_precision,
                                 gradient_checkpointing=a.gradient_checkpointing, progress=True,
                                 weights_dtype=a.weights_dtype, use_8bit_adam=a.use_8bit_adam))
    res = {"seconds": summary["seconds"], "mask_seconds": summary["mask_seconds"],
           "train_seconds": summary["train_seconds"]}
    if lora_rank:
        lora = summary["lora"]
        res.update({"lora_rank": lora_rank, "lora_seconds": lora["seconds"], "lora_modules": lora["modules"],
                    "lora_relative_error": round(lora["relative_error"], 3),
                    "lora_not_represented": lora["not_represented"]})
    return res


def phase_erase(a) -> dict:
    return _phase_erase(a, None)


def phase_erase_lora(a) -> dict:
    return _phase_erase(a, 4)


def run_child(phase: str, a) -> dict:
    """Run one phase in its own process; its peak memory comes from that process alone."""
    cmd = [sys.executable, __file__, "--phase", phase, "--src", str(a.src), "--work", str(a.work),
           "--resolution", str(a.resolution), "--batch-size", str(a.batch_size), "--steps", str(a.steps),
           "--device", a.device, "--mixed-precision", a.mixed_precision, "--family", a.family,
           "--weights-dtype", a.weights_dtype, "--keep", str(a.keep)] + \
          (["--gradient-checkpointing"] if a.gradient_checkpointing else []) + \
          (["--use-8bit-adam"] if a.use_8bit_adam else [])
    out, trace = a.work / f"{phase}.json", trace_path(a.work, phase)
    trace.unlink(missing_ok=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd + ["--json", str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    stages = stages_of(trace)  # the erase phases' stages (host RSS), whether or not the phase finished
    if code != 0:  # a phase that does not fit is a figure too: said, and the next phases still run
        why = " (killed by the system: out of memory)" if code == -9 else ""
        res = {"failed": f"exit {code}{why}", "peak_gib": round(usage.ru_maxrss / 2**20, 2),
               "wall_seconds": round(time.time() - t0, 1)}
        if stages:
            res.update(stages=stages, reached=stages[-1]["stage"])
        print(f"{phase}: failed {json.dumps(res)}", flush=True)
        return res
    res = json.loads(out.read_text())
    if not a.device.startswith("cuda"):
        res["peak_gib"] = round(usage.ru_maxrss / 2**20, 2)
    if stages:
        res["stages"] = stages
    res["wall_seconds"] = round(time.time() - t0, 1)
    print(f"{phase}: {json.dumps(res)}", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=256, help="image size (512 is SD's; 256 keeps CPU runs short)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed steps of each kind (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mixed-precision", choices=("no", "bf16"), default="no")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--family", choices=("sd", "sdxl", "sd3"), default="sd",
                   help="sd: SD v1.4's architecture; sdxl: SDXL base 1.0's (UNet 2.6B, two text encoders); sd3: SD3 "
                        f"medium's transformer alone (2.0B; the phases {', '.join(SD3_PHASES)})")
    p.add_argument("--weights-dtype", choices=("fp32", "bf16"), default="fp32",
                   help="the UNet's weights in the measured phases (bf16 halves weights, gradients and Adam state)")
    p.add_argument("--use-8bit-adam", action="store_true",
                   help="MaskedAdam's moments in 8 bits (bitsandbytes) in the masked_lean and erase phases")
    p.add_argument("--keep", type=float, default=0.5, help="the mask's kept fraction (default %(default)s, SalUn's)")
    p.add_argument("--phases", default=None, help=f"comma-separated subset of {', '.join(PHASES)} (default: all; "
                                                  f"sd3: {', '.join(SD3_PHASES)})")
    p.add_argument("--model", type=Path, default=None,
                   help="a local pipeline folder to measure instead of SD v1.4 with random weights")
    p.add_argument("--workdir", type=Path, default=None, help="where the source and exported pipelines go")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--smoke", action="store_true",
                   help="every phase on the shipped toy SD at 32 px, 1 timed step: proves the path in seconds, "
                        "measures nothing about real scale")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # internal: run one phase
    p.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:  # a child process
        res = globals()[f"phase_{a.phase}"](a)
        if a.device.startswith("cuda"):
            res["peak_gib"] = round(_peak_gib(a.device), 2)
        a.json.write_text(json.dumps(res))
        return

    from fixture_models.real_configs import sd14_pipeline, sdxl_pipeline

    if a.smoke:
        from erase.toy import TOY_SD

        a.model, a.resolution, a.steps = a.model or TOY_SD, 32, 1
    a.work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_real_scale_"))
    a.work.mkdir(parents=True, exist_ok=True)
    if a.model:  # the family is the model's, whatever --family says
        from erase.diffusion.family import family_of

        a.family = family_of(a.model).name
    a.src = a.model.resolve() if a.model else a.work / f"{a.family}-random"
    a.phases = a.phases or ",".join(SD3_PHASES if a.family == "sd3" else PHASES)
    if a.family == "sd3" and not set(a.phases.split(",")) <= set(SD3_PHASES):
        raise SystemExit(f"--family sd3 measures the transformer alone: --phases from {', '.join(SD3_PHASES)}")
    res = {"family": a.family, "resolution": a.resolution, "batch_size": a.batch_size, "device": a.device,
           "mixed_precision": a.mixed_precision, "weights_dtype": a.weights_dtype,
           "gradient_checkpointing": a.gradient_checkpointing, "smoke": a.smoke, "under_load": a.under_load,
           "keep": a.keep, "use_8bit_adam": a.use_8bit_adam}
    if a.family == "sd3" and not (a.src / "transformer" / "config.json").exists():
        t0 = time.time()
        import torch

        from fixture_models.real_configs import sd3_transformer

        model = sd3_transformer(seed=0, dtype=torch.bfloat16 if a.weights_dtype == "bf16" else torch.float32)
        res["transformer_parameters"] = sum(x.numel() for x in model.parameters())
        model.save_pretrained(a.src / "transformer", safe_serialization=True)
        del model
        res["build_and_save_seconds"] = round(time.time() - t0, 1)
    elif a.family != "sd3" and not (a.src / "model_index.json").exists():
        t0 = time.time()
        import torch

        dtype = torch.bfloat16 if a.weights_dtype == "bf16" else torch.float32
        pipe = sd14_pipeline(seed=0) if a.family == "sd" else sdxl_pipeline(seed=0, dtype=dtype)
        res["unet_parameters"] = sum(x.numel() for x in pipe.unet.parameters())
        pipe.save_pretrained(a.src, safe_serialization=True)
        del pipe
        res["build_and_save_seconds"] = round(time.time() - t0, 1)
    if a.family == "sd3":  # its parameters (not the position-embedding buffer), whichever run built the weights
        import torch
        from diffusers import SD3Transformer2DModel

        with torch.device("meta"):
            model = SD3Transformer2DModel.from_config(SD3Transformer2DModel.load_config(a.src / "transformer"))
        res["transformer_parameters"] = sum(x.numel() for x in model.parameters())
        del model
    what = {"sd": "SD v1.4", "sdxl": "SDXL base 1.0", "sd3": "SD3 medium's transformer"}[a.family]
    print(f"measuring {a.src}" + ("" if a.model else f" ({what} architecture, random weights)"), flush=True)
    phases = [x for x in a.phases.split(",") if x]
    needs_mask = [x for x in phases if x in ("steps", "masked_adam", "masked_lean")]
    if needs_mask and "mask" not in phases and not (a.work / "mask.safetensors").exists():
        phases.insert(phases.index(needs_mask[0]), "mask")
    for ph in phases:
        res[ph] = run_child(ph, a)
    ok = {k for k, v in res.items() if isinstance(v, dict) and "failed" not in v}
    for m in ("mask", "mask_accumulator"):
        if "fwdbwd" in ok and m in ok:
            res[f"{m}_peak_over_fwdbwd"] = round(res[m]["peak_gib"] / res["fwdbwd"]["peak_gib"], 3)
    if "masked_adam" in ok and "masked_lean" in ok:
        res["lean_peak_over_masked_adam"] = round(res["masked_lean"]["peak_gib"] / res["masked_adam"]["peak_gib"], 3)
    if "erase" in ok and "erase_lora" in ok:
        res["lora_peak_over_plain_erase"] = round(res["erase_lora"]["peak_gib"] / res["erase"]["peak_gib"], 3)
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
