"""The mask engine: weight saliency from a forgetting loss, shared by every path (SD, DDPM, classifiers).

SalUn (Fan et al., ICLR 2024) keeps the weights whose forgetting-loss gradient is large:
``m = 1(|sum_batches grad l_f(theta_0)| >= gamma)``, gamma chosen so that a ``keep`` fraction of the
selected weights survive, ranked globally across tensors (or per tensor, as an option).

At SD scale (860M UNet weights) the threshold is found without sorting or concatenating: a two-pass
radix select over the float32 bit patterns (which order like the values for non-negative floats).
Masks are stored bit-packed in safetensors (1 bit a weight) with metadata that ties them to a model.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from .errors import UserError

# Parameter-selection presets for diffusers UNets (SD's UNet2DConditionModel and UNet2DModel).
PRESETS: dict[str, str] = {
    "all": r".*",
    "attn2": r"(^|\.)attn2\.",  # cross-attention: where the text prompt enters
    "attn": r"(^|\.)(attn1|attn2|attentions)\.",  # every attention layer
    "resnets": r"(^|\.)resnets\.",  # the ResNet blocks
    "attn2+resnets": r"(^|\.)(attn2|resnets)\.",  # cross-attention and ResNets (the SalUn design's choice)
    "not-attn2": r"^(?!(.*\.)?attn2\.)",  # everything but cross-attention (ESD-u)
}
from .outputs import MASK_FORMAT  # noqa: E402 - one definition, readable without torch


def select_parameters(model: nn.Module, selection: str = "all",
                      presets: dict[str, str] | None = None) -> dict[str, nn.Parameter]:
    """Parameters chosen by a preset name or ``re:<regex>`` over parameter names. ``presets``: what the names mean
    for this model (a model family's; default ``PRESETS``, diffusers' UNet names)."""
    presets = PRESETS if presets is None else presets
    if selection in presets:
        pattern = presets[selection]
    elif selection.startswith("re:"):
        pattern = selection[3:]
    else:
        raise UserError(f"unknown parameter selection {selection!r}: use one of {', '.join(presets)} "
                        "or re:<regex over parameter names>")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise UserError(f"bad selection regex {pattern!r}: {e}") from e
    chosen = {n: p for n, p in model.named_parameters() if rx.search(n)}
    if not chosen:
        raise UserError(f"selection {selection!r} matches no parameter of {type(model).__name__}")
    return chosen


def sums_in_gradients(clip_grad_norm: float | None, params: dict[str, nn.Parameter]) -> bool:
    """Whether the gradient sum can live in the weights' own ``.grad`` (no clipping, float32 weights)."""
    return clip_grad_norm is None and all(p.dtype == torch.float32 for p in params.values())


def gradient_sum_kind(clip_grad_norm: float | None, params: dict[str, nn.Parameter]) -> str:
    """Where ``accumulate_gradients`` keeps the sum (recorded in the mask's metadata)."""
    if sums_in_gradients(clip_grad_norm, params):
        return "in the weights' gradients"
    if clip_grad_norm is None:
        return "float32 accumulator, each gradient folded in as backward produces it (half-precision weights)"
    return "float32 accumulator beside the gradients (per-batch clipping)"


def _fold_as_produced(params: dict[str, nn.Parameter], acc: dict[str, torch.Tensor]) -> list:
    """Half-precision weights, no clipping: each tensor's gradient is added into its float32 sum as soon as
    backward has finished accumulating it, then dropped, so the weights' gradients never all live at once
    beside the sum (the pass holds the weights, the float32 sum and the activations, not also a
    weight-sized set of half-precision gradients)."""
    def fold(name: str):
        def hook(p: nn.Parameter) -> None:
            acc[name].add_(p.grad)
            p.grad = None
        return hook

    return [p.register_post_accumulate_grad_hook(fold(n)) for n, p in params.items()]


