"""8-bit Adam state for ``MaskedAdam`` (``--use-8bit-adam``), from bitsandbytes (the optional ``8bit`` extra).

Each moment vector is held as one byte an entry, block-wise dynamically quantized in blocks of 256 with one float32
scale a block (Dettmers et al., ICLR 2022, "8-bit Optimizers via Block-wise Quantization"): about 2.03 bytes an
entry for both moments instead of 8. The update is bitsandbytes' own blockwise 8-bit Adam, the function its
``Adam8bit`` runs, applied to the masked entries only, so weights outside the mask still never move. Vectors of
fewer than 4,096 entries keep float32 moments, as ``Adam8bit`` keeps them (its ``min_8bit_size``).

bitsandbytes, on import, may try to fetch a CPU 4-bit matmul kernel from the Hugging Face hub (through the
``kernels`` package, on CPUs with AVX512-BF16). Salun imports it with that package hidden, but diffusers usually
imports it first (importing a pipeline class pulls in its LoRA support), and ``HF_HUB_OFFLINE=1`` is what stops
the request there (the tests set it); the request fails closed either way, the kernel's publisher not being
trusted.
"""
from __future__ import annotations

import logging
import sys

import torch

from .errors import UserError

BLOCK = 256  # bitsandbytes' blockwise quantization block
MIN_ENTRIES = 4096  # bitsandbytes' min_8bit_size: below it the moments stay float32
FLAG = "--use-8bit-adam"


def bitsandbytes_functional():
    """``bitsandbytes.functional``, imported offline: bitsandbytes tries, on import, to fetch a 4-bit matmul kernel
    from the Hugging Face hub through the ``kernels`` package (salun uses no 4-bit matmul and downloads nothing at
    run time), so ``kernels`` is hidden while it imports and the warning about it is not shown."""
    if sys.modules.get("bitsandbytes.functional") is not None:
        return sys.modules["bitsandbytes.functional"]
    hidden, log = sys.modules.get("kernels"), logging.getLogger("bitsandbytes")
    level = log.level
    sys.modules["kernels"] = None  # None in sys.modules: "import kernels" raises ImportError
    log.setLevel(logging.ERROR)
    try:
        import bitsandbytes.functional as F
    except ImportError as e:
        raise UserError(f'{FLAG} needs bitsandbytes, the optional 8bit extra (pip install -e ".[8bit]"): '
                        f"{str(e).splitlines()[0]}") from e
    finally:
        log.setLevel(level)
        if hidden is None:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = hidden
    return F


def check_device(device: torch.device) -> None:
    """Refuse, in one line and before anything is trained, a device bitsandbytes' 8-bit Adam does not run on:
    one update of a small vector is tried there."""
    values, state = torch.zeros(MIN_ENTRIES, device=device), {}
    try:
        init_moments(state, values)
        adam_step(state, values, torch.ones_like(values), step=1, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{FLAG}: bitsandbytes has no 8-bit Adam for this {device.type} device "
                        f"({str(e).splitlines()[0]}); leave it out") from e


def init_moments(state: dict, values: torch.Tensor) -> None:
    """Put a vector's two 8-bit moments, zero, into its optimizer state (so a checkpoint keeps them bit for bit):
    zero codes with zero block scales, as ``Adam8bit`` starts them."""
    n, dev = values.numel(), values.device
    blocks = -(-n // BLOCK)
    state.update(state1=torch.zeros(n, dtype=torch.uint8, device=dev),
                 state2=torch.zeros(n, dtype=torch.uint8, device=dev),
                 absmax1=torch.zeros(blocks, dtype=torch.float32, device=dev),
                 absmax2=torch.zeros(blocks, dtype=torch.float32, device=dev))


def adam_step(state: dict, values: torch.Tensor, grad: torch.Tensor, step: int, lr: float,
              betas: tuple[float, float], eps: float) -> None:
    """One Adam step of ``values`` (a contiguous float vector, updated in place) with ``grad``, on the 8-bit
    moments ``init_moments`` put in ``state``."""
    F = bitsandbytes_functional()
    signed, unsigned = _maps(values.device)
    F.optimizer_update_8bit_blockwise("adam", grad.reshape(-1), values.view(-1), state["state1"], state["state2"],
                                      betas[0], betas[1], 0.0, 0.0, eps, step, lr, signed, unsigned,
                                      state["absmax1"], state["absmax2"], weight_decay=0.0, gnorm_scale=1.0)


_MAPS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _maps(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantization maps ``Adam8bit`` uses: signed dynamic for the first moment, unsigned for the second."""
    if device not in _MAPS:
        F = bitsandbytes_functional()
        _MAPS[device] = (F.create_dynamic_map(signed=True).to(device), F.create_dynamic_map(signed=False).to(device))
    return _MAPS[device]
