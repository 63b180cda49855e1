"""Optimisation in which only masked weights move.

The SalUn reference multiplied gradients by the mask, which still lets weight decay drift the
masked-out weights. Here the gradient outside the mask is zeroed, and then:
- with Adam, AdamW or SGD without weight decay, that is already exact: their moment buffers start at
  zero and stay zero where the gradient is always zero, so the update there is exactly 0 and the
  weight keeps its bits (no copy of the base is needed, no extra pass over the weights);
- with any other optimizer or with weight decay, the masked-out entries are written back from a saved
  copy after every step, so they stay bit-identical whatever the optimizer does.
Tensors with no salient entry are frozen outright (no gradient, no optimizer state).
"""
from __future__ import annotations

import torch
from torch import nn

from .mask import Mask


class MaskedParameters:
    """The trainable view of a model under a mask (or every selected weight when ``mask`` is None)."""

    def __init__(self, model: nn.Module, mask: Mask | None, selection: dict[str, nn.Parameter] | None = None):
        named = dict(model.named_parameters())
        for p in named.values():
            p.requires_grad_(False)
        self.params: dict[str, nn.Parameter] = {}
        # 1 where the weight may move, 0 where it must not, in the weight's own dtype: multiplying by it
        # is one vectorised pass (a bool mask or masked_fill_ is 10-15x slower on CPU). Costs one
        # weight-sized buffer per partially masked tensor.
        self.gates: dict[str, torch.Tensor] = {}
        self.frozen: dict[str, torch.Tensor] = {}  # base values outside the mask, kept only if needed
        if mask is None:
            chosen = selection if selection is not None else named
            self.params = dict(chosen)
        else:
            mask.check_model(model, strict_fingerprint=False)
            # The model's own order, not the mask file's (sorted) order: optimizer state is saved by position.
            for n in (n for n in named if n in mask.masks):
                m = mask.masks[n]
                if not bool(m.any()):
                    continue  # nothing salient here: the whole tensor stays frozen
                p = named[n]
                self.params[n] = p
                if not bool(m.all()):
                    m = m.to(p.device)
                    self.gates[n] = m.to(p.dtype)
                    self.frozen[n] = p.detach()[~m].clone()
        for p in self.params.values():
            p.requires_grad_(True)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def n_trainable(self) -> int:
        return sum(int(self.gates[n].sum()) if n in self.gates else p.numel() for n, p in self.params.items())

    def attach(self, optimizer) -> None:
        """Decide, for this optimizer, whether masked-out weights need writing back after each step."""
        if keeps_zero_grad_weights(optimizer):
            self.frozen = {}  # exact without it; free the copy
        elif self.gates and not self.frozen:
            raise ValueError("this optimizer can move weights with zero gradient, and the base copy is gone")

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradient outside the mask (so the optimizer's moments there stay zero too)."""
        for n, gate in self.gates.items():
            g = self.params[n].grad
            if g is not None:
                g.mul_(gate)

    @torch.no_grad()
    def restore(self) -> None:
        """Write the base values back outside the mask (only kept when the optimizer needs it)."""
        for n, values in self.frozen.items():
            self.params[n].data.masked_scatter_(self.gates[n] == 0, values)

    def step(self, optimizer, clip_grad_norm: float | None = None) -> None:
        """mask gradients -> (clip the masked gradient's norm) -> optimizer step -> restore: one masked update."""
        self.mask_gradients()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), clip_grad_norm)
        optimizer.step()
        self.restore()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.params.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.params) - set(state)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}")
        for n, p in self.params.items():
            p.data.copy_(state[n].to(p.device, p.dtype))


def keeps_zero_grad_weights(optimizer) -> bool:
    """True if a weight whose gradient is always exactly zero never moves under this optimizer.

    Adam/AdamW/SGD (plain or momentum) without weight decay: their state starts at zero and only
    accumulates gradients, so the update of such a weight is exactly 0.
    """
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps optimizers
    if not isinstance(opt, (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)):
        return False
    # In half precision Adam's eps rounds to 0 and 0/0 gives NaN: keep the write-back there.
    if any(p.dtype != torch.float32 for g in opt.param_groups for p in g["params"]):
        return False
    return all(g.get("weight_decay", 0) == 0 for g in opt.param_groups)