def accumulate_gradients(model: nn.Module, params: dict[str, nn.Parameter], loss_fn: Callable[[object], torch.Tensor],
                         batches: Iterable, clip_grad_norm: float | None = None, progress: bool = True,
                         total: int | None = None, allow_empty: bool = False, what: str = "forget"
                         ) -> tuple[dict[str, torch.Tensor], int]:
    """Sum the gradient of ``loss_fn(batch)`` over all batches at the current weights. ``loss_fn`` may give an
    iterable of losses instead of one: each is backpropagated before the next is computed (a loss split into
    terms whose forward passes need not be alive together).

    Without clipping, and for float32 weights, the sum is accumulated in the weights' own ``.grad``
    (backward adds into it): no second weight-sized buffer, so the pass costs what one plain
    forward + backward costs. Half-precision weights would sum in half precision there: their sum is a
    float32 accumulator, into which each tensor's gradient is folded as backward produces it
    (``_fold_as_produced``). With ``clip_grad_norm`` each batch's gradient (over ``params``) is
    clipped to that norm before it is added, as the DDPM recipe does; that needs the batch's whole gradient
    apart from the running sum, so a float32 accumulator is kept beside the gradients. Returns (gradient
    sums in float32, number of batches); the weights are left with no ``.grad``. A batch whose ``loss_fn`` gives
    None is skipped (another process's, under several); ``allow_empty`` accepts a process with none.
    """
    names = list(params)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    in_place = sums_in_gradients(clip_grad_norm, params)
    acc = {} if in_place else {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    folding = not in_place and clip_grad_norm is None
    hooks = _fold_as_produced(params, acc) if folding else []
    try:
        n_batches = _sum_batches(params, loss_fn, batches, clip_grad_norm, acc, in_place or folding, progress,
                                 total, what)
    finally:
        for h in hooks:
            h.remove()
    if n_batches == 0 and not allow_empty:
        raise UserError(f"no {what} data: the saliency needs at least one batch")
    if in_place:
        for n in names:
            g = params[n].grad
            acc[n] = g if g is not None else torch.zeros_like(params[n], dtype=torch.float32)
            params[n].grad = None
    bad = [n for n in names if not bool(torch.isfinite(acc[n]).all())]
    if bad:  # NaN bit patterns would rank above every finite score: never a silent mask
        raise FloatingPointError(f"the {what} saliency's gradient is NaN or infinite in {len(bad)} tensors (e.g. {bad[0]}); "
                                 "try --mixed-precision no")
    return acc, n_batches


def _sum_batches(params: dict[str, nn.Parameter], loss_fn, batches: Iterable, clip_grad_norm: float | None,
                 acc: dict[str, torch.Tensor], summed_by_backward: bool, progress: bool, total: int | None,
                 what: str) -> int:
    """``accumulate_gradients``' loop: backpropagate each batch's loss (or its terms); where backward itself
    does not leave the sum where it belongs (``summed_by_backward``), clip the batch's gradient if asked and
    add it to ``acc``. Returns the number of batches."""
    names = list(params)
    n_batches = 0
    for batch in tqdm(batches, desc="saliency" if what == "forget" else f"{what} saliency", disable=not progress,
                      total=total, dynamic_ncols=True):
        out = loss_fn(batch)
        if out is None:  # another process's batch (several processes share the batches)
            continue
        for loss in [out] if torch.is_tensor(out) else out:  # terms: each backpropagated before the next exists
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the {what} saliency's loss is {loss.item()} on batch {n_batches}")
            loss.backward()
        n_batches += 1
        if summed_by_backward:
            continue
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([params[n] for n in names], clip_grad_norm)
        for n in names:
            g = params[n].grad
            if g is not None:
                acc[n].add_(g.float())
            params[n].grad = None
    return n_batches


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Non-negative float32 -> int32 bit patterns, which sort exactly like the values."""
    return t.detach().abs().float().contiguous().view(torch.int32).reshape(-1)


def global_threshold(scores: Iterable[torch.Tensor], keep: float) -> tuple[float, int, int]:
    """The smallest score among the top ``keep`` fraction of all scores, found by radix selection.

    Two passes of ``bincount`` over the high and low 16 bits of the float32 patterns: exact, with
    memory of one tensor at a time plus 65,536 counters. Returns (threshold, k, total count).
    """
    if not 0 < keep <= 1:
        raise UserError(f"keep must be in (0, 1], got {keep}")
    scores = list(scores)
    total = sum(s.numel() for s in scores)
    k = max(1, round(keep * total))  # the k-th largest value is the threshold
    hi = torch.zeros(1 << 16, dtype=torch.int64)
    for s in scores:
        hi += torch.bincount((_bits(s) >> 16).cpu(), minlength=1 << 16)
    above = torch.flip(torch.cumsum(torch.flip(hi, [0]), 0), [0])  # above[b] = count with high bits >= b
    b = int((above >= k).nonzero().max())
    k_in = k - (int(above[b + 1]) if b + 1 < (1 << 16) else 0)
    lo = torch.zeros(1 << 16, dtype=torch.int64)
    for s in scores:
        bits = _bits(s)
        sel = bits[(bits >> 16) == b]
        if sel.numel():
            lo += torch.bincount((sel & 0xFFFF).cpu(), minlength=1 << 16)
    above_lo = torch.flip(torch.cumsum(torch.flip(lo, [0]), 0), [0])
    low = int((above_lo >= k_in).nonzero().max())
    value = torch.tensor([(b << 16) | low], dtype=torch.int32).view(torch.float32).item()
    return value, k, total


class PackedMasks(Mapping):
    """A mask's tensors kept bit-packed (1 bit a weight, 8x less than bool tensors), each unpacked when read:
    what a job keeps of its mask while it trains, beside the model."""

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.packed = {n: pack_bits(m) for n, m in masks.items()}
        self.shapes = {n: tuple(m.shape) for n, m in masks.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        return unpack_bits(self.packed[name], self.shapes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.packed)

    def __len__(self) -> int:
        return len(self.packed)


@dataclass
class Mask:
    """A saliency mask: one boolean tensor per selected parameter, plus where it came from."""

    masks: Mapping[str, torch.Tensor]  # a dict of bool tensors, or ``PackedMasks`` (``packed()``)
    meta: dict = field(default_factory=dict)

    def packed(self) -> "Mask":
        """The same mask holding its tensors bit-packed (read back one tensor at a time)."""
        return self if isinstance(self.masks, PackedMasks) else Mask(PackedMasks(self.masks), self.meta)

    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    def stats(self) -> dict:
        per = {n: round(float(m.float().mean()), 4) for n, m in self.masks.items()}
        return {"kept": self.kept, "total": self.total, "kept_fraction": self.kept / max(1, self.total),
                "tensors": len(self.masks), "per_tensor_fraction": per}

    def save(self, path: str | Path) -> Path:
        """Bit-packed safetensors (1 bit a weight), written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(self.masks, PackedMasks):
            tensors, shapes = dict(self.masks.packed), {n: list(s) for n, s in self.masks.shapes.items()}
        else:
            tensors = {n: pack_bits(m) for n, m in self.masks.items()}
            shapes = {n: list(m.shape) for n, m in self.masks.items()}
        meta = {"format": MASK_FORMAT, "shapes": json.dumps(shapes)}
        meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in self.meta.items()})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique per process
        from .atomic import disk_errors, ordinary_file_mode

        try:
            with disk_errors(path):
                save_file(tensors, tmp, metadata=meta)
                ordinary_file_mode(tmp)  # an ordinary file, like the weights beside it
                tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Mask":
        path = Path(path)
        if not path.exists():
            raise UserError(f"mask file {path} does not exist")
        try:
            with safe_open(path, framework="pt") as f:
                meta = dict(f.metadata() or {})
                if meta.get("format") != MASK_FORMAT:
                    raise UserError(f"{path} is not a salun mask (format {meta.get('format')!r})")
                shapes = json.loads(meta.pop("shapes"))
                masks = {n: unpack_bits(f.get_tensor(n), shapes[n]) for n in f.keys()}
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged file can fail in several ways
            raise UserError(f"could not read mask {path}: {e}") from e
        decoded = {}
        for k, v in meta.items():
            try:
                decoded[k] = json.loads(v)
            except ValueError:
                decoded[k] = v
        return cls(masks, decoded)

    def check_model(self, model: nn.Module, strict_fingerprint: bool = True) -> None:
        """Refuse a model whose parameter names or shapes differ from the mask's (or other weights)."""
        params = dict(model.named_parameters())
        missing = [n for n in self.masks if n not in params]
        if missing:
            raise UserError(f"the mask is for another model: {len(missing)} of its parameters are missing "
                            f"here (e.g. {missing[0]!r}); compute a mask for this model with `salun mask`")
        wrong = [n for n, m in self.masks.items() if tuple(params[n].shape) != tuple(m.shape)]
        if wrong:
            n = wrong[0]
            raise UserError(f"the mask is for another model: {n!r} has shape {tuple(self.masks[n].shape)} in the "
                            f"mask but {tuple(params[n].shape)} here")
        want = self.meta.get("fingerprint")
        if strict_fingerprint and want:
            got = fingerprint({n: params[n] for n in self.masks})
            if got != want:
                raise UserError("the mask was computed on other weights of the same architecture (fingerprint "
                                f"{want[:12]} != {got[:12]}): recompute it, or pass --allow-other-base")


