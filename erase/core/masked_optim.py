"""Optimisation in which only masked weights move.

The SalUn reference multiplied gradients by the mask, which still lets weight decay drift the
masked-out weights. Here the gradient outside the mask is zeroed, and then:
- with Adam, AdamW or SGD without weight decay, that is already exact: their moment buffers start at
  zero and stay zero where the gradient is always zero, so the update there is exactly 0 and the
  weight keeps its bits (no copy of the base is needed, no extra pass over the weights);
- with any other optimizer or with weight decay, the masked-out entries are written back from a saved
  copy after every step, so they stay bit-identical whatever the optimizer does.
Tensors with no salient entry are frozen outright (no gradient, no optimizer state).

``MaskedAdam`` goes further and pays only for the mask: its two moments hold the masked entries alone, and
(in one process) each partially masked tensor's gradient is gathered into a vector of its masked entries as
soon as backward has it, so no full gradient outlives its tensor's turn in the backward pass. Its update is
torch's own Adam function applied to those entries, so the weights it trains are bit-identical to
``torch.optim.Adam`` over the masked gradients.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from . import bf16_master, eight_bit
from .mask import Mask


class MaskedParameters:
    """The trainable view of a model under a mask (or every selected weight when ``mask`` is None)."""

    def __init__(self, model: nn.Module, mask: Mask | None, selection: dict[str, nn.Parameter] | None = None):
        named = dict(model.named_parameters())
        for p in named.values():
            p.requires_grad_(False)
        self.params: dict[str, nn.Parameter] = {}
        # Where a partially masked tensor's weights may move: their flat indices (int32, or int64 past 2**31
        # entries), not a float copy of the tensor. Gathering and scattering by a kept index is about 10x faster
        # on CPU than by a bool mask, which finds its entries again on every call.
        self.index: dict[str, torch.Tensor] = {}
        self._gates: dict[str, torch.Tensor] | None = None  # float gates, made only for optimizers that need them
        self.frozen: dict[str, torch.Tensor] = {}  # base values outside the mask, kept only if needed (attach)
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
                    flat = m.reshape(-1).nonzero().squeeze(1)
                    self.index[n] = flat.to(p.device, torch.int32 if m.numel() < 2**31 else torch.int64)
        for p in self.params.values():
            p.requires_grad_(True)

    @property
    def gates(self) -> dict[str, torch.Tensor]:
        """1 where the weight may move, 0 where it must not, in the weight's own dtype: multiplying by it is one
        vectorised pass (masked_fill_ is 10-15x slower on CPU). A weight-sized buffer per partially masked
        tensor, so it is made only when an optimizer other than ``MaskedAdam`` asks (``mask_gradients``)."""
        if self._gates is None:
            self._gates = {n: self.mask_of(n).to(self.params[n].dtype) for n in self.index}
        return self._gates

    def mask_of(self, name: str) -> torch.Tensor:
        """A partially masked tensor's mask (True where it may move), made from its index."""
        p = self.params[name]
        flat = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
        return flat.index_fill_(0, self.index[name].long(), True).view(p.shape)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def n_trainable(self) -> int:
        return sum(self.index[n].numel() if n in self.index else p.numel() for n, p in self.params.items())

    def attach(self, optimizer) -> None:
        """Decide, for this optimizer, whether masked-out weights need writing back after each step (before any
        step: the base values outside the mask are copied now, and only then)."""
        if isinstance(unwrapped(optimizer), MaskedAdam) or keeps_zero_grad_weights(optimizer):
            self.frozen = {}  # exact without it: no copy
        elif not self.frozen:
            self.frozen = {n: p.detach()[~self.mask_of(n)].clone() for n, p in self.params.items() if n in self.index}

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradient outside the mask (so the optimizer's moments there stay zero too)."""
        if not self.index:
            return
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
        """mask gradients -> (clip the masked gradient's norm) -> optimizer step -> restore: one masked update.
        ``MaskedAdam`` reads the masked entries itself: the gradients are masked here only to clip them."""
        masked_adam = isinstance(unwrapped(optimizer), MaskedAdam)
        if clip_grad_norm is not None:
            if masked_adam and unwrapped(optimizer).gathers:
                raise ValueError("clipping needs the full gradients: make MaskedAdam with gather=False")
            self.mask_gradients()
            torch.nn.utils.clip_grad_norm_(self.parameters(), clip_grad_norm)
        elif not masked_adam:
            self.mask_gradients()
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


class MaskedAdam(torch.optim.Optimizer):
    """Adam over a ``MaskedParameters``, with state for the masked entries only.

    Each partially masked tensor's moments are vectors of its masked entries (in the tensor's row-major
    order); a fully salient tensor keeps ordinary moments. With ``gather`` (one process, no clipping), a
    hook takes each such tensor's masked gradient entries the moment backward has accumulated its gradient and
    drops the full gradient; otherwise (a data-parallel launch, whose gradients are complete only after
    backward, or clipping) they are taken at the step. The update is ``torch.optim.adam.adam``, the very
    function ``torch.optim.Adam`` runs, on the gathered entries, which are then written back in place.

    Weights held in a lower precision (``--weights-dtype bf16``) get a float32 master of their masked entries
    (in the state, so checkpoints keep it): gradients are gathered in float32, Adam updates the master and the
    weight takes its rounding, so small steps accumulate instead of rounding away; the entries outside the mask
    are never written. A bf16 weight's master is kept as its lower 16 bits beside the weight (``bf16_master``:
    the same bits, half the memory); a checkpoint holding whole float32 masters is converted on loading.

    ``state_bits=8`` (``--use-8bit-adam``) keeps the moments of each vector of 4,096 entries or more in 8 bits,
    block-wise quantized, and updates it with bitsandbytes' 8-bit Adam (``erase/core/eight_bit.py``): about
    2 bytes an entry for both moments instead of 8."""

    def __init__(self, trainable: MaskedParameters, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, gather: bool = True, state_bits: int = 32):
        if state_bits not in (8, 32):
            raise ValueError(f"state_bits {state_bits}: 32 (torch's Adam) or 8 (bitsandbytes' 8-bit Adam)")
        # the moments' width is a group setting, so that a checkpoint says which it holds
        super().__init__(trainable.parameters(), {"lr": lr, "betas": betas, "eps": eps, "state_bits": state_bits})
        self.state_bits = state_bits
        self.index = {trainable.params[n]: i for n, i in trainable.index.items()}
        flat = trainable.parameters() if state_bits == 8 else self.index  # 8-bit Adam updates every one flat
        if not all(p.is_contiguous() for p in flat):  # the update is written back through a flat view
            raise ValueError("MaskedAdam needs contiguous weights (a channels-last model: convert it back first)")
        # low-precision weights: every trainable one gathers (its gradient summed in float32, not its own dtype)
        self.low = {p for p in trainable.parameters() if p.dtype != torch.float32}
        hooked = list(self.index) + [p for p in trainable.parameters() if p in self.low and p not in self.index]
        self.gathers = gather and bool(hooked)
        self._gathered: dict[torch.Tensor, torch.Tensor] = {}
        self._hooks: list = []
        if self.gathers:
            taken = [p for p in hooked if getattr(p, "_masked_adam", lambda: None)() is not None]
            if taken:
                raise ValueError("another MaskedAdam gathers these weights' gradients: close() it first")
            owner = weakref.ref(self)  # a hook left on the model must not keep this optimizer's state alive

            def hook(p: torch.Tensor) -> None:
                opt = owner()
                if opt is not None:
                    opt._gather(p)
            for p in hooked:
                p._masked_adam = owner
                self._hooks.append(p.register_post_accumulate_grad_hook(hook))

    @torch.no_grad()
    def _gather(self, p: torch.Tensor) -> None:
        g = self._masked_grad(p)
        before = self._gathered.get(p)
        self._gathered[p] = g if before is None else before.add_(g)  # a second backward adds, as .grad would
        p.grad = None

    def _masked_grad(self, p: torch.Tensor) -> torch.Tensor:
        """The gradient's masked entries (all of a fully salient tensor's), in float32 for low-precision weights."""
        i = self.index.get(p)
        g = p.grad if i is None else p.grad.reshape(-1).index_select(0, i)
        return g.float() if p in self.low else g

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._gathered.clear()
        super().zero_grad(set_to_none=set_to_none)

    def close(self) -> None:
        """Remove the gradient hooks: the weights' gradients are theirs again (a later backward keeps them)."""
        for h in getattr(self, "_hooks", []):  # (also from __del__ of one whose __init__ raised)
            h.remove()
        for p in [*getattr(self, "index", {}), *getattr(self, "low", ())]:
            if getattr(p, "_masked_adam", lambda: None)() is self:
                del p._masked_adam
        self._hooks, self._gathered = [], {}

    def __del__(self) -> None:
        self.close()

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 - the Optimizer signature
        from torch.optim.adam import adam

        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                i = self.index.get(p)
                g = self._gathered.pop(p, None)
                if g is not None and p.grad is not None:  # set after backward, beside the gathered one
                    raise ValueError("a gradient was set on a weight whose gradient MaskedAdam gathers: make it "
                                     "with gather=False to read or set full gradients")
                if g is None:
                    if p.grad is None:
                        continue
                    g = self._masked_grad(p)
                state = self.state[p]
                if not state:  # as torch.optim.Adam starts its state (the step count a float32 tensor)
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    if self.state_bits == 8 and g.numel() >= eight_bit.MIN_ENTRIES:
                        eight_bit.init_moments(state, g)
                    else:
                        state["exp_avg"] = torch.zeros_like(g, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(g, memory_format=torch.preserve_format)
                    if p in self.low:  # the masked entries' float32 master, from the weights as they are
                        self._store_master(p, state, self._entries(p, i).float())
                values = self._master(p, state, i) if p in self.low else self._entries(p, i)
                if "state1" in state:
                    state["step"] += 1
                    eight_bit.adam_step(state, values, g, int(state["step"]), group["lr"], (beta1, beta2),
                                        group["eps"])
                else:
                    adam([values], [g], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
                         amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
                         eps=group["eps"], maximize=False)
                if i is not None:  # index_copy_ takes int64 indices: one tensor's at a time
                    p.view(-1).index_copy_(0, i.long(), values.to(p.dtype))
                elif p in self.low:
                    p.copy_(values.view_as(p))
                if p in self.low:
                    self._store_master(p, state, values)
        return None

    @staticmethod
    def _entries(p: torch.Tensor, i: torch.Tensor | None) -> torch.Tensor:
        """A weight's masked entries as a vector (a fully salient weight itself)."""
        return p if i is None else p.view(-1).index_select(0, i)

    @staticmethod
    def _store_master(p: torch.Tensor, state: dict, values: torch.Tensor) -> None:
        """A bf16 weight's master is kept as 16 bits beside the weight, its rounding (``bf16_master``: the same
        float32 bits in half the memory); another low precision's in float32."""
        if p.dtype == torch.bfloat16:
            bf16_master.store(values, state)
        else:
            state["master"] = values

    def _master(self, p: torch.Tensor, state: dict, i: torch.Tensor | None) -> torch.Tensor:
        """The float32 master of a low-precision weight's masked entries, updated in place by the step."""
        if "master_low" not in state:
            return state["master"]
        return bf16_master.load(self._entries(p, i).reshape(-1), state).view(p.shape if i is None else (-1,))

    def master_of(self, p: torch.Tensor) -> torch.Tensor:
        """A low-precision weight's float32 master (its masked entries; a fully salient weight's whole tensor)."""
        return self._master(p, self.state[p], self.index.get(p))

    def load_state_dict(self, state_dict: dict) -> None:
        """Also a checkpoint of the old layout (``torch.optim.Adam``'s full-sized moments over masked gradients,
        zero outside the mask): converted exactly, by taking the masked entries. Low-precision weights' masters
        and moments stay float32 (whole float32 masters of bf16 weights are split), 8-bit moments stay 8-bit. A
        checkpoint of the other moment width is refused."""
        from itertools import chain

        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        saved_bits = {g.get("state_bits", 32) for g in state_dict["param_groups"]}  # (older checkpoints: 32)
        if saved_bits != {self.state_bits}:
            raise ValueError(f"this checkpoint holds {'8' if 8 in saved_bits else '32'}-bit Adam moments: resume "
                             "with the --use-8bit-adam setting it was made with")
        # torch would cast every floating state tensor to its weight's dtype and 8-bit moments to a float weight's
        # dtype (4x their size): the tensors are handed to it without them and put back as they were saved (a bf16
        # weight's float32 master and moments, the uint8 moments and their float32 scales)
        kept = {p: {k: v.to(p.device, copy=p in self.low) for k, v in state_dict["state"].get(i, {}).items()
                    if k != "step" and torch.is_tensor(v)}
                for i, p in zip(saved_ids, params)}
        bare = {i: {k: v for k, v in st.items() if k == "step" or not torch.is_tensor(v)}
                for i, st in state_dict["state"].items()}
        super().load_state_dict({**state_dict, "state": bare})
        for p, st in kept.items():
            self.state[p].update(st)
            if p.dtype == torch.bfloat16 and "master" in self.state[p]:  # a float32 master (earlier checkpoints)
                bf16_master.store(self.state[p].pop("master"), self.state[p])
        for p, i in self.index.items():
            st = self.state.get(p, {})
            for k in ("exp_avg", "exp_avg_sq"):
                if k in st and st[k].shape == p.shape:
                    st[k] = st[k].reshape(-1).index_select(0, i)


def unwrapped(optimizer):
    """The optimizer itself, out of accelerate's wrapper if it has one."""
    return getattr(optimizer, "optimizer", optimizer)


def keeps_zero_grad_weights(optimizer) -> bool:
    """True if a weight whose gradient is always exactly zero never moves under this optimizer.

    Adam/AdamW/SGD (plain or momentum) without weight decay: their state starts at zero and only
    accumulates gradients, so the update of such a weight is exactly 0.
    """
    opt = unwrapped(optimizer)
    if not isinstance(opt, (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)):
        return False
    # In half precision Adam's eps rounds to 0 and 0/0 gives NaN: keep the write-back there.
    if any(p.dtype != torch.float32 for g in opt.param_groups for p in g["params"]):
        return False
    return all(g.get("weight_decay", 0) == 0 for g in opt.param_groups)
