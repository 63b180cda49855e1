"""Issue 29's lean mask pass: the guided forgetting loss's gradient taken in two backward passes (one forward
pass's activations alive at a time) is the one-graph gradient, and the mask the job keeps while it trains is
held bit-packed without changing a bit of it."""
from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from erase.core.mask import Mask, PackedMasks, accumulate_gradients, compute_mask
from erase.diffusion import losses


def _denoiser():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 4, 3, padding=1))
    return net, (lambda zt, t, c: net(zt * c) + c)  # a condition that changes the output nonlinearly


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen),
             torch.randint(0, 1000, (2,), generator=gen)) for _ in range(3)]


def test_the_two_terms_sum_to_the_guided_loss_gradient():
    net, eps = _denoiser()
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    params = dict(net.named_parameters())
    whole, n1 = accumulate_gradients(net, params, lambda b: losses.guided_forgetting_loss(
        eps, sched, b[0], 1.5, 0.5, b[2], b[1], 7.5), _batches(), progress=False)
    terms = []
    split, n2 = accumulate_gradients(net, params, lambda b: (terms.append(1) or t for t in losses.guided_forgetting_terms(
        eps, sched, b[0], 1.5, 0.5, b[2], b[1], 7.5)), _batches(), progress=False)
    assert n1 == n2 == 3 and len(terms) == 6  # two backward passes a batch
    for n in params:
        assert torch.allclose(whole[n], split[n], rtol=1e-5, atol=1e-6), n
        assert whole[n].abs().sum() > 0
    # the terms' first value is the loss itself
    b = _batches()[0]
    first = next(losses.guided_forgetting_terms(eps, sched, b[0], 1.5, 0.5, b[2], b[1], 7.5))
    assert torch.equal(first, losses.guided_forgetting_loss(eps, sched, b[0], 1.5, 0.5, b[2], b[1], 7.5))


def test_a_non_finite_term_stops_the_pass():
    import pytest

    net, _ = _denoiser()
    params = dict(net.named_parameters())

    def terms(_):
        yield net[0].weight.sum() * 0 + 1.0
        yield net[0].weight.sum() * float("nan")
    with pytest.raises(FloatingPointError, match="saliency's loss is nan"):
        accumulate_gradients(net, params, terms, [0], progress=False)


def test_a_packed_mask_reads_saves_and_digests_as_the_bool_one(tmp_path):
    from erase.core.checkpoints import mask_digest

    net, eps = _denoiser()
    mask = compute_mask(net, lambda b: (eps(b[0], None, 1.0) ** 2).mean(), _batches(), keep=0.3, progress=False)
    packed = mask.packed()
    assert isinstance(packed.masks, PackedMasks) and packed.packed() is packed
    assert list(packed.masks) == list(mask.masks)
    assert all(torch.equal(packed.masks[n], m) for n, m in mask.masks.items())
    assert packed.kept == mask.kept and packed.stats() == mask.stats() and 0 < mask.kept < mask.total
    assert mask_digest(packed) == mask_digest(mask)
    a, b = mask.save(tmp_path / "a.safetensors"), packed.save(tmp_path / "b.safetensors")
    back_a, back_b = Mask.load(a), Mask.load(b)  # (safetensors orders its metadata as it likes: not the bytes)
    assert back_a.meta == back_b.meta and list(back_a.masks) == list(back_b.masks)
    assert all(torch.equal(back_b.masks[n], m) and torch.equal(back_a.masks[n], m) for n, m in mask.masks.items())
