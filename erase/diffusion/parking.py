"""Components a training never calls, out of its way while it runs.

Once the images are encoded and the prompts' conditions are in the ``TextBank``, SalUn's training calls only the
denoiser: the text encoders and the VAE (SD 1.4: 0.8 GB in float32; SDXL: 3.4 GB) wait for the export. On an
accelerator they wait in the CPU's memory (as diffusers' model offloading does); on the CPU they wait on disk, in
the job's work folder, and are read back, bit for bit, before the export. Parking is an optimisation: if the
disk refuses, the components stay where they are and the job goes on. Restoring brings back every component it
can even when one fails, so a pipeline handed over in memory is never left on the meta device quietly.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
from torch import nn


class Parked:
    """``park(pipe, names, folder)``'s record: ``restore()`` brings every parked component back as it was."""

    def __init__(self, modules: dict[str, nn.Module], device: torch.device, folder: Path):
        self.modules, self.device, self.folder = modules, device, folder
        self.files: dict[str, Path] = {}
        self.buffers: dict[str, dict[str, torch.Tensor]] = {}
        self.ties: dict[str, dict[str, str]] = {}

    def park(self) -> None:
        from safetensors.torch import save_model

        if self.device.type != "cpu":
            for m in self.modules.values():
                m.to("cpu")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(self.folder)
        for name, m in self.modules.items():
            path = self.folder / f"parked-{name}-{socket.gethostname()}-{os.getpid()}.safetensors"
            try:
                save_model(m, str(path))
            except Exception as e:  # noqa: BLE001 - a full disk (OSError, safetensors' own error): it stays in memory
                path.unlink(missing_ok=True)
                print(f"kept {name} in memory during training (could not park it in {self.folder}: {e})",
                      file=sys.stderr)
                continue
            # every buffer kept here (small): a non-persistent one (CLIP's position ids) is not in the file
            self.buffers[name] = {k: b.clone() for k, b in m.named_buffers()}
            self.ties[name] = _ties(m)  # T5's input embedding is one parameter under two names: tied again below
            self.files[name] = path
            m.to("meta")

    def restore(self) -> None:
        from safetensors.torch import load_model

        if self.device.type != "cpu":
            for m in self.modules.values():
                m.to(self.device)
            return
        failed = []
        for name, path in list(self.files.items()):  # every one it can, whatever happens to another
            try:
                m = self.modules[name]
                m.to_empty(device="cpu")
                for tied, first in self.ties.pop(name, {}).items():
                    owner, _, attr = tied.rpartition(".")
                    setattr(m.get_submodule(owner), attr, m.get_parameter(first))
                load_model(m, str(path), strict=True)
                for k, b in self.buffers.pop(name).items():
                    m.get_buffer(k).copy_(b)
                path.unlink(missing_ok=True)
                del self.files[name]
            except Exception as e:  # noqa: BLE001 - said below, with every component that failed
                failed.append(f"{name} ({path}: {type(e).__name__}: {e})")
        if failed:
            raise RuntimeError("could not bring back the parked " + "; ".join(failed) + ": the pipeline in memory "
                               "lacks them (load it again from its folder)")


def _ties(m: nn.Module) -> dict[str, str]:
    """``{name: the first name of the same parameter}`` for each parameter that has more than one name (moving a
    module to the meta device and back gives each name a parameter of its own)."""
    first: dict[int, str] = {}
    ties = {}
    for name, p in m.named_parameters(remove_duplicate=False):
        if id(p) in first:
            ties[name] = first[id(p)]
        else:
            first[id(p)] = name
    return ties


def _remove_stale(folder: Path) -> None:
    """Parked files of a process of this machine that is gone (killed before it could restore them): nothing
    will read them. Another machine's (a shared work folder) are left alone."""
    host = socket.gethostname()
    for f in folder.glob(f"parked-*-{host}-*.safetensors"):
        pid = f.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            f.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def parking(pipe, keep: str, folder: Path, device: torch.device) -> Parked:
    """The record for parking every module component of ``pipe`` but ``keep`` (the denoiser): hold it, then call
    its ``park()``, so that whatever happens in between, ``restore()`` brings back what was parked."""
    modules = {n: c for n, c in pipe.components.items() if isinstance(c, nn.Module) and n != keep}
    return Parked(modules, device, folder)