def top_fraction_mask(scores: dict[str, torch.Tensor], keep: float = 0.5, scope: str = "global",
                      consume: bool = False) -> dict[str, torch.Tensor]:
    """Keep the weights whose score is in the top ``keep`` fraction, globally or per tensor.

    ``consume``: empty ``scores`` as the masks are made, so that each score tensor is freed as soon as
    its (8x smaller, bool) mask exists and the peak stays at the scores' size.
    """
    if not 0 < keep <= 1:
        raise UserError(f"keep must be in (0, 1], got {keep}")
    if scope not in ("global", "tensor"):
        raise UserError(f"unknown mask scope {scope!r}: use global or tensor")
    thr = global_threshold(scores.values(), keep)[0] if scope == "global" else None
    masks = {}
    for n in list(scores):
        s = scores.pop(n) if consume else scores[n]
        masks[n] = (s.abs() >= (thr if thr is not None else global_threshold([s], keep)[0])).cpu()
        del s
    return masks


def contrast_scores(forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor], contrast: float
                    ) -> dict[str, torch.Tensor]:
    """Saliency that spares what must be kept: ``|g_f| / (1 + contrast * |g_r| / mean|g_r|)``, in place of
    ``forget`` (``retain`` is emptied as it goes, so the peak stays at two gradient sums).

    The retain gradient is scaled by its mean magnitude over every selected weight, so ``contrast`` reads the
    same whatever the losses' scales: at 1, a weight as salient for the retain loss as the average weight has
    its forget saliency halved. Non-negative, so ranking and thresholds work as on the paper's map, which
    ``contrast`` 0 gives exactly."""
    total = sum(t.numel() for t in retain.values())
    mean = sum(float(t.abs().sum(dtype=torch.float64)) for t in retain.values()) / max(1, total)
    for n in list(forget):
        r = retain.pop(n)
        # a retain loss with no gradient at all leaves the forget map as it is, not a division by zero
        forget[n] = forget[n].abs().div_(r.abs().mul_(contrast / mean).add_(1)) if mean > 0 else forget[n].abs()
        del r
    return forget


