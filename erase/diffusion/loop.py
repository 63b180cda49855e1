"""The training loop every diffusion erasure job shares: resume -> steps -> checkpoints -> final checkpoint.

A job (``job.py``'s ``EraseJob``, with ``ddpm/stages.py``'s stages for the class-conditional DDPM) prepares
the model, the optimizer over its ``MaskedParameters`` and a ``draw`` function that gives each step's
forget and retain ``Batch``; the method turns those into losses. Resuming restores the weights, the
optimizer, the samplers and the generator exactly, and is refused when the settings' digest differs.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..core import distributed as dist
from ..core.checkpoints import (checkpoint_history, diverged, latest_checkpoint, load_checkpoint, rng_state,
                                save_checkpoint, weights_finite)
from ..core.errors import UserError
from ..core.masked_optim import MaskedParameters
from .methods import Batch, Method
from .methods.base import weighted


@dataclass
class Loop:
    trainable: MaskedParameters
    optimizer: torch.optim.Optimizer
    method: Method
    eps: Callable  # eps(z_t, t, cond) with the (prepared) denoiser
    scheduler: object
    draw: Callable[[dict, torch.Generator], tuple[Batch, Batch | None]]  # (samplers, gen) -> (forget, retain)
    samplers: dict
    gen: torch.Generator
    alpha: float
    steps: int
    work: Path
    digest: str  # what shaped training: a resume under other settings is refused
    checkpoint_every: int
    hint: str = "Try a lower --lr."
    grad_clip: float | None = None  # clip the masked gradient's norm (the DDPM recipe) or not (SD)
    accelerator: object | None = None  # accelerate's, for autocast, backward and the main process
    progress: bool = True
    lr_at: Callable[[int], float] | None = None  # the learning rate of each step's update (None: the optimizer's own)


def run(loop: Loop, resume: bool) -> dict:
    """Train to ``loop.steps``; returns ``{"history", "seconds", "start"}``. Divergence stops with the last
    good checkpoint named; the finished training is checkpointed before any export."""
    acc = loop.accelerator
    main = acc is None or acc.is_main_process
    start, ckpt = 0, latest_checkpoint(loop.work) if resume else None
    if ckpt is not None:
        start = load_checkpoint(ckpt, loop.trainable, loop.optimizer, loop.samplers, loop.gen, loop.digest,
                                dist.rank(), dist.world())
        if start > loop.steps:
            raise UserError(f"{ckpt} is at step {start}, past this run's {loop.steps} steps: resume with --steps "
                            f"{start} or more, or pass --restart")
        print(f"resuming from {ckpt} (step {start} of {loop.steps})")
    elif resume:
        print(f"--resume: no checkpoint in {loop.work}; starting from step 0")
    history, last_good = checkpoint_history(ckpt), ckpt
    bar = tqdm(range(start, loop.steps), desc="erasing", disable=not loop.progress or not main, dynamic_ncols=True,
               initial=start, total=loop.steps)
    t0 = time.time()
    for step in bar:
        forget, retain = loop.draw(loop.samplers, loop.gen)
        parts = _backward(loop, forget, retain, step, last_good)
        loss = parts["loss"]
        if loop.lr_at is not None:  # a function of the step alone: a resumed run sets what the straight run set
            for group in loop.optimizer.param_groups:
                group["lr"] = loop.lr_at(step)
        loop.trainable.step(loop.optimizer, clip_grad_norm=loop.grad_clip)
        # under several processes: the step's losses averaged over ranks (each rank saw its own batches)
        extra = [k for k in parts if k not in ("loss", "forget", "retain")]  # a method's own terms (--distill's)
        mean = dist.mean_over_ranks([loss.item(), parts["forget"].item(), parts["retain"].item(),
                                     *(parts[k].item() for k in extra)])
        history.append({"step": step + 1, "loss": mean[0], "forget": mean[1], "retain": mean[2],
                        **dict(zip(extra, mean[3:])), **({"lr": loop.lr_at(step)} if loop.lr_at else {})})
        bar.set_postfix(forget=f"{history[-1]['forget']:.4f}", retain=f"{history[-1]['retain']:.4f}")
        if (step + 1) % loop.checkpoint_every == 0 and step + 1 < loop.steps:
            last_good = _checkpoint(loop, step + 1, history, main) or last_good
    seconds = time.time() - t0
    if not weights_finite(loop.trainable):
        raise diverged("a weight became NaN or infinite", loop.steps, last_good, loop.hint)
    if start < loop.steps:
        # Saved before the export: a failed export (a full disk) loses no training, and `--resume` goes
        # straight to exporting.
        _checkpoint(loop, loop.steps, history, main)
    return {"history": history, "seconds": seconds, "start": start}


def _backward(loop: Loop, forget, retain, step: int, last_good) -> dict:
    """One step's loss and its gradient. A method that gives its loss as separate terms has each term
    backpropagated as soon as it is computed, so only one forward pass's activations are alive at a time (the
    same gradient: each weight's contributions are added as one backward would add them). Under several
    processes the terms go in one graph, so that the gradients are all-reduced once a step."""
    acc = loop.accelerator
    autocast = acc.autocast if acc is not None else contextlib.nullcontext
    backward = acc.backward if acc is not None else torch.Tensor.backward
    terms = _terms(loop, forget, retain)
    if terms is None:
        with autocast():
            parts = loop.method.losses(loop.eps, loop.scheduler, forget, retain, loop.alpha)
        _finite_or_stop(parts["loss"], step, last_good, loop.hint)
        loop.optimizer.zero_grad(set_to_none=True)
        backward(parts["loss"])
        return parts
    loop.optimizer.zero_grad(set_to_none=True)
    parts, loss = {"retain": torch.zeros(())}, None
    for term in terms:
        with autocast():
            value = term.value()
        part = weighted(term, value)
        _finite_or_stop(part, step, last_good, loop.hint)
        backward(part)
        parts[term.key] = value.detach()
        loss = part.detach() if loss is None else loss + part.detach()
    parts["loss"] = loss
    return parts


def _terms(loop: Loop, forget, retain) -> list | None:
    """The method's loss terms, to backpropagate one at a time (one process only), or None."""
    if loop.accelerator is not None and loop.accelerator.num_processes > 1:
        return None
    return loop.method.terms(loop.eps, loop.scheduler, forget, retain, loop.alpha)


def _finite_or_stop(loss: torch.Tensor, step: int, last_good, hint: str) -> None:
    if not torch.isfinite(loss):
        raise diverged(f"loss became {loss.item()}", step, last_good, hint)


def _checkpoint(loop: Loop, step: int, history: list[dict], main: bool) -> Path | None:
    """The main process writes the checkpoint, with every rank's random states (a collective: every rank
    calls it); the others wait until it is on disk."""
    ranks = dist.gather([rng_state(loop.samplers, loop.gen)])
    path = save_checkpoint(loop.work, step, loop.trainable, loop.optimizer, loop.samplers, loop.gen, loop.digest,
                           history, ranks) if main else None
    dist.barrier()
    return path
