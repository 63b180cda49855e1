"""What every toy-world training loop shares: seeding, the learning-rate schedule, the VAE's latents, the
EMA of the weights sampling uses and the loop itself (``fit``) (the UNet builds in ``build.py``, the SD3 transformer's in ``build_sd3.py``,
the DDPM's in ``erase/diffusion/ddpm/train.py``)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..core.sampling import EpochSampler


def seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))


@torch.no_grad()
def encode_latents(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(x), 512):
        d = vae.encode(x[i:i + 512]).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


class EMA:
    """Exponential moving average of a module's parameters (sampling uses the average)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm up: early weights are not worth keeping
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach(), 1 - d)


CHECKPOINT_EVERY = 500  # steps between a toy training's checkpoints: an interrupted build resumes from the last


def fit(modules: list[torch.nn.Module], n: int, cfg, gen: torch.Generator, loss_of: Callable[[torch.Tensor], torch.Tensor],
        desc: str, checkpoint: Path | None = None) -> list[torch.nn.Module]:
    """The toy trainings' loop: AdamW over every module's weights at ``cfg.unet_lr`` (200 warm-up steps, then
    cosine decay), ``cfg.unet_steps`` batches of ``cfg.batch_size`` indices drawn epoch by epoch from ``n`` samples
    with ``gen``, ``loss_of(indices)`` backpropagated, gradients clipped to norm 1, an EMA of each module;
    returns the EMA copies, which sampling uses. ``checkpoint``: a folder that holds, every ``CHECKPOINT_EVERY``
    steps, everything the loop needs to go on bit for bit (weights, EMAs, AdamW's state, every random state); a
    loop that finds one there resumes from it."""
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    emas = [EMA(m, cfg.ema_decay) for m in modules]
    batches = EpochSampler(n, cfg.batch_size, generator=gen)
    for m in modules:
        m.train()
    start, running = 0, None
    if checkpoint is not None and (checkpoint / "state.json").is_file():
        start, running = _load_checkpoint(checkpoint, modules, emas, opt, batches, gen)
        print(f"{desc}: resuming from step {start} ({checkpoint})")
    bar = tqdm(range(start, cfg.unet_steps), desc=desc, dynamic_ncols=True, initial=start, total=cfg.unet_steps)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.unet_lr * cosine_lr(step, cfg.unet_steps, 200)
        loss = loss_of(batches.next())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for ema, m in zip(emas, modules):
            ema.update(m, step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
        if checkpoint is not None and (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < cfg.unet_steps:
            _save_checkpoint(checkpoint, step + 1, running, modules, emas, opt, batches, gen)
    return [ema.shadow for ema in emas]


def _states(modules: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    # cloned: safetensors refuses tensors that share storage
    return {f"{i}.{k}": v.detach().clone().contiguous() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def _load_states(modules: list[torch.nn.Module], flat: dict[str, torch.Tensor]) -> None:
    for i, m in enumerate(modules):
        m.load_state_dict({k[len(f"{i}."):]: v for k, v in flat.items() if k.startswith(f"{i}.")})


def _save_checkpoint(folder: Path, step: int, running: float, modules, emas, opt, batches, gen) -> None:
    from safetensors.torch import save_file

    from ..core.atomic import atomic_dir
    from ..core.checkpoints import rng_state

    with atomic_dir(folder, overwrite=True) as tmp:
        save_file(_states(modules), tmp / "modules.safetensors")
        save_file(_states([e.shadow for e in emas]), tmp / "ema.safetensors")
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        save_file(rng_state({"batches": batches}, gen), tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step, "running": running}))


def _load_checkpoint(folder: Path, modules, emas, opt, batches, gen) -> tuple[int, float]:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    _load_states(modules, load_file(folder / "modules.safetensors"))
    _load_states([e.shadow for e in emas], load_file(folder / "ema.safetensors"))
    opt.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    rng = load_file(folder / "rng.safetensors")
    gen.set_state(rng["noise_gen"])
    torch.set_rng_state(rng["torch_cpu"])
    batches.load({n: rng[f"batches.{n}"] for n in ("gen", "perm", "pos")})
    return state["step"], state["running"]