def compute_mask(model: nn.Module, loss_fn: Callable[[object], torch.Tensor], batches: Iterable,
                 selection: str = "all", keep: float = 0.5, scope: str = "global",
                 clip_grad_norm: float | None = None, meta: dict | None = None, progress: bool = True,
                 total: int | None = None, reduce: Callable[[dict, int], int] | None = None,
                 presets: dict[str, str] | None = None,
                 spare: tuple[Callable[[object], torch.Tensor], Iterable, int] | None = None,
                 contrast: float = 0.0) -> Mask:
    """The whole engine: select parameters, accumulate the forgetting gradient, keep the top fraction.

    ``reduce(grads)``: under several processes, each summed its share of the batches (``loss_fn`` gives
    None for the others'); ``reduce`` sums the sums over processes in place and returns the batch count,
    so every process ranks the same totals. ``presets``: what ``selection``'s names mean (``select_parameters``).
    ``spare = (retain_loss_fn, retain_batches, count)`` with ``contrast`` > 0: the retain loss's gradient sum
    is taken too and weights salient for it are ranked lower (``contrast_scores``)."""
    params = select_parameters(model, selection, presets)
    grads, n_batches = accumulate_gradients(model, params, loss_fn, batches, clip_grad_norm, progress, total,
                                            allow_empty=reduce is not None)
    if reduce is not None:
        n_batches = reduce(grads, n_batches)
    n_retain = None
    if contrast > 0:
        if spare is None:
            raise UserError("--mask-contrast needs retain data: the retain saliency is what it spares")
        retain_fn, retain_batches, retain_total = spare
        kept, n_retain = accumulate_gradients(model, params, retain_fn, retain_batches, clip_grad_norm, progress,
                                              retain_total, allow_empty=reduce is not None, what="retain")
        if reduce is not None:
            n_retain = reduce(kept, n_retain)
        grads = contrast_scores(grads, kept, contrast)
    masks = top_fraction_mask(grads, keep, scope, consume=True)
    info = {"selection": selection, "keep": keep, "scope": scope, "clip_grad_norm": clip_grad_norm,
            "gradient_sum": gradient_sum_kind(clip_grad_norm, params),
            "n_batches": n_batches, "fingerprint": fingerprint(params), **(meta or {})}
    if contrast > 0:
        info.update({"mask_contrast": contrast, "n_retain_batches": n_retain,
                     "score": "|forget grad| / (1 + contrast * |retain grad| / its mean)"})
    for p in model.parameters():
        p.requires_grad_(False)
    return Mask(masks, info)


