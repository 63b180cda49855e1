import pytest
import torch

from erase.core.mask import compute_mask
from erase.core.masked_optim import MaskedParameters, keeps_zero_grad_weights
from erase.toy.models import make_unet


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),  # needs the write-back
    lambda ps: torch.optim.Adam(ps, lr=1e-2),  # exact through zero moments alone
    lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
    lambda ps: torch.optim.RMSprop(ps, lr=1e-3, weight_decay=0.01),  # unknown optimizer: write-back
])
def test_only_masked_weights_move(make_opt):
    torch.manual_seed(0)
    unet = make_unet()
    base = {n: p.detach().clone() for n, p in unet.named_parameters()}
    z, t, ctx = torch.randn(4, 4, 8, 8), torch.randint(0, 1000, (4,)), torch.randn(4, 77, 64)
    mask = compute_mask(unet, lambda b: unet(z, t, ctx).sample.pow(2).mean(), [0], selection="all", keep=0.3,
                        progress=False)
    tp = MaskedParameters(unet, mask)
    # Weight decay would move masked-out weights if only gradients were masked.
    opt = make_opt(tp.parameters())
    tp.attach(opt)
    assert bool(tp.frozen) != keeps_zero_grad_weights(opt)  # the write-back is kept exactly where needed
    for _ in range(5):
        loss = unet(torch.randn(4, 4, 8, 8), t, ctx).sample.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        tp.step(opt)
    moved = 0
    for n, p in unet.named_parameters():
        m = mask.masks[n]
        assert torch.equal(p.detach()[~m], base[n][~m]), n  # bit-identical outside the mask
        moved += int((p.detach()[m] != base[n][m]).sum())
    assert moved > 0.9 * mask.kept  # and the salient weights did train


def _train(make_opt, steps=4, backwards=1, resume_at=None, bits=32):
    """Five masked Adam steps on the toy UNet under a keep-0.3 mask; the weights after, and the optimizer."""
    from erase.core.masked_optim import MaskedAdam

    torch.manual_seed(0)
    unet = make_unet()
    z, t, ctx = torch.randn(4, 4, 8, 8), torch.randint(0, 1000, (4,)), torch.randn(4, 77, 64)
    mask = compute_mask(unet, lambda b: unet(z, t, ctx).sample.pow(2).mean(), [0], selection="all", keep=0.3,
                        progress=False)
    tp = MaskedParameters(unet, mask)
    opt = make_opt(tp)
    tp.attach(opt)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        if step == resume_at:  # a checkpoint of this optimizer's state loaded into a fresh MaskedAdam
            saved = opt.state_dict()
            if isinstance(opt, MaskedAdam):
                opt.close()  # the interrupted run's hooks go with it
            opt = MaskedAdam(tp, lr=1e-2, state_bits=bits)
            opt.load_state_dict(saved)
        opt.zero_grad(set_to_none=True)
        for _ in range(backwards):
            unet(torch.randn(4, 4, 8, 8, generator=gen), t, ctx).sample.pow(2).mean().backward()
        tp.step(opt)
    return {n: p.detach().clone() for n, p in unet.named_parameters()}, opt, tp


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("backwards", [1, 2])
def test_masked_adam_trains_bit_identically_to_adam_with_state_for_the_mask_alone(gather, backwards):
    from erase.core.masked_optim import MaskedAdam

    plain, adam, _ = _train(lambda tp: torch.optim.Adam(tp.parameters(), lr=1e-2), backwards=backwards)
    lean, opt, tp = _train(lambda tp: MaskedAdam(tp, lr=1e-2, gather=gather), backwards=backwards)
    assert all(torch.equal(plain[n], lean[n]) for n in plain)
    full = sum(s["exp_avg"].numel() for s in adam.state.values())
    kept = sum(s["exp_avg"].numel() for s in opt.state.values())
    assert kept == tp.n_trainable() < 0.5 * full  # the moments cover the masked entries only
    assert not tp._gates and not tp.frozen  # no float gate, no base copy
    if gather:
        assert all(p.grad is None for p in opt.index)  # no full gradient kept for a partly masked tensor
    opt.close()


def test_masked_adam_resumes_from_its_own_state_and_converts_the_old_layout():
    from erase.core.masked_optim import MaskedAdam

    straight, _, _ = _train(lambda tp: MaskedAdam(tp, lr=1e-2))
    resumed, _, _ = _train(lambda tp: MaskedAdam(tp, lr=1e-2), resume_at=2)
    assert all(torch.equal(straight[n], resumed[n]) for n in straight)
    # a checkpoint written by torch.optim.Adam over masked gradients (full-sized moments, zero outside the mask)
    old, _, _ = _train(lambda tp: torch.optim.Adam(tp.parameters(), lr=1e-2), resume_at=2)
    assert all(torch.equal(straight[n], old[n]) for n in straight)


