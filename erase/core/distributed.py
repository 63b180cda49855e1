"""What a job needs to run right under ``accelerate launch`` with several processes (ranks).

Every helper is a no-op in one process, so the jobs call them unconditionally:
- ``rank()`` / ``world()`` / ``is_main()``: from the launcher's environment, without initialising anything;
- ``barrier()``: every rank waits here (after the main process wrote an output, for instance);
- ``share(items)``: this rank's share of a list, round-robin (rank r takes items r, r+N, ...);
- ``gather(objects)``: every rank's share back, in the one-process order (the inverse of ``share``);
- ``all_reduce_sum(tensors)``: sums over ranks, in place (the mask's gradient sums);
- ``broadcast(obj)``: the main process's value on every rank (a decision only it may take).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Sequence

import torch


_ALONE = [False]


@contextlib.contextmanager
def alone():
    """Inside: this process works as if it were the only one (a job the main process runs by itself
    while the others have finished): no collective waits for processes that are not coming."""
    old, _ALONE[0] = _ALONE[0], True
    try:
        yield
    finally:
        _ALONE[0] = old


def world() -> int:
    """The number of processes this job runs in (1 without a multi-process launch)."""
    if _ALONE[0]:
        return 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if _ALONE[0]:
        return 0
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _ready() -> bool:
    """The process group, started by accelerate when the job made its Accelerator/PartialState."""
    if world() == 1:
        return False
    if not torch.distributed.is_initialized():
        process_state()  # joins the launch's process group (gloo on CPU, NCCL on GPUs)
    return True


def process_state():
    """accelerate's ``PartialState`` for this process, told when the launch runs on the CPU.

    Under ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu`` a bare ``PartialState()`` (accelerate 1.x)
    joins the process group yet says it is the only process (index 0 of 1), so every process would do all
    the work and write every output; ``cpu=True`` gives the launch's true index and count."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    accelerated = torch.cuda.is_available() or torch.backends.mps.is_available() or xpu
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not accelerated)


def barrier() -> None:
    if _ready():
        torch.distributed.barrier()


@contextlib.contextmanager
def main_first(shared: bool):
    """``shared``: every process runs the block together (it shares its work out itself); else the main
    process runs it first (a download, a cache it fills) and the others after it."""
    if shared or world() == 1:
        yield
        return
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


_SHARING = [False]


@contextlib.contextmanager
def sharded():
    """Inside: ``generate`` shares its batches out over the processes (every process must be inside,
    calling the same generations in the same order: an audit run by all of them)."""
    old, _SHARING[0] = _SHARING[0], world() > 1
    try:
        yield
    finally:
        _SHARING[0] = old


def sharding() -> bool:
    return _SHARING[0]


def share(items: Sequence) -> list:
    """This rank's items, round-robin; the others' come back with ``gather``."""
    return list(items[rank()::world()]) if world() > 1 else list(items)


def gather(mine: list) -> list:
    """Every rank's ``share`` put back in the order of the list it was taken from."""
    if not _ready():
        return list(mine)
    parts: list[Any] = [None] * world()
    torch.distributed.all_gather_object(parts, list(mine))
    n = sum(len(p) for p in parts)
    out = [None] * n
    for r, p in enumerate(parts):
        out[r::world()] = p
    return out


def all_reduce_sum(tensors: dict[str, torch.Tensor]) -> None:
    if not _ready():
        return
    for t in tensors.values():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)


def broadcast(obj: Any) -> Any:
    """The main process's ``obj`` on every rank."""
    if not _ready():
        return obj
    box = [obj if is_main() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _device() -> torch.device:
    """Where a collective's tensors must live: NCCL takes CUDA tensors only, gloo CPU ones."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: list[float]) -> list[float]:
    """The mean of each value over ranks (the logged losses of a data-parallel step)."""
    if not _ready():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return (t / world()).tolist()


def sum_gradients(grads: dict[str, torch.Tensor], n_batches: int) -> int:
    """``compute_mask``'s ``reduce``: every process's gradient sums added up, and the batch count."""
    all_reduce_sum(grads)
    if not _ready():
        return n_batches
    t = torch.tensor([n_batches], dtype=torch.int64, device=_device())
    torch.distributed.all_reduce(t)
    if int(t) == 0:
        from .errors import UserError

        raise UserError("no forget data: the saliency needs at least one batch")
    return int(t)


@contextlib.contextmanager
def written_once(target, overwrite: bool = False, mark: str | None = None):
    """An output folder that exactly one process writes: the main one, atomically (``atomic_dir``); the
    others write the same files into a temporary folder that is thrown away. All return together."""
    import tempfile
    from pathlib import Path

    from .atomic import atomic_dir

    if is_main():
        with atomic_dir(target, overwrite=overwrite, mark=mark) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix="salun-rank") as tmp:
            yield Path(tmp)
    barrier()