def intersection(masks: list[Mask], meta: dict | None = None) -> Mask:
    """The weights every mask keeps (ANT's "heavy hitters": salient in every view), with each view's count."""
    first = masks[0]
    both = {n: m.clone() for n, m in first.masks.items()}
    for m in masks[1:]:
        for n in both:
            both[n] &= m.masks[n]
    return Mask(both, {**first.meta, "combined": f"intersection of {len(masks)} masks",
                       "per_view_kept": [m.kept for m in masks], **(meta or {})})


def fingerprint(params: dict[str, torch.Tensor], samples: int = 4096) -> str:
    """A short hash of names, shapes and a strided sample of float32 values: cheap even at 860M weights."""
    h = hashlib.sha256()
    for n in sorted(params):
        t = params[n].detach().reshape(-1)
        step = max(1, t.numel() // samples)
        h.update(n.encode())
        h.update(str(tuple(params[n].shape)).encode())
        h.update(t[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()


def content_digest(*tensors: torch.Tensor) -> str:
    """A hash of every value of some tensors (e.g. encoded forget images): a cache keyed by it changes
    with the data's content, not only with its captions."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 tensor of ceil(n/8) bytes, most significant bit first."""
    flat = mask.reshape(-1).to(torch.uint8).cpu()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    bits = (packed.reshape(-1, 1) & _BIT_WEIGHTS).ne(0).reshape(-1)[:n]
    return bits.reshape(shape)
