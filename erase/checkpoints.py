"""Training state shared by the erasure jobs (SD and DDPM): checkpoints that resume exactly, and the
accelerator they run under."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError
from .mask import Mask
from .masked_optim import MaskedParameters


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: the run stops and the last good checkpoint is kept."""


def mask_digest(mask: Mask | None) -> str:
    """Identifies the mask a checkpoint was trained under (resuming under another is refused)."""
    import hashlib

    if mask is None:
        return "no-mask"
    h = hashlib.sha256()
    for n in sorted(mask.masks):
        h.update(n.encode())
        h.update(mask.masks[n].numpy().tobytes())
    return h.hexdigest()[:16]


def latest_checkpoint(work: Path) -> Path | None:
    ckpts = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    ckpts = [c for c in ckpts if (c / "state.json").exists()]
    return ckpts[-1] if ckpts else None


def save_checkpoint(work: Path, step: int, trainable: MaskedParameters, optimizer, samplers, gen,
                    digest: str, history: list[dict] | None = None) -> Path:
    """Everything needed to continue bit-identically: trainable weights, optimizer state, every random
    state (our generators, the samplers, torch's global CPU and CUDA states, which dropout draws from)
    and the loss history so far."""
    from .atomic import atomic_dir

    target = work / f"checkpoint-{step}"
    with atomic_dir(target, overwrite=True) as tmp:
        save_file(trainable.state_dict(), tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng = {"noise_gen": gen.get_state(), "torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"torch_cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        for k, s in samplers.items():
            rng.update({f"{k}.{n}": v for n, v in s.state().items()})
        save_file(rng, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step, "mask": digest}))
        (tmp / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history or []))
    done = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in done[:-2]:  # keep the newest two
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(ckpt: Path, trainable: MaskedParameters, optimizer, samplers, gen, digest: str) -> int:
    state = json.loads((ckpt / "state.json").read_text())
    if state.get("mask") != digest:
        raise UserError(f"{ckpt} was trained under another mask (or recipe): resuming would move weights outside "
                        "this run's mask. Start afresh without --resume, or use another --work-dir")
    trainable.load_state_dict(load_file(ckpt / "trainable.safetensors"))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    rng = load_file(ckpt / "rng.safetensors")
    gen.set_state(rng["noise_gen"])
    if "torch_cpu" in rng:
        torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    for k, s in samplers.items():
        s.load({n: rng[f"{k}.{n}"] for n in ("gen", "perm", "pos")})
    return state["step"]


def checkpoint_history(ckpt: Path | None) -> list[dict]:
    """The per-step loss records saved with a checkpoint (empty for none)."""
    f = ckpt / "history.jsonl" if ckpt is not None else None
    if f is None or not f.exists():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def fresh_accelerator(mixed_precision: str, cpu: bool):
    """An Accelerator with these settings, even if this process made one with others before.

    accelerate keeps its state in a process-wide singleton; a library called twice in one process (a
    benchmark, a notebook) must reset it. A multi-process launch keeps its distributed state.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state:  # noqa: SLF001 - accelerate offers no public reset
        single = PartialState().num_processes == 1
        AcceleratorState._reset_state(reset_partial_state=single)  # noqa: SLF001
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
