"""The ``--device`` check every command runs before loading anything."""
from __future__ import annotations

from .errors import UserError


def check_device(device: str | None, option: str = "--device") -> str | None:
    """``device`` as torch spells it, or a one-line refusal when it is unknown or this machine lacks it.

    ``None`` stays ``None`` (the caller picks). Call it before loading anything, so a wrong device costs
    nothing: ``cuda`` without a GPU, ``cuda:3`` on a two-GPU machine, ``mps`` off Apple silicon, ``gpu``.
    """
    if device is None:
        return None
    if device == "cpu":  # the default: no need to import torch to know it exists
        return device
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{option} {device!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    if d.type == "cpu":
        return str(d)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{option} {device}: this machine has no usable CUDA GPU "
                            "(torch.cuda.is_available() is False); use --device cpu")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise UserError(f"{option} {device}: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}")
        return str(d)
    if d.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{option} {device}: Apple's MPS backend is not available here; use --device cpu")
        return str(d)
    raise UserError(f"{option} {device}: salun runs on cpu, cuda or mps, not {d.type}")
