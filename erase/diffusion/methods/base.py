"""The erasure-method interface: what a method needs from the job and what one step of it computes.

The job draws the batches (clean samples, noise, timesteps and conditions, the same random streams for
every method), and a method turns them into losses. A method is one module in this package and one line
in ``METHODS`` (``__init__.py``), as in ``erase/classify/methods/``. What the job asks of a method:

- ``uses_mask``: it trains SalUn's saliency mask's weights (computed or given with ``--mask``);
  ``accepts_mask``: a given ``--mask`` may restrict it (a masked ESD), else it trains ``selection``;
  ``unmasked``: the method ``--no-mask`` turns it into (SalUn's: RL), or None;
- ``salun_loss``: it trains SalUn's forgetting loss (SalUn, and RL: SalUn without the mask), so every
  recipe option applies, its model card is SalUn's, and its resume keys are the first ones salun wrote;
- ``selection``: the UNet weights it trains (a preset of ``erase.core.mask.PRESETS``), or None for the
  recipe's ``--selection``;
- ``needs_images``: it learns from forget images (else the job draws none: ESD samples its own x_t);
  ``uses_retain``: it has a retain term weighted by ``alpha`` (else no retain images are drawn);
- ``needs_frozen``: it compares with a frozen copy of the base UNet (``Context.frozen``);
  ``needs_frozen_for(options)``: the same, decided by its settings (SalUn's ``--distill``);
  ``uses_preserve(options)``: each forget batch carries preserve prompts' conditions (``Batch.preserve``), and
  the recipe must have preserve prompts; ``forget_timesteps(options, n_train)``: the window ``[lo, hi)`` the
  forget batch's timesteps come from (refusing one outside the model's schedule); ``mask_views(options)``: the
  number of saliency masks of its own loss the job intersects into its trainable weights (ANT's heavy hitters;
  0 for every other method), ``mask_batches`` batches each, unless a ``--mask`` is given;
- ``closed_form``: no training loop; ``edit(ctx)`` changes the weights directly (UCE);
- ``options``: its own settings, ``{name: Option}``, given as ``--<name>`` on the command line;
- ``bind(ctx)``: the object whose ``losses`` the loop calls, with what it needs from the context;
  ``terms(...)``: the same step's loss as separate ``Term``s (or None), which the loop backpropagates one at a
  time so that only one term's activations are alive at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """Clean samples ``z0`` (latents or pixels), the noise and timesteps drawn for them, their conditions,
    and (forget batches) the conditions of the misaligned prompts or classes."""
    z0: "torch.Tensor"
    noise: "torch.Tensor"
    t: "torch.Tensor"
    cond: dict
    misaligned: dict | None = None
    prompts: list[str] | None = None  # the forget batch's prompts (FMN finds the concept's tokens in them)
    preserve: dict | None = None  # (forget batches) conditions of preserve prompts, one per image (--distill)


@dataclass(frozen=True)
class Term:
    """One part of a step's loss, ``weight * value()``: computed only when the loop asks, so that the one before
    it has been backpropagated (its activations freed) by then."""
    key: str
    weight: float
    value: Callable[[], "torch.Tensor"]


def weighted(term: Term, value: "torch.Tensor") -> "torch.Tensor":
    """``weight * value``, with a weight of 1 left out (the product would be the same number)."""
    return value if term.weight == 1 else term.weight * value


def total_of(terms: list[Term]) -> dict:
    """Every term computed in one graph: ``{"loss": their weighted sum, key: each value}``, the sum taken in the
    terms' order (the loop's term-by-term backward adds the same numbers in the same order)."""
    import torch

    out: dict = {"retain": torch.zeros(())}
    loss = None
    for term in terms:
        out[term.key] = term.value()
        part = weighted(term, out[term.key])
        loss = part if loss is None else loss + part
    out["loss"] = loss
    return out


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (10**400 in a recipe file)
        return False


@dataclass(frozen=True)
class Option:
    """A method's own setting: its default for Stable Diffusion (the paper's), its type and help, and the
    values it may take: finite, within ``low``..``high`` (each end included unless said), a whole number
    when ``type`` is ``int``. ``warn_above``: a value past which the run is much slower (said, not refused)."""
    default: Any
    type: type
    help: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    warn_above: float | None = None

    def check(self, value: Any, name: str) -> Any:
        """``value`` if the option may take it, else a ``UserError`` naming ``name`` and the valid range."""
        from ...core.errors import UserError

        whole = self.type is int
        # NaN compares false with everything: ask for what a good value is, not what a bad one is
        ok = (not isinstance(value, bool) and isinstance(value, (int, float))
              and (isinstance(value, int) or not whole) and _finite(value)
              and (self.low is None or (value >= self.low if self.low_inclusive else value > self.low))
              and (self.high is None or (value <= self.high if self.high_inclusive else value < self.high)))
        if not ok:
            raise UserError(f"{name} must be {self.describe()}, got {value}")
        return value

    def describe(self) -> str:
        """The valid values in words: ``a whole number in [1, 1000]``, ``a finite number above 0``."""
        kind = "a whole number" if self.type is int else "a finite number"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"{kind} in {'[' if self.low_inclusive else '('}{lo:g}, {hi:g}{']' if self.high_inclusive else ')'}"
        if lo is not None:
            return f"{kind} {'of at least' if self.low_inclusive else 'above'} {lo:g}"
        if hi is not None:
            return f"{kind} {'of at most' if self.high_inclusive else 'below'} {hi:g}"
        return kind


@dataclass
class Context:
    """What the job knows once the model and data are ready; a method takes what it needs in ``bind``."""
    family: Any  # erase.diffusion.family.Family
    pipe: Any
    unet: Any  # the UNet being trained (the pipeline's)
    bank: Any  # prompt -> condition dict (erase.diffusion.latents.TextBank)
    scheduler: Any  # the training noise schedule
    recipe: Any  # erase.diffusion.recipes.Recipe
    options: dict  # the method's options, defaults filled in
    frozen: Callable | None = None  # eps(z_t, t, cond) of a frozen copy of the base UNet (needs_frozen)
    extra: dict = field(default_factory=dict)


class Method(Protocol):
    name: str
    title: str  # for people and model cards
    card: str  # what was done, for the model card (SalUn and RL: the card module's own text)
    uses_mask: bool
    accepts_mask: bool
    unmasked: str | None
    salun_loss: bool
    selection: str | None
    needs_images: bool
    uses_retain: bool
    needs_frozen: bool
    closed_form: bool
    options: dict[str, Option]

    def needs_frozen_for(self, options: dict) -> bool: ...

    def mask_views(self, options: dict) -> int: ...

    def uses_preserve(self, options: dict) -> bool: ...

    def forget_timesteps(self, options: dict, n_train: int) -> tuple[int, int]: ...

    def bind(self, ctx: Context) -> "Method": ...

    def losses(self, eps: Callable, scheduler, forget: Batch, retain: Batch | None, alpha: float
               ) -> dict[str, "torch.Tensor"]:
        """``{"loss": the total to minimise, "forget": ..., "retain": ...}`` for one step."""

    def terms(self, eps: Callable, scheduler, forget: Batch, retain: Batch | None, alpha: float
              ) -> list[Term] | None:
        """The same loss as ``Term``s to backpropagate one at a time, or None (``losses`` in one graph)."""

    def edit(self, ctx: Context) -> list[str]:
        """Closed-form methods: change the UNet's weights in place; returns the names of those changed."""

    def close(self) -> None: ...


