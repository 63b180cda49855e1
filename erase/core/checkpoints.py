"""Training state shared by the erasure jobs (SD and DDPM): checkpoints that resume exactly, and the
accelerator they run under."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError
from .mask import Mask
from .masked_optim import MaskedParameters
from .workdir import checkpoints_in


class TrainingDiverged(FloatingPointError):
    """The loss or a weight became NaN or infinite: the run stops and the last good checkpoint is kept."""


def diverged(what: str, step: int, last_good: Path | None, hint: str) -> TrainingDiverged:
    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
    return TrainingDiverged(f"{what} at step {step}: stopping; {where}. {hint}")


@torch.no_grad()
def weights_finite(trainable: MaskedParameters) -> bool:
    """Every trainable weight is a finite number (a finite loss does not prove it: one step with a
    huge learning rate can leave infinities that only the next step's loss shows)."""
    return all(bool(torch.isfinite(p).all()) for p in trainable.parameters())


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
    ckpts = [c for c in checkpoints_in(work) if (c / "state.json").exists()]
    return ckpts[-1] if ckpts else None


def rng_state(samplers, gen) -> dict[str, torch.Tensor]:
    """This process's random states: our generator, the samplers, torch's global CPU and CUDA states."""
    rng = {"noise_gen": gen.get_state(), "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"torch_cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    for k, s in samplers.items():
        rng.update({f"{k}.{n}": v for n, v in s.state().items()})
    return rng


def save_checkpoint(work: Path, step: int, trainable: MaskedParameters, optimizer, samplers, gen,
                    digest: str, history: list[dict] | None = None, ranks: list[dict] | None = None) -> Path:
    """Everything needed to continue bit-identically: trainable weights, optimizer state, every random
    state (our generators, the samplers, torch's global CPU and CUDA states, which dropout draws from)
    and the loss history so far. ``ranks``: under several processes, every rank's ``rng_state`` (the
    main process writes them all; each rank draws its own batches)."""
    from .atomic import atomic_dir

    if not weights_finite(trainable):  # never name a checkpoint of broken weights "good"
        raise diverged("a weight became NaN or infinite", step, latest_checkpoint(work), "Try a lower --lr.")
    target = work / f"checkpoint-{step}"
    with atomic_dir(target, overwrite=True) as tmp:
        save_file(trainable.state_dict(), tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        ranks = ranks or [rng_state(samplers, gen)]
        for r, rng in enumerate(ranks):
            save_file(rng, tmp / ("rng.safetensors" if r == 0 else f"rng-rank{r}.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "mask": digest, "processes": len(ranks)}))
        (tmp / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history or []))
    for old in checkpoints_in(work)[:-2]:  # keep the newest two
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(ckpt: Path, trainable: MaskedParameters, optimizer, samplers, gen, digest: str,
                    rank: int = 0, processes: int = 1) -> int:
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{ckpt} is damaged ({type(e).__name__}): rerun with --restart to discard it") from e
    made_by = state.get("processes", 1)
    if made_by != processes:
        raise UserError(f"{ckpt} was written by a run of {made_by} process{'es' if made_by > 1 else ''}: resume it "
                        f"with {made_by} (each process draws its own batches), or pass --restart")
    if state.get("mask") != digest:
        raise UserError(f"{ckpt} was trained under another mask or other settings (learning rate, alpha, batch "
                        "size, seed, data, resolution, --weights-dtype, --use-8bit-adam): resuming would mix two "
                        "runs. Rerun with the settings of the interrupted run, or pass --restart to discard its "
                        "checkpoints")
    try:
        trainable.load_state_dict(load_file(ckpt / "trainable.safetensors"))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        rng = load_file(ckpt / ("rng.safetensors" if rank == 0 else f"rng-rank{rank}.safetensors"))
    except Exception as e:  # noqa: BLE001 - a truncated file fails in safetensors, pickle or torch
        raise UserError(f"{ckpt} is damaged ({type(e).__name__}): rerun with --restart to discard it") from e
    if not weights_finite(trainable):
        raise UserError(f"{ckpt} holds non-finite weights: rerun with --restart (and a lower --lr)")
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
    try:
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise UserError(f"{ckpt} is damaged ({f.name}: {type(e).__name__}): rerun with --restart to discard it") from e


def fresh_accelerator(mixed_precision: str, cpu: bool, device: str | None = None):
    """An Accelerator with these settings, even if this process made one with others before.

    accelerate keeps its state in a process-wide singleton; a library called twice in one process (a
    benchmark, a notebook) must reset it. A multi-process launch keeps its distributed state.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state:  # noqa: SLF001 - accelerate offers no public reset
        single = PartialState().num_processes == 1
        AcceleratorState._reset_state(reset_partial_state=single)  # noqa: SLF001
    if device is not None and not cpu:
        d = torch.device(device)
        if d.type == "cuda" and d.index is not None and "LOCAL_RANK" not in os.environ:
            torch.cuda.set_device(d)  # one process: accelerate takes the current CUDA device (--device cuda:1)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