def test_clipping_with_gathered_gradients_is_refused():
    from erase.core.masked_optim import MaskedAdam

    unet = make_unet()
    mask = compute_mask(unet, lambda b: unet(torch.randn(1, 4, 8, 8), torch.tensor([5]), torch.randn(1, 77, 64))
                        .sample.pow(2).mean(), [0], selection="all", keep=0.3, progress=False)
    tp = MaskedParameters(unet, mask)
    opt = MaskedAdam(tp, lr=1e-2)
    with pytest.raises(ValueError, match="gather=False"):
        tp.step(opt, clip_grad_norm=1.0)


def test_a_closed_or_dropped_masked_adam_leaves_the_gradients_alone():
    import gc

    from erase.core.masked_optim import MaskedAdam

    unet = make_unet()
    z, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([5]), torch.randn(1, 77, 64)
    mask = compute_mask(unet, lambda b: unet(z, t, ctx).sample.pow(2).mean(), [0], selection="all", keep=0.3,
                        progress=False)
    tp = MaskedParameters(unet, mask)
    opt = MaskedAdam(tp, lr=1e-2)
    with pytest.raises(ValueError, match="close"):  # two gatherers of one gradient: one would get None
        MaskedAdam(tp, lr=1e-2)
    partly = next(iter(opt.index))
    for drop in (opt.close, None):
        if drop is None:  # dropped without close(): its hooks do nothing and hold nothing
            opt = MaskedAdam(tp, lr=1e-2)
            del opt
            gc.collect()
        else:
            drop()
        unet(z, t, ctx).sample.pow(2).mean().backward()
        assert partly.grad is not None  # a later backward keeps its full gradient
        unet.zero_grad(set_to_none=True)
    MaskedAdam(tp, lr=1e-2).close()  # and a new one may gather again


def test_8bit_masked_adam_is_bitsandbytes_adam8bit_on_the_masked_entries():
    """``state_bits=8`` runs bitsandbytes' own 8-bit Adam: on a fully salient tensor it gives Adam8bit's weights bit
    for bit; under a mask the weights outside it keep their bits, the moments are one byte an entry, the result
    stays close to 32-bit Adam, and a checkpoint resumes exactly (and is refused by a 32-bit optimizer)."""
    from erase.core.eight_bit import bitsandbytes_functional
    from erase.core.masked_optim import MaskedAdam

    bitsandbytes_functional()  # (imported offline, as salun imports it)
    from bitsandbytes.optim import Adam8bit

    torch.manual_seed(0)
    # 6,000 weights, 8-bit (no bias: Adam8bit's float32 moments for small tensors are its own kernel, ours torch's)
    lin, ref = torch.nn.Linear(100, 60, bias=False), torch.nn.Linear(100, 60, bias=False)
    ref.load_state_dict(lin.state_dict())
    tp = MaskedParameters(lin, None)
    ours, theirs = MaskedAdam(tp, lr=1e-2, state_bits=8), Adam8bit(ref.parameters(), lr=1e-2)
    for _ in range(3):
        x = torch.randn(8, 100)
        for model, opt in ((lin, ours), (ref, theirs)):
            opt.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
        tp.step(ours)
        theirs.step()
    assert torch.equal(lin.weight, ref.weight)
    assert torch.equal(ours.state[lin.weight]["state2"], theirs.state[ref.weight]["state2"].flatten())
    ours.close()

    base = {n: p.clone() for n, p in _train(lambda tp: MaskedAdam(tp, lr=1e-2), steps=0)[0].items()}
    full, _, _ = _train(lambda tp: MaskedAdam(tp, lr=1e-2))
    small, opt, tp = _train(lambda tp: MaskedAdam(tp, lr=1e-2, state_bits=8), bits=8)
    moments = [v for st in opt.state.values() for k, v in st.items() if k in ("state1", "state2")]
    assert moments and all(v.dtype == torch.uint8 for v in moments)
    assert sum(v.numel() for v in moments) > 0.9 * 2 * tp.n_trainable()  # nearly every entry's moments are 8-bit
    for n, m in tp.index.items():
        outside = ~tp.mask_of(n)
        assert torch.equal(small[n][outside], base[n][outside]), n
    d_full = torch.cat([(full[n] - base[n]).flatten() for n in base])
    d_small = torch.cat([(small[n] - base[n]).flatten() for n in base])
    assert torch.nn.functional.cosine_similarity(d_full, d_small, dim=0) > 0.99  # the same update, rounded moments
    assert not torch.equal(d_full, d_small)
    resumed, _, _ = _train(lambda tp: MaskedAdam(tp, lr=1e-2, state_bits=8), resume_at=2, bits=8)
    assert all(torch.equal(small[n], resumed[n]) for n in small)
    with pytest.raises(ValueError, match="8-bit Adam moments"):
        _train(lambda tp: MaskedAdam(tp, lr=1e-2, state_bits=8), resume_at=2, bits=32)
    with pytest.raises(ValueError, match="32-bit Adam moments"):
        _train(lambda tp: MaskedAdam(tp, lr=1e-2), resume_at=2, bits=8)