class TrainedMethod:
    """Defaults for a method trained by the loop on forget (and retain) images; a method overrides what
    differs."""
    card = ""
    uses_mask = False
    accepts_mask = False
    unmasked: str | None = None
    salun_loss = False
    selection: str | None = None
    needs_images = True
    uses_retain = True
    needs_frozen = False
    closed_form = False
    mask_batches = 10
    options: dict[str, Option] = {}

    def needs_frozen_for(self, options: dict) -> bool:
        """Whether the job must give ``bind`` a frozen copy of the base, with these settings."""
        return self.needs_frozen

    def terms(self, eps, scheduler, forget: Batch, retain: Batch | None, alpha: float) -> list[Term] | None:
        """None: the loop computes ``losses`` in one graph (a method whose terms share a forward pass)."""
        return None

    def uses_preserve(self, options: dict) -> bool:
        """Whether each forget batch must carry preserve prompts' conditions, with these settings."""
        return False

    def forget_timesteps(self, options: dict, n_train: int) -> tuple[int, int]:
        """The window ``[lo, hi)`` of timesteps the forget batches are drawn from: the whole schedule."""
        return 0, n_train

    def mask_views(self, options: dict) -> int:
        """How many saliency masks of the method's own loss (at the base weights, ``mask_batches`` batches each,
        each view its own random draws) the job intersects into the weights it trains; 0: none of its own."""
        return 0

    def bind(self, ctx: Context) -> "TrainedMethod":
        return self

    def edit(self, ctx: Context) -> list[str]:
        raise NotImplementedError(f"{self.name} is trained, not edited in closed form")

    def close(self) -> None:
        """Undo what ``bind`` attached to the model (hooks), once training ends."""
